"""Dense weights uploaded to the service (`POST /v1/checkpoints`): streamed to disk under a
size limit, checked to load with `weights_only=True`, stored by their sha256."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from fastapi import HTTPException, Request

from rlprune.models.errors import UserError


async def receive_weights(request: Request, runs: Path, limit: int) -> dict:
    """Dense weights, stored by sha256 under RUNS/uploads/ (refused, and nothing kept, if
    over `limit` bytes or not a state_dict torch can load with weights_only=True)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"upload over the limit of {limit:,} bytes")
    folder = runs / "uploads"
    folder.mkdir(exist_ok=True)
    tmp = folder / f".upload-{secrets.token_hex(8)}"
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"upload over the limit of {limit:,} bytes")
                digest.update(chunk)
                fh.write(chunk)
        from rlprune.models.train import read_weights

        try:
            read_weights(tmp)
        except UserError:
            raise HTTPException(422, "the upload is not a weights file torch loads with "
                                     "weights_only=True (a state_dict)") from None
        sha = digest.hexdigest()
        os.replace(tmp, folder / f"{sha}.pt")
    finally:
        tmp.unlink(missing_ok=True)
    return {"sha256": sha, "weights": f"sha256:{sha}", "bytes": size}
