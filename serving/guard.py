"""An ASGI middleware (added with BentoML's `Service.add_asgi_middleware`) that answers malformed request bodies
with a 4xx before BentoML's request parsers see them, and gives every 4xx the service sends one JSON shape.

Malformed bodies: BentoML's parsers raise plain exceptions on a multipart content type without a boundary or on a
truncated multipart body, which BentoML turns into a 500. For the POST routes only (probes, /metrics and
/docs.json pass untouched) the guard checks that
- the body is at most `max_body_bytes` (JSON routes) or `max_upload_bytes` plus room for the form fields
  (multipart), else 413, checked on Content-Length and again while the body streams in;
- a multipart/form-data body has a boundary and parses as multipart (python-multipart, the parser Starlette and
  BentoML use), else 400 naming the problem.
The body is read once here and handed on unchanged.

One error shape: BentoML's /docs.json declares its error responses as an object `{"error": string, "detail":
string}` with `error` required (components InvalidArgument, NotFound, InternalServerError), but answers a
validation error with `detail` as a list of pydantic errors, an API's own 4xx as a one-element list
`[{"error": ...}]`, and an unknown route or method as plain text. Every 4xx answer (whatever produced it) is
rewritten here into `{"error": "<what was wrong>"}` (serving/schemas.py `ErrorBody`, the declared shape); 2xx and
5xx answers pass untouched.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from serving.client_errors import error_body, validation_message

FORM_FIELDS_ROOM = 2**20

Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class BodyRejected(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class RequestGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        send = _one_error_shape(send)
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        content_type = headers.get("content-type", "")
        multipart = content_type.split(";")[0].strip().lower() == "multipart/form-data"
        limit = self.max_upload_bytes + FORM_FIELDS_ROOM if multipart else self.max_body_bytes
        try:
            if multipart:
                boundary = _boundary(content_type)
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise BodyRejected(413, f"request body has {declared} bytes, over the limit of {limit} bytes")
            body = await _read_body(receive, limit)
            if body is None:
                return  # the client went away
            if multipart:
                _check_multipart(body, boundary)
        except BodyRejected as exc:
            return await _reject(send, exc.status, exc.message)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _boundary(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "boundary" and value.strip().strip('"'):
            return value.strip().strip('"')
    raise BodyRejected(400, "multipart/form-data needs a boundary parameter in its Content-Type header")


async def _read_body(receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyRejected(413, f"request body has more than {limit} bytes, the limit of this route")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _check_multipart(body: bytes, boundary: str) -> None:
    """Parse the whole body with python-multipart; a body it cannot parse, or that ends before its closing
    boundary, is a 400."""
    from python_multipart.multipart import MultipartParser

    state = {"parts": 0, "ended": False}
    callbacks = {"on_part_begin": lambda: state.__setitem__("parts", state["parts"] + 1),
                 "on_end": lambda: state.__setitem__("ended", True)}
    try:
        parser = MultipartParser(boundary.encode("latin-1"), callbacks)
        parser.write(body)
        parser.finalize()
    except Exception as exc:  # noqa: BLE001 - python-multipart raises several error types for malformed bodies
        raise BodyRejected(400, f"malformed multipart/form-data body: {exc}") from None
    if not state["ended"] or state["parts"] == 0:
        raise BodyRejected(400, "malformed multipart/form-data body: no parts, or no closing boundary")


async def _reject(send, status: int, message: str) -> None:
    body = error_body(message)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _one_error_shape(send: Callable[[Message], Awaitable[None]]) -> Callable[[Message], Awaitable[None]]:
    """Wrap `send` so that a 4xx answer's body is collected and sent again as `{"error": ...}`."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def send_one_shape(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
            start = message
            return
        if start is None or message["type"] != "http.response.body":
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = error_body(_error_message(start, b"".join(chunks)))
        headers = [(k, v) for k, v in start.get("headers", [])
                   if k.lower() not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return send_one_shape


def _error_message(start: Message, body: bytes) -> str:
    """The message of a 4xx body in any of the shapes BentoML and Starlette send (see module doc)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        return text or HTTPStatus(start["status"]).phrase
    if isinstance(parsed, list) and len(parsed) == 1:
        parsed = parsed[0]
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        detail = parsed.get("detail")
        if isinstance(detail, list) and detail:  # pydantic's errors, as BentoML sends a ValidationError
            return validation_message(detail)
        return parsed["error"] if detail in (None, "") else f"{parsed['error']}: {detail}"
    return text or HTTPStatus(start["status"]).phrase
