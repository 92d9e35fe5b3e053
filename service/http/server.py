"""The HTTP service (`rlprune serve`): a FastAPI app over the job registry and the executor.

Every API endpoint needs `Authorization: Bearer TOKEN`; the web page is opened once as
`/?token=TOKEN` and keeps a session cookie (`guard`). Bad requests get a 4xx whose body is
`{"detail": "one clear message"}`, never a stack trace.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    StreamingResponse,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rlprune.models.errors import SettingError, UserError
from rlprune.service.http.guard import (
    SESSION_COOKIE,
    Auth,
    HeaderLimit,
    check_idempotency_key,
    read_json_body,
)
from rlprune.service.http.job_registry import Registry
from rlprune.service.http.jobcheck import check_request
from rlprune.service.http.scheduler import TERMINAL, LocalExecutor
from rlprune.service.http.settings import ServeConfig

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


def make_token(path: Path) -> str:
    """The service's bearer token, made on first start and kept with mode 0600."""
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def check_executor(kind: str, ray_address: str | None) -> None:
    """Refuse an executor and address that do not go together (or an address that answers
    nothing) before anything is written."""
    if kind not in ("local", "ray"):
        raise UserError(f"executor {kind!r} is not available; use local or ray")
    if kind == "ray" and not ray_address:
        raise SettingError("executor", "ray needs `ray_address` (auto: the cluster this machine "
                           "belongs to; local: start one here; or host:port)",
                           others=("ray_address",))
    if kind == "local" and ray_address:
        raise SettingError("ray_address", "goes with `executor` ray", others=("executor",))
    if ray_address:
        from rlprune.agent.ray_workers import import_ray, probe

        import_ray()
        probe(ray_address)


def _executor(kind: str, ray_address: str | None, runs: Path, registry: Registry,
              **kwargs) -> LocalExecutor:
    """`local`: worker processes here; `ray`: Ray tasks on the cluster at `ray_address`."""
    if kind == "ray":
        from rlprune.service.http.ray_executor import RayExecutor

        return RayExecutor(runs, registry, address=ray_address, **kwargs)
    return LocalExecutor(runs, registry, **kwargs)


def create_app(config: ServeConfig, token: str) -> FastAPI:
    config.validate()
    check_executor(config.executor, config.ray_address)
    runs = Path(config.runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    registry = Registry(runs / "registry.sqlite3")
    engine = _executor(config.executor, config.ray_address, runs, registry,
                       max_running=config.max_running, auto_resume=config.auto_resume)
    auth = Auth(token)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.stop()
        registry.close()

    app = FastAPI(title="rlprune", version=_version(), lifespan=lifespan,
                  docs_url=None, openapi_url=None,  # served below, behind the session
                  description="RL-driven pruning jobs: submit, watch, cancel, resume, "
                              "download policies and pruned models. Every endpoint but "
                              "/healthz needs `Authorization: Bearer TOKEN`.")
    app.add_middleware(HeaderLimit)
    app.state.registry, app.state.engine, app.state.runs = registry, engine, runs

    def authorized(request: Request) -> None:
        auth.require_bearer(request)

    def page_session(request: Request) -> None:
        auth.require_page(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse({"detail": f"{where}: {first['msg']}" if where else first["msg"]},
                            status_code=422)

    @app.exception_handler(UserError)
    async def refused(request: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"},
                            status_code=500)

    api = [Depends(authorized)]

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/version", dependencies=api)
    def version() -> dict:
        import torch

        return {"rlprune": _version(), "torch": torch.__version__, "api": "v1"}

    @app.post("/v1/jobs", status_code=202, dependencies=api,
              openapi_extra={"requestBody": {"content": {"application/json": {
                  "schema": JobRequest.model_json_schema()}}, "required": True}})
    async def submit(request: Request,
                     idempotency_key: str | None = Header(default=None)) -> dict:
        check_idempotency_key(idempotency_key)
        job = _job_request(await read_json_body(request))
        # checking runs user code in a child process: not on the event loop
        checked = await asyncio.to_thread(check_request, job.kind, job.config, config)
        record, _ = registry.submit(job.kind, checked, runs, idempotency_key)
        return {"id": record.id, "state": record.state}

    @app.get("/v1/jobs", dependencies=api)
    def jobs() -> list[JobView]:
        return [_view(record) for record in registry.all()]

    @app.get("/v1/jobs/{job_id}", dependencies=api)
    def job(job_id: str) -> JobView:
        return _view(_get(registry, job_id))

    @app.post("/v1/jobs/{job_id}/cancel", status_code=202, dependencies=api)
    def cancel(job_id: str) -> dict:
        record = _get(registry, job_id)
        if record.state in TERMINAL or record.state == "interrupted":
            raise HTTPException(409, f"job {job_id} is {record.state}; only a queued or "
                                     "running job can be cancelled")
        return {"id": job_id, "state": engine.cancel(record)}

    @app.post("/v1/jobs/{job_id}/resume", status_code=202, dependencies=api)
    def resume(job_id: str) -> dict:
        record = _get(registry, job_id)
        if not engine.resume(record):
            raise HTTPException(409, f"job {job_id} is {record.state}; only an interrupted "
                                     "or cancelled job can be resumed")
        return {"id": job_id, "state": "queued"}

    @app.get("/v1/jobs/{job_id}/events", dependencies=api)
    async def events(job_id: str, request: Request) -> StreamingResponse:
        _get(registry, job_id)
        return StreamingResponse(_stream(registry, job_id, request),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    @app.get("/v1/jobs/{job_id}/policy", dependencies=api)
    def policy(job_id: str, format: Literal["json", "yaml"] = "json"):  # noqa: A002
        path = Path(_get(registry, job_id).run_dir) / "policy.json"
        if not path.is_file():
            raise HTTPException(404, f"job {job_id} has no policy yet")
        from rlprune.service.jobs.files import load_policy, policy_text

        text = policy_text(load_policy(path), format)
        media = "application/json" if format == "json" else "application/yaml"
        return HTMLResponse(text, media_type=media)

    @app.get("/v1/jobs/{job_id}/artifacts/{name:path}", dependencies=api)
    def artifact(job_id: str, name: str) -> FileResponse:
        run = Path(_get(registry, job_id).run_dir).resolve()
        path = _inside(run, name)
        return FileResponse(path, filename=path.name)

    @app.post("/v1/checkpoints", status_code=201, dependencies=api)
    async def upload(request: Request) -> dict:
        return await _upload(request, runs, config.upload_limit)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(page_session)])
    def openapi() -> dict:
        return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(page_session)])
    def docs() -> HTMLResponse:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="rlprune API")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(request: Request):
        return _page(request, auth)

    return app


def _page(request: Request, auth: Auth):
    """`/?token=T` sets the page's session cookie and sends the browser on to `/` (so the
    token leaves the address bar); `/` with the session is the page, which calls the API
    with the bearer header."""
    from rlprune.service.http.page import page_html

    given = request.query_params.get("token")
    if given is not None:
        if not auth.token_ok(given):
            raise HTTPException(401, "wrong token in ?token= (it is in the service's token "
                                     "file)")
        answer = RedirectResponse("/", status_code=303)
        answer.set_cookie(SESSION_COOKIE, auth.session, httponly=True, samesite="strict",
                          path="/")
        return answer
    auth.require_page(request)
    return HTMLResponse(page_html(auth.token), headers={"Cache-Control": "no-store"})


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


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rlprune")
    except PackageNotFoundError:
        return "0+unknown"


def _get(registry: Registry, job_id: str):
    record = registry.get(job_id)
    if record is None:
        raise HTTPException(404, f"no job {job_id}")
    return record


def _view(record) -> JobView:
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
    return JobView(**{k: v for k, v in record.to_json().items()}, progress=progress)


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


async def _upload(request: Request, runs: Path, limit: int) -> dict:
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
