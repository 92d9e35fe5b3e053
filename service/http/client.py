"""The command line as a client of a running service (`--server URL`): submit, list, status,
export. The token comes from `--token-file` or RLPRUNE_TOKEN."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from rlprune.models.errors import UserError


def token_from(token_file: str | None) -> str:
    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise UserError(f"token file {path} does not exist")
        return path.read_text().strip()
    token = os.environ.get("RLPRUNE_TOKEN", "").strip()
    if not token:
        raise UserError("the service needs its token: --token-file PATH or RLPRUNE_TOKEN")
    return token


def call(server: str, token: str, method: str, path: str, body: dict | None = None,
         headers: dict | None = None, raw: bool = False):
    """One request; a 4xx/5xx becomes a UserError with the service's message."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.rstrip("/") + path, data=data, method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                 **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = response.read()
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        raise UserError(f"the service says ({exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot reach the service at {server} ({reason})") from None
    return payload.decode() if raw else json.loads(payload)
