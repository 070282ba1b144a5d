"""Logging of `clipmed serve` and `clipmed worker`: JSON lines (or text for a console), each
carrying the fields bound to what the line is about (a request id, a job id).

`bound(request_id=...)` puts fields in a context variable, so every line logged inside it,
including from the thread pool (anyio copies the context into it), carries them without being
passed along; a log collector can then join a request's lines with its audit rows.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import IO, Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

LogFormat = Literal["auto", "json", "text"]

_fields: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "log_fields", default=MappingProxyType({})
)

# Fields our own lines add with `extra=` or `bound`; the text format shows them as key=value.
FIELDS = (
    "request_id",
    "job_id",
    "method",
    "route",
    "path",
    "status",
    "duration_ms",
    "user",
    "client",
)
# uvicorn decorates some records with an ANSI-coloured copy of the message.
NOT_LOGGED = (*RESERVED_ATTRS, "color_message")
# Chatter at INFO that says nothing about this service (alembic lists its plugins each run).
QUIET_LOGGERS = {"alembic.runtime.plugins": logging.WARNING}


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Adds `fields` to every line logged in this context (nested contexts add to it)."""
    token = _fields.set({**_fields.get(), **fields})
    try:
        yield
    finally:
        _fields.reset(token)


def current(name: str) -> Any:
    """A bound field's value, or None."""
    return _fields.get().get(name)


class BoundFields(logging.Filter):
    """Copies the bound fields onto each record (a field given with `extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _fields.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...` for people reading a console."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{name}={getattr(record, name)}" for name in FIELDS if hasattr(record, name)]
        if not extras:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        return f"{head} {' '.join(extras)}{sep}{tail}"


def json_formatter() -> logging.Formatter:
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        reserved_attrs=NOT_LOGGED,
        timestamp="time",
    )


def resolve_format(log_format: LogFormat, stream: IO[str]) -> Literal["json", "text"]:
    """ "auto": text on a terminal (a person reading), JSON otherwise (a collector reading)."""
    if log_format != "auto":
        return log_format
    return "text" if stream.isatty() else "json"


def make_handler(log_format: LogFormat, stream: IO[str] | None = None) -> logging.Handler:
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    chosen = resolve_format(log_format, stream)
    handler.setFormatter(json_formatter() if chosen == "json" else TextFormatter())
    handler.addFilter(BoundFields())
    return handler


def configure_logging(log_format: LogFormat, level: int | str = logging.INFO) -> None:
    """The process's one handler, on the root logger; uvicorn's loggers propagate to it (serve
    passes `log_config=None`, so uvicorn adds no handlers of its own)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(make_handler(log_format))
    root.setLevel(level)
    for name, quiet_level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(quiet_level)
    logging.captureWarnings(True)
