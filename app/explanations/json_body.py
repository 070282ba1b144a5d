"""Reading a JSON request body so that its shape costs no more than its size.

Two things `json.loads` does badly with a hostile body of a few megabytes:
- nesting: it recurses once per `[` or `{`, and a body of 10,000 of them ends in RecursionError
  (a 500) instead of a refusal. `check_nesting` measures the depth first, without parsing.
- numbers: it builds a Python float (24 bytes plus an 8-byte list slot) per number, so an 8 MiB
  body of "0," costs ~130 MiB before a single check can refuse it. `read_json_body` finds the
  top-level "features" array and reads it row by row with numpy into float32, after checking
  the slice count and each row's width from the text; only the rest of the body (k, the case
  identity) goes through `json.loads`.
Bodies whose "features" are not a plain array of rows of numbers (strings, objects, 3-D) and
other bodies (contours) are parsed by `json.loads` as before, after the nesting check.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from starlette.requests import Request

from app.errors import InvalidInput
from model.features_io import MAX_CSV_COLUMNS
from model.validation import InputError, check_slice_count

LARGE_BODY_BYTES = 1 << 20  # JSON bodies over this are read and parsed a few at a time
LARGE_BODIES_AT_ONCE = 2
MAX_DEPTH = 64  # a features body nests 3 deep, a contours body 6
MAX_ROW_VALUES = MAX_CSV_COLUMNS  # features per slice, as for a .csv upload
_DEPTH_CHUNK = 1 << 16  # brackets scanned per numpy step: bounded scratch memory

_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # an escape pair inside a string, e.g. \" or \\
_STRING = re.compile(rb'"[^"]*"')  # a string, once escape pairs are gone
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENERS = np.frombuffer(b"[{", np.uint8)

_FEATURES_KEY = re.compile(rb'"features"\s*:\s*(?=\[)')
_ROWS = re.compile(rb"\[\s*(?:\[[^\[\]]*\]\s*(?:,\s*\[[^\[\]]*\]\s*)*)?\]")  # [[...], ...]
_ROW = re.compile(rb"\[([^\[\]]*)\]")
_NUMBER = rb"(?:-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|NaN|-?Infinity)"
_ONE_NUMBER = re.compile(_NUMBER)
_CELL = re.compile(rb"[^,]+|(?<=,)(?=,|$)|^(?=,)")  # each comma-separated cell, empty ones too
_NUMBERS = re.compile(rb"\s*(?:%s\s*(?:,\s*%s\s*)*)?" % (_NUMBER, _NUMBER))


def check_nesting(body: bytes, limit: int = MAX_DEPTH) -> None:
    """InvalidInput if arrays and objects nest more than `limit` deep (brackets in strings are
    text, not nesting)."""
    if body.count(b"[") + body.count(b"{") <= limit:  # most bodies: nothing to scan
        return
    brackets = _STRING.sub(b"", _ESCAPE.sub(b"", body)).translate(None, _NOT_BRACKETS)
    depth = 0
    for start in range(0, len(brackets), _DEPTH_CHUNK):
        chunk = np.frombuffer(brackets, np.uint8, min(_DEPTH_CHUNK, len(brackets) - start), start)
        levels = depth + np.cumsum(np.where(np.isin(chunk, _OPENERS), 1, -1), dtype=np.int64)
        if levels.max() > limit:
            raise InvalidInput(
                f"the JSON body nests arrays and objects more than {limit} levels deep"
            )
        depth = int(levels[-1])


def read_json_body(body: bytes, max_slices: int) -> tuple[Any, np.ndarray | None]:
    """The parsed body, and its "features" as a float32 [slices, width] array when they were
    read apart (then the payload's "features" is None); InvalidInput naming what is wrong."""
    found = _features_span(body)  # a regex match: no recursion, no copy
    if found is not None:
        start, end = found
        rest = body[:start] + b"null" + body[end:]  # the features nest 2 deep, by the match
        check_nesting(rest)
        payload = _loads(rest)
        if isinstance(payload, dict) and "features" in payload and payload["features"] is None:
            return payload, _feature_rows(body, start, end, max_slices)
    check_nesting(body)
    return _loads(body), None


@asynccontextmanager
async def large_body_turn(request: Request) -> AsyncIterator[bool]:
    """Waits, before a body over LARGE_BODY_BYTES (JSON, or a multipart upload) is read, until
    fewer than LARGE_BODIES_AT_ONCE others are being read and parsed: the bytes of those waiting
    stay in the socket buffers, so sixteen concurrent 8 MiB bodies cost a few bodies' memory,
    not sixteen. Smaller bodies (every real case: 512 slices of 38 features is ~400 KiB) never
    wait. Yields whether the body is a large one (whose parsing must happen inside the turn).
    """
    declared = request.headers.get("content-length", "")
    if not (declared.isdigit() and len(declared) < 20 and int(declared) > LARGE_BODY_BYTES):
        yield False
        return
    state = request.app.state
    turns = getattr(state, "large_json_bodies", None)
    if turns is None:  # one per app (and so per event loop)
        turns = state.large_json_bodies = asyncio.Semaphore(LARGE_BODIES_AT_ONCE)
    async with turns:
        yield True


def _integer(digits: str) -> int | float:
    # Past 4,300 digits int() raises (Python's conversion limit); as a float the number is out
    # of range (inf), and the check of the field it was sent for says so, by name.
    return int(digits) if len(digits) <= 64 else float(digits)


def parse_json(body: bytes) -> Any:
    """Any JSON body of the explanation endpoints: nesting bounded before parsing, numbers of
    any length kept from int()'s conversion limit; InvalidInput naming the problem."""
    check_nesting(body)
    return _loads(body)


def _loads(text: bytes) -> Any:
    try:
        # json.loads, not pydantic: NaN/Infinity reach the check
        return json.loads(text, parse_int=_integer)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"the body is not valid JSON: {e}") from None


def _features_span(body: bytes) -> tuple[int, int] | None:
    """Where the first "features": [[...], ...] value starts and ends, if it is one."""
    key = _FEATURES_KEY.search(body)
    if key is None:
        return None
    rows = _ROWS.match(body, key.end())
    return None if rows is None else (rows.start(), rows.end())


def _first_non_number(row: bytes) -> int:
    """Index of the first cell of a row that is not a JSON number (cells read one at a time)."""
    for j, cell in enumerate(_CELL.finditer(row)):
        if not _ONE_NUMBER.fullmatch(cell.group().strip()):
            return j
    return 0


def _feature_rows(body: bytes, start: int, end: int, max_slices: int) -> np.ndarray:
    n_rows = body.count(b"[", start, end) - 1
    try:
        check_slice_count(n_rows, max_slices)  # before any value is read
    except InputError as e:
        raise InvalidInput(str(e)) from None
    if n_rows == 0:
        raise InvalidInput("features have no slices; at least 1 is needed")
    out: np.ndarray | None = None
    for i, row in enumerate(_ROW.finditer(body, start + 1, end)):
        text = row.group(1)
        if not _NUMBERS.fullmatch(text):
            raise InvalidInput(f"features.{i}.{_first_non_number(text)}: not a number")
        width = text.count(b",") + 1 if text.strip() else 0
        if width > MAX_ROW_VALUES:
            raise InvalidInput(
                f"features.{i} has more than {MAX_ROW_VALUES} values; a slice has one value "
                "per feature"
            )
        if out is None:
            out = np.empty((n_rows, width), np.float32)
        elif width != out.shape[1]:
            raise InvalidInput(
                "every slice needs the same number of features, got widths "
                f"{sorted({out.shape[1], width})}"
            )
        if width:
            with np.errstate(over="ignore"):  # beyond float32 -> inf, refused as not finite
                out[i] = np.fromstring(text, dtype=np.float64, sep=",")
    assert out is not None
    return out
