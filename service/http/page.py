"""The service's web page: `static/index.html`, `page.js` and `page.css`, no build step;
charts by plotly.js and the API docs by Swagger UI, both served from their installed wheels
(`plotly`, `swagger-ui-py`), so the page works with no network.

The server writes the token into the page it serves to a browser holding the page's session
cookie (`guard`); the page sends it as the bearer header on every API call, the event stream
included (read with fetch, since an EventSource cannot send headers). Links to a run's files
and its plots need no header: those routes also take the session cookie.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from fastapi import HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).with_name("static")
OWN = {"page.js": "text/javascript", "page.css": "text/css"}
TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png",
         ".html": "text/html"}


def page_html(token: str) -> str:
    """The page, with the token its API calls carry."""
    return (STATIC / "index.html").read_text().replace("__TOKEN__", json.dumps(token))


@cache
def _libraries() -> dict[str, Path]:
    """The third-party files the page and the docs load, by the name they are served under."""
    import plotly
    import swagger_ui

    files = {"plotly.min.js": Path(plotly.__file__).parent / "package_data" / "plotly.min.js"}
    swagger = Path(swagger_ui.__file__).parent / "static"
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
        files[f"swagger/{name}"] = swagger / name
    return files


def static_file(name: str) -> FileResponse:
    """`/static/NAME`: the page's own files (revalidated: a new version shows at once) or a
    library's (cached a day)."""
    if name in OWN:
        return FileResponse(STATIC / name, media_type=OWN[name],
                            headers={"Cache-Control": "no-cache"})
    path = _libraries().get(name)
    if path is None or not path.is_file():
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(path, media_type=TYPES.get(path.suffix, "application/octet-stream"),
                        headers={"Cache-Control": "public, max-age=86400"})
