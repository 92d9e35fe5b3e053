"""The service's API routes, as module-level handlers on one router. What a handler needs (the
registry, the executor, the runs folder, the settings) it reads from `request.app.state`, which
`create_app` fills; every route but /healthz and the page's own needs the bearer token."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlprune.service.http.guard import check_idempotency_key, read_json_body
from rlprune.service.http.job_registry import JobRecord, Registry
from rlprune.service.http.jobcheck import check_request
from rlprune.service.http.scheduler import TERMINAL
from rlprune.service.http.uploads import receive_weights

EVENTS = "events.jsonl"


class JobRequest(BaseModel):
    """A job to run: its kind and its settings (SearchConfig's field names; a baseline adds
    `method`, a bench `targets`, `methods`, `seeds`, `first_seed`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["search", "baseline", "bench"] = "search"
    config: dict[str, Any] = Field(default_factory=dict)


class JobView(BaseModel):
    id: str
    kind: str
    state: str
    run_dir: str
    config: dict[str, Any]
    error: str | None = None
    created: float
    started: float | None = None
    ended: float | None = None
    progress: dict[str, Any] = Field(default_factory=dict)


def authorized(request: Request) -> None:
    request.app.state.auth.require_bearer(request)


def page_session(request: Request) -> None:
    request.app.state.auth.require_page(request)


router = APIRouter(dependencies=[Depends(authorized)])


def _registry(request: Request) -> Registry:
    return request.app.state.registry


def _get(request: Request, job_id: str) -> JobRecord:
    record = _registry(request).get(job_id)
    if record is None:
        raise HTTPException(404, f"no job {job_id}")
    return record


@router.get("/version")
def version(request: Request) -> dict:
    """Versions, and how the next job's worker starts (warm: forked in milliseconds; warming:
    the warm server is still importing; fresh: a new interpreter)."""
    import torch

    return {"rlprune": package_version(), "torch": torch.__version__, "api": "v1",
            "worker_starts": request.app.state.engine.worker_starts()}


@router.post("/v1/jobs", status_code=202,
             openapi_extra={"requestBody": {"content": {"application/json": {
                 "schema": JobRequest.model_json_schema()}}, "required": True}})
async def submit(request: Request, idempotency_key: str | None = Header(default=None)) -> dict:
    check_idempotency_key(idempotency_key)
    job = _job_request(await read_json_body(request))
    state = request.app.state
    # checking runs user code in a child process: not on the event loop
    checked = await asyncio.to_thread(check_request, job.kind, job.config, state.config)
    record, _ = state.registry.submit(job.kind, checked, state.runs, idempotency_key)
    return {"id": record.id, "state": record.state}


@router.get("/v1/jobs")
def jobs(request: Request) -> list[JobView]:
    return [_view(record) for record in _registry(request).all()]


@router.get("/v1/jobs/{job_id}")
def job(request: Request, job_id: str) -> JobView:
    return _view(_get(request, job_id))


@router.post("/v1/jobs/{job_id}/cancel", status_code=202)
def cancel(request: Request, job_id: str) -> dict:
    record = _get(request, job_id)
    if record.state in TERMINAL or record.state == "interrupted":
        raise HTTPException(409, f"job {job_id} is {record.state}; only a queued or "
                                 "running job can be cancelled")
    return {"id": job_id, "state": request.app.state.engine.cancel(record)}


@router.post("/v1/jobs/{job_id}/resume", status_code=202)
def resume(request: Request, job_id: str) -> dict:
    record = _get(request, job_id)
    if not request.app.state.engine.resume(record):
        raise HTTPException(409, f"job {job_id} is {record.state}; only an interrupted "
                                 "or cancelled job can be resumed")
    return {"id": job_id, "state": "queued"}


@router.get("/v1/jobs/{job_id}/events")
async def events(request: Request, job_id: str) -> StreamingResponse:
    _get(request, job_id)
    return StreamingResponse(_stream(_registry(request), job_id, request),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


@router.get("/v1/jobs/{job_id}/policy")
def policy(request: Request, job_id: str, format: Literal["json", "yaml"] = "json"):  # noqa: A002
    path = Path(_get(request, job_id).run_dir) / "policy.json"
    if not path.is_file():
        raise HTTPException(404, f"job {job_id} has no policy yet")
    from rlprune.service.jobs.files import load_policy, policy_text

    text = policy_text(load_policy(path), format)
    media = "application/json" if format == "json" else "application/yaml"
    return HTMLResponse(text, media_type=media)


@router.get("/v1/jobs/{job_id}/artifacts/{name:path}")
def artifact(request: Request, job_id: str, name: str) -> FileResponse:
    run = Path(_get(request, job_id).run_dir).resolve()
    path = _inside(run, name)
    return FileResponse(path, filename=path.name)


@router.post("/v1/checkpoints", status_code=201)
async def upload(request: Request) -> dict:
    state = request.app.state
    return await receive_weights(request, state.runs, state.config.upload_limit)


def _job_request(data: object) -> JobRequest:
    if not isinstance(data, dict):
        raise HTTPException(422, f"a job is a JSON object with kind and config, got "
                                 f"{type(data).__name__}")
    unknown = sorted(set(data) - set(JobRequest.model_fields))
    if unknown:
        raise HTTPException(422, f"unknown field {', '.join(map(repr, unknown))}; a job has "
                                 "kind and config")
    try:
        return JobRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise HTTPException(422, f"{where}: {first['msg']}") from None


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("rlprune")
    except PackageNotFoundError:
        return "0+unknown"


def _view(record: JobRecord) -> JobView:
    status_path = Path(record.run_dir) / "status.json"
    progress: dict = {}
    if status_path.is_file():
        try:
            status = json.loads(status_path.read_text())
            progress = {k: status.get(k) for k in ("episodes_done", "episodes", "best_reward",
                                                  "best_episode", "achieved_sparsity",
                                                  "method")}
        except (OSError, ValueError):
            progress = {"damaged": "status.json cannot be read"}
    return JobView(**record.to_json(), progress=progress)


def _inside(run: Path, name: str) -> Path:
    """`name` as a file of the run folder; refuses what would leave it."""
    if not name or name.startswith("/") or "\\" in name or not name.isprintable() or any(
            part in ("..", "") for part in name.split("/")):
        raise HTTPException(400, f"artifact name {name!r} is not a file of the run folder")
    path = (run / name).resolve()
    if not path.is_relative_to(run):
        raise HTTPException(400, f"artifact {name!r} leaves the run folder")
    if not path.is_file():
        raise HTTPException(404, f"no artifact {name!r}")
    return path


async def _stream(registry: Registry, job_id: str, request: Request):
    """Server-sent events: every line of the run's event log, then the registry's state
    changes, until the job is over (or the client goes)."""
    offset, last_state, count = 0, None, 0
    while True:
        record = registry.get(job_id)
        assert record is not None  # events() found it, and the registry never forgets a job
        path = Path(record.run_dir) / EVENTS
        if path.is_file():
            with open(path) as fh:
                fh.seek(offset)
                chunk = fh.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            offset += len(complete.encode())
            for line in complete.splitlines():
                count += 1
                yield f"id: {count}\nevent: run\ndata: {line}\n\n"
        if record.state != last_state:
            last_state = record.state
            count += 1
            data = json.dumps({"kind": "job", "state": record.state, "id": job_id})
            yield f"id: {count}\nevent: job\ndata: {data}\n\n"
        if record.state in (*TERMINAL, "interrupted") or await request.is_disconnected():
            return
        await asyncio.sleep(0.2)
