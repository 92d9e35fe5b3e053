"""The HTTP service (`rlprune serve`): a FastAPI app over the job registry and the executor.

Every API endpoint needs `Authorization: Bearer TOKEN`; the web page is opened once as
`/?token=TOKEN` and keeps a session cookie (`guard`). Bad requests get a 4xx whose body is
`{"detail": "one clear message"}`, never a stack trace. The API's routes are in `routes`.
"""

from __future__ import annotations

import os
import secrets
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from rlprune.models.errors import SettingError, UserError
from rlprune.service.http.guard import SESSION_COOKIE, Auth, HeaderLimit
from rlprune.service.http.job_registry import Registry
from rlprune.service.http.page import static_file
from rlprune.service.http.routes import files_router, package_version, page_session, router
from rlprune.service.http.scheduler import LocalExecutor
from rlprune.service.http.settings import ServeConfig


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

        assert ray_address is not None  # check_executor refuses ray without an address
        return RayExecutor(runs, registry, address=ray_address, **kwargs)
    return LocalExecutor(runs, registry, **kwargs)


def create_app(config: ServeConfig, token: str) -> FastAPI:
    """The service's app: the API routes (`routes`), the page, the docs, and the 4xx bodies."""
    config.validate()
    check_executor(config.executor, config.ray_address)
    runs = Path(config.runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    registry = Registry(runs / "registry.sqlite3")
    engine = _executor(config.executor, config.ray_address, runs, registry,
                       max_running=config.max_running, auto_resume=config.auto_resume,
                       warm_starts=config.warm_starts)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.stop()
        registry.close()

    app = FastAPI(title="rlprune", version=package_version(), lifespan=lifespan,
                  docs_url=None, openapi_url=None,  # served below, behind the session
                  description="RL-driven pruning jobs: submit, watch, cancel, resume, "
                              "download policies and pruned models. Every endpoint but "
                              "/healthz needs `Authorization: Bearer TOKEN`.")
    app.add_middleware(HeaderLimit)
    app.state.registry, app.state.engine, app.state.runs = registry, engine, runs
    app.state.config, app.state.auth = config, Auth(token)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(UserError, _refused)
    app.add_exception_handler(Exception, _crashed)
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.include_router(router)
    app.include_router(files_router)
    app.add_api_route("/static/{name:path}", static_file, methods=["GET"],
                      include_in_schema=False)
    page_only = [Depends(page_session)]
    app.add_api_route("/openapi.json", lambda: app.openapi(), methods=["GET"],
                      include_in_schema=False, dependencies=page_only)
    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False,
                      dependencies=page_only)
    app.add_api_route("/", page, methods=["GET"], response_class=HTMLResponse,
                      include_in_schema=False)
    return app


def healthz() -> dict:
    return {"ok": True}


def docs() -> HTMLResponse:
    """Swagger UI from the installed swagger-ui-py wheel (`/static/swagger/`): the docs
    work with no network."""
    from fastapi.openapi.docs import get_swagger_ui_html

    return get_swagger_ui_html(openapi_url="/openapi.json", title="rlprune API",
                               swagger_js_url="/static/swagger/swagger-ui-bundle.js",
                               swagger_css_url="/static/swagger/swagger-ui.css",
                               swagger_favicon_url="/static/swagger/favicon-32x32.png")


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return JSONResponse({"detail": f"{where}: {first['msg']}" if where else first["msg"]},
                        status_code=422)


async def _refused(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def _crashed(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": f"internal error ({type(exc).__name__})"},
                        status_code=500)


def page(request: Request):
    """`/?token=T` sets the page's session cookie and sends the browser on to `/` (so the
    token leaves the address bar); `/` with the session is the page, which calls the API
    with the bearer header."""
    from rlprune.service.http.page import page_html

    auth = request.app.state.auth
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
