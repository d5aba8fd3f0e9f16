"""Requests a client got wrong: answered with one JSON shape, and logged as one WARNING line, not as an ERROR
with a traceback.

The answer's body is `{"error": "<what was wrong>"}` (`error_body`; serving/guard.py rewrites every 4xx into it,
serving/schemas.py `ErrorBody` is its schema); a pydantic validation failure becomes one message listing each
problem with the field it is in (`validation_message`).

BentoML logs every exception an API raises — a 400 for a bad vector as much as a bug — at ERROR with its full
traceback (27 MB of log for 11k rejected requests). This filter, put on the handlers of the `bentoml` logger when
the service starts (the public `logging` API; nothing of BentoML is patched), rewrites the records whose exception
is a client error — pydantic's ValidationError (BentoML answers 400) or a BentoMLException with a 4xx code — into
one WARNING line naming the problem. Server errors keep their traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

from serving.schemas import ErrorBody

MAX_MESSAGE_CHARS = 300
MAX_ERROR_CHARS = 2000
MAX_PROBLEMS = 10


def validation_message(errors: list[dict[str, Any]]) -> str:
    """One line naming every problem of a pydantic validation failure with its field (the first MAX_PROBLEMS)."""
    problems = [f"{'.'.join(str(part) for part in error.get('loc', ())) or 'body'}: {error.get('msg', '')}"
                for error in errors]
    more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
    return f"invalid request: {'; '.join(problems[:MAX_PROBLEMS])}{more}"


def error_body(message: str) -> bytes:
    """The JSON body of a 4xx answer: `{"error": message}`."""
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 3] + "..."
    return ErrorBody(error=message).model_dump_json().encode()


def client_error_message(exc: BaseException | None) -> str | None:
    """The one-line message of a client error, None for anything else."""
    if isinstance(exc, ValidationError):
        return f"400: {validation_message(exc.errors(include_url=False, include_input=False))}"
    if isinstance(exc, BentoMLException) and 400 <= exc.error_code.value < 500:
        return f"{exc.error_code.value}: {exc}"
    return None


class ClientErrorFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        message = client_error_message(exc)
        if message is not None:
            record.msg = f"{record.getMessage()}: {message}"[:MAX_MESSAGE_CHARS]
            record.args = ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            if hasattr(record, "levelname_bracketed"):  # BentoML's log format shows the level from this field
                record.levelname_bracketed = "[WARNING]"
        return True


def install(logger_name: str = "bentoml") -> int:
    """Put the filter on every handler the logger (and the root logger) has; returns how many."""
    handlers = [*logging.getLogger(logger_name).handlers, *logging.getLogger().handlers]
    for handler in handlers:
        if not any(isinstance(f, ClientErrorFilter) for f in handler.filters):
            handler.addFilter(ClientErrorFilter())
    return len(handlers)
