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
from rlprune.service.http.job_registry import IdempotencyConflict, JobRecord, Registry
from rlprune.service.http.job_view import INLINE, JobView, content_type, job_view
from rlprune.service.http.jobcheck import check_request
from rlprune.service.http.scheduler import TERMINAL
from rlprune.service.http.uploads import receive_weights
from rlprune.service.jobs.events import EVENTS


class JobRequest(BaseModel):
    """A job to run: its kind and its settings (SearchConfig's field names; a baseline adds
    `method`, a bench `targets`, `methods`, `seeds`, `first_seed`)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["search", "baseline", "bench"] = "search"
    config: dict[str, Any] = Field(default_factory=dict)


def authorized(request: Request) -> None:
    request.app.state.auth.require_bearer(request)


def page_session(request: Request) -> None:
    request.app.state.auth.require_page(request)


router = APIRouter(dependencies=[Depends(authorized)])
# what a run wrote, read with the bearer header or the page's session cookie (the page links
# its files and shows its plots as plain links and images)
files_router = APIRouter(dependencies=[Depends(page_session)])


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
    try:
        record, _ = state.registry.submit(job.kind, checked, state.runs, idempotency_key)
    except IdempotencyConflict as exc:
        raise HTTPException(409, str(exc)) from None
    return {"id": record.id, "state": record.state}


@router.get("/v1/jobs")
def jobs(request: Request) -> list[JobView]:
    return [job_view(record) for record in _registry(request).all()]


@router.get("/v1/jobs/{job_id}")
def job(request: Request, job_id: str) -> JobView:
    return job_view(_get(request, job_id))


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
    record = _get(request, job_id)
    offset = _last_event_id(request, Path(record.run_dir) / EVENTS)
    return StreamingResponse(_stream(_registry(request), job_id, request, offset),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


@files_router.get("/v1/jobs/{job_id}/policy")
def policy(request: Request, job_id: str, format: Literal["json", "yaml"] = "json"):  # noqa: A002
    path = Path(_get(request, job_id).run_dir) / "policy.json"
    if not path.is_file():
        raise HTTPException(404, f"job {job_id} has no policy yet")
    from rlprune.service.jobs.files import load_policy, policy_text

    text = policy_text(load_policy(path), format)
    media = "application/json" if format == "json" else "application/yaml"
    return HTMLResponse(text, media_type=media)


@files_router.get("/v1/jobs/{job_id}/artifacts/{name:path}")
def artifact(request: Request, job_id: str, name: str) -> FileResponse:
    run = Path(_get(request, job_id).run_dir).resolve()
    path = _inside(run, name)
    inline = path.suffix.lower() in INLINE
    return FileResponse(path, filename=path.name, media_type=content_type(path.name),
                        content_disposition_type="inline" if inline else "attachment",
                        headers={"X-Content-Type-Options": "nosniff"})


@router.get("/v1/jobs/{job_id}/episodes")
def episodes(request: Request, job_id: str) -> dict:
    """The search's episodes so far, for a chart: episode numbers, rewards, proxy accuracies
    (a resumed search's repeated episodes counted once, the last time), and the warm-up."""
    record = _get(request, job_id)
    by_episode: dict[int, dict] = {}
    for event in _events(Path(record.run_dir) / EVENTS):
        if event.get("kind") == "episode" and isinstance(event.get("episode"), int):
            by_episode[event["episode"]] = event
    order = sorted(by_episode)
    return {"episode": order, "reward": [by_episode[e].get("reward") for e in order],
            "proxy_accuracy": [by_episode[e].get("proxy_accuracy") for e in order],
            "warmup": record.config.get("warmup"), "episodes": record.config.get("episodes")}


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


def _events(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line being written
        if isinstance(event, dict):
            out.append(event)
    return out


def _last_event_id(request: Request, log: Path) -> int:
    """Where a reconnecting client left off: its `Last-Event-ID` (the offset in the run's event
    log after the last event it got), 0 without one."""
    given = request.headers.get("last-event-id", "").strip()
    if not given:
        return 0
    offset = int(given) if given.isdigit() and len(given) < 16 else -1
    if offset > 0:
        try:
            with open(log, "rb") as fh:
                fh.seek(offset - 1)
                if fh.read(1) != b"\n":
                    offset = -1
        except OSError:
            offset = -1
    if offset < 0:
        raise HTTPException(400, f"Last-Event-ID {given[:40]!r} is not an event id of this "
                                 "job's stream")
    return offset


async def _stream(registry: Registry, job_id: str, request: Request, offset: int):
    """Server-sent events: the run's event log from `offset` (each event's id is the offset
    after it, so a client that reconnects with Last-Event-ID misses and repeats nothing), and
    the registry's state changes, until the job stops (or the client goes)."""
    last_state = None
    while True:
        record = registry.get(job_id)
        assert record is not None  # events() found it, and the registry never forgets a job
        path = Path(record.run_dir) / EVENTS
        if path.is_file():
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            for line in chunk[: chunk.rfind(b"\n") + 1].splitlines(keepends=True):
                offset += len(line)
                text = line.decode(errors="replace").rstrip()
                yield f"id: {offset}\nevent: run\ndata: {text}\n\n"
        if record.state != last_state:
            last_state = record.state
            data = json.dumps({"kind": "job", "state": record.state, "id": job_id})
            yield f"id: {offset}\nevent: job\ndata: {data}\n\n"
        if record.state in (*TERMINAL, "interrupted") or await request.is_disconnected():
            return
        await asyncio.sleep(0.2)
