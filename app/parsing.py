"""Whole numbers typed by people (form fields, query text): one strict reader for all of them.

`str.isdigit()` then `int()` lets through what `int()` then chokes on or reads differently:
superscripts ("²" is a digit to isdigit, not to int), other scripts' digits ("٣" is 3 to int),
and strings past Python's 4,300-digit conversion limit (ValueError). Here only ASCII digits
with at most one leading sign are numbers, and the length is bounded before `int()` sees them.
"""

from __future__ import annotations

import re

from app.errors import InvalidInput
from app.i18n import N_

# Every bound below fits in 19 digits (64-bit); more than that is out of any range we take.
MAX_DIGITS = 19
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
ASCII_WHITESPACE = " \t\n\r\f\v"


def parse_int(text: str, name: str, low: int, high: int) -> int:
    """`text` as an int in [low, high], or InvalidInput naming `name` and the range.

    Surrounding ASCII whitespace is allowed (not Unicode's: str.strip() would also drop a
    no-break space or an information separator); anything else that is not a plain ASCII
    integer is not."""
    value = text.strip(ASCII_WHITESPACE)
    if not _INTEGER.fullmatch(value):
        raise InvalidInput(
            N_("%(name)s must be a whole number between %(low)s and %(high)s, got %(got)s"),
            name=name,
            low=low,
            high=high,
            got=_shown(text),
        )
    negative = value.startswith("-")
    digits = value.lstrip("+-").lstrip("0") or "0"  # int() counts leading zeros to its limit
    if len(digits) > MAX_DIGITS:
        sign = "-" if negative else ""
        raise InvalidInput(
            N_("%(name)s must be between %(low)s and %(high)s, got a %(digits)s-digit number"),
            name=name,
            low=low,
            high=high,
            digits=f"{sign}{len(digits)}",
        )
    number = -int(digits) if negative else int(digits)
    if not low <= number <= high:
        raise InvalidInput(
            N_("%(name)s must be between %(low)s and %(high)s, got %(got)s"),
            name=name,
            low=low,
            high=high,
            got=number,
        )
    return number


def _shown(text: str, limit: int = 40) -> str:
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."
