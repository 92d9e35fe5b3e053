"""What the HTTP service checks before a request reaches a route: the token, the page's
session cookie, and the size and shape of what a client sends.

- The API takes `Authorization: Bearer TOKEN` only (never a token in the URL, which lands in
  logs and browser history). The web page is opened once as `/?token=TOKEN`: that answer sets
  a session cookie (HttpOnly, SameSite=Strict) and sends the browser on to `/`, whose page
  then calls the API with the header. The cookie opens the page and the API docs, nothing
  that changes state. Tokens are compared in constant time.
- A request's headers are at most `MAX_HEADER_BYTES` (431 past that); a job's JSON body at
  most `MAX_JOB_BODY` bytes (413), read before it is parsed, then at most `MAX_DEPTH` deep
  with at most `MAX_ITEMS` items in a list or object and `MAX_TEXT` characters a string.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from fastapi import HTTPException, Request
from starlette.types import ASGIApp, Receive, Scope, Send

SESSION_COOKIE = "rlprune_session"
MAX_HEADER_BYTES = 16 * 1024
MAX_JOB_BODY = 256 * 1024
MAX_DEPTH = 6
MAX_ITEMS = 1000
MAX_TEXT = 4096
MAX_IDEMPOTENCY_KEY = 128


class Auth:
    """The service's token, and the page session derived from it."""

    def __init__(self, token: str):
        self.token = token
        self.session = hmac.new(token.encode(), b"rlprune page session",
                                hashlib.sha256).hexdigest()

    @staticmethod
    def _same(given: str, expected: str) -> bool:
        return hmac.compare_digest(given.encode(), expected.encode())

    def bearer_ok(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme == "Bearer" and self._same(given.strip(), self.token)

    def token_ok(self, given: str) -> bool:
        return self._same(given, self.token)

    def session_ok(self, request: Request) -> bool:
        return self._same(request.cookies.get(SESSION_COOKIE, ""), self.session)

    def require_bearer(self, request: Request) -> None:
        if not self.bearer_ok(request):
            raise HTTPException(401, "missing or wrong bearer token (send the header "
                                     "Authorization: Bearer TOKEN; the token is in the "
                                     "service's token file)")

    def require_page(self, request: Request) -> None:
        """The page and the docs: the session cookie or the bearer header."""
        if not (self.session_ok(request) or self.bearer_ok(request)):
            raise HTTPException(401, "open the page once as /?token=TOKEN (the token is in "
                                     "the service's token file); the page keeps a session "
                                     "cookie from then on")


class HeaderLimit:
    """ASGI middleware: a request whose headers are over `MAX_HEADER_BYTES` gets 431 with one
    message (the server reads up to 1 MB of headers, so the client gets to read it)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and sum(
                len(k) + len(v) for k, v in scope.get("headers", ())) > MAX_HEADER_BYTES:
            body = json.dumps({"detail": f"request headers over {MAX_HEADER_BYTES:,} "
                                         "bytes"}).encode()
            await send({"type": "http.response.start", "status": 431,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


async def read_json_body(request: Request, limit: int = MAX_JOB_BODY) -> object:
    """The request's JSON body: refused over `limit` bytes before it is parsed, then refused
    if nested or sized past the limits above."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body over the limit of {limit:,} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"request body over the limit of {limit:,} bytes")
    try:
        data = json.loads(body)
    except RecursionError:
        raise HTTPException(400, f"the JSON body is nested over {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise HTTPException(422, f"the body is not JSON ({exc})") from None
    check_shape(data)
    return data


def check_shape(data: object) -> None:
    """Refuse JSON deeper than MAX_DEPTH, a container over MAX_ITEMS or a string over
    MAX_TEXT (iteratively: no recursion on what a client sent)."""
    todo = [(data, 1)]
    while todo:
        value, depth = todo.pop()
        if isinstance(value, str | bytes) and len(value) > MAX_TEXT:
            raise HTTPException(400, f"a string in the body is over {MAX_TEXT:,} characters")
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise HTTPException(400, f"the JSON body is nested over {MAX_DEPTH} levels")
            if len(value) > MAX_ITEMS:
                raise HTTPException(400, f"a list or object in the body holds over "
                                         f"{MAX_ITEMS:,} items ({len(value):,})")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                todo.append((key, depth))
                todo.append((item, depth + 1))


def check_idempotency_key(key: str | None) -> None:
    if key is not None and (len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable()
                            or not key.isascii()):
        raise HTTPException(400, f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} "
                                 "printable ASCII characters")
