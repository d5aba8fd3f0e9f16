"""Requests a client got wrong are logged as one WARNING line, not as an ERROR with a traceback.

BentoML logs every exception an API raises — a 400 for a bad vector as much as a bug — at ERROR with its full
traceback (27 MB of log for 11k rejected requests). This filter, put on the handlers of the `bentoml` logger when
the service starts (the public `logging` API; nothing of BentoML is patched), rewrites the records whose exception
is a client error — pydantic's ValidationError (BentoML answers 400) or a BentoMLException with a 4xx code — into
one WARNING line naming the problem. Server errors keep their traceback.
"""

from __future__ import annotations

import logging

from bentoml.exceptions import BentoMLException
from pydantic import ValidationError

MAX_MESSAGE_CHARS = 300


def client_error_message(exc: BaseException | None) -> str | None:
    """The one-line message of a client error, None for anything else."""
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False, include_input=False)[0] if exc.error_count() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return f"400: {exc.error_count()} validation error(s), first: {where}: {first.get('msg', '')}"
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
