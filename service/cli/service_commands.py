"""`rlprune serve`, `rlprune submit`, and list/status/export against a service."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rlprune.models.errors import UserError
from rlprune.service.cli.flags import SEARCH_SETTINGS, settings_from
from rlprune.service.http.settings import ServeConfig


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from rlprune.service.http.server import check_executor, create_app, make_token
    from rlprune.service.jobs.files import require_writable_folder

    config = settings_from(args, ServeConfig)
    config.validate()
    check_executor(config.executor, config.ray_address)
    runs = Path(config.runs)
    token_path = Path(config.token_file) if config.token_file else runs / "service-token"
    require_writable_folder(runs, "--runs")
    require_writable_folder(token_path.parent, "--token-file")
    token = make_token(token_path)
    app = create_app(config, token)
    base = f"http://{config.host}:{config.port}"
    # the page's address with its token on a terminal only: a log file never holds the token
    page = f"{base}/?token={token if sys.stderr.isatty() else 'TOKEN'}"
    print(f"rlprune service on {base}/ (runs in {runs}, at most {config.max_running} jobs at "
          f"once); token in {token_path}\n  open the page: {page}"
          + ("" if sys.stderr.isatty() else f" (TOKEN: the text of {token_path})")
          + f"\n  API docs: {base}/docs", file=sys.stderr, flush=True)
    # h11 reads up to 1 MB of headers so that the app can answer an oversized request with
    # one message (431) instead of a reset connection; the token travels in headers and
    # nothing logs it
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning",
                access_log=False, http="h11", h11_max_incomplete_event_size=1024 * 1024)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from rlprune.agent.config import SearchConfig
    from rlprune.service.http.client import call, token_from

    token = token_from(args.token_file)
    defaults = SearchConfig()
    config = {name: getattr(args, name) for name in SEARCH_SETTINGS
              if getattr(args, name) != getattr(defaults, name)}
    for key, value in config.items():
        if isinstance(value, tuple):
            config[key] = list(value)
    weights = config.get("weights")
    if weights is not None and not str(weights).startswith("sha256:"):
        config["weights"] = _upload(args.server, token, Path(weights))
    if args.kind == "baseline":
        if args.method is None:
            raise UserError("a baseline job needs --method")
        config["method"] = args.method
    headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else None
    job = call(args.server, token, "POST", "/v1/jobs", {"kind": args.kind, "config": config},
               headers=headers)
    print(f"submitted {job['id']} ({job['state']}); watch it with: rlprune status {job['id']} "
          f"--server {args.server}")
    return 0


def _upload(server: str, token: str, path: Path) -> str:
    """Upload local dense weights; the `sha256:...` name a job uses for them."""
    import urllib.error
    import urllib.request

    if not path.is_file():
        raise UserError(f"weights file {path} does not exist")
    request = urllib.request.Request(
        server.rstrip("/") + "/v1/checkpoints", data=path.read_bytes(), method="POST",
        headers={"Authorization": f"Bearer {token}",
                 "Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.loads(response.read())["weights"]
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("detail", exc.reason)
        raise UserError(f"the service refused the weights ({exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"cannot reach the service at {server} ({exc})") from None


def remote_list(args: argparse.Namespace) -> int:
    from rlprune.service.http.client import call, token_from

    jobs = call(args.server, token_from(args.token_file), "GET", "/v1/jobs")
    if not jobs:
        print("no jobs")
        return 0
    print(f"{'job':<28}{'kind':<10}{'state':<13}{'episodes':>10}{'best reward':>13}")
    for job in jobs:
        p = job.get("progress") or {}
        episodes = (f"{p.get('episodes_done') or 0}/{p['episodes']}" if p.get("episodes")
                    else p.get("method") or "")
        best = p.get("best_reward")
        print(f"{job['id']:<28}{job['kind']:<10}{job['state']:<13}{episodes:>10}"
              f"{'' if best is None else f'{best:.4f}':>13}")
    return 0


def remote_status(args: argparse.Namespace) -> int:
    from rlprune.service.http.client import call, token_from

    print(json.dumps(call(args.server, token_from(args.token_file), "GET",
                          f"/v1/jobs/{args.run}"), indent=2))
    return 0


def remote_export(args: argparse.Namespace) -> int:
    from rlprune.service.http.client import call, token_from
    from rlprune.service.jobs.files import refuse_existing, write_text_atomic

    if args.out is not None:
        refuse_existing(Path(args.out), args.force)
    text = call(args.server, token_from(args.token_file), "GET",
                f"/v1/jobs/{args.run}/policy?format={args.format}", raw=True)
    if args.out is None:
        print(text, end="")
        return 0
    write_text_atomic(Path(args.out), text)
    print(f"wrote {args.out}")
    return 0


HANDLERS = {"serve": cmd_serve, "submit": cmd_submit}
