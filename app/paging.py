"""Lists that grow (recent explanations, the review queue): keyset pages, newest first, and the
filters the list pages share. A page asks the database for PAGE_SIZE + 1 rows after the last row
the reader saw (never an OFFSET, never the whole table), so a page costs the same on the first
day and after a million rows."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.i18n import N_, Label
from app.tables import User

NOT_A_POSITION = N_("'after' is not a position in this list: %(cursor)s")

PAGE_SIZE = 50
T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None  # the `after` of the next (older) page; None on the last page


def page_of(rows: Sequence[T], cursor_of, size: int = PAGE_SIZE) -> Page[T]:
    """The first `size` of `rows` (fetched as size + 1) and the cursor after the last of them."""
    items = list(rows[:size])
    more = len(rows) > size
    return Page(items, cursor_of(items[-1]) if more and items else None)


# --- cursors ----------------------------------------------------------------------------------
def time_id_cursor(at: datetime, row_id: str) -> str:
    """The position of a row ordered by (time, id), both descending: "<ISO time>~<id>"."""
    return f"{at.isoformat()}~{row_id}"


def after_time_id(query: Select, at_column, id_column, cursor: str) -> Select:
    """Rows strictly older than the cursor in (time desc, id desc) order (ties broken by id)."""
    at, row_id = parse_time_id_cursor(cursor)
    older = or_(at_column < at, and_(at_column == at, id_column < row_id))
    return query.where(older)


def parse_time_id_cursor(cursor: str) -> tuple[datetime, str]:
    at_text, sep, row_id = cursor.partition("~")
    try:
        if not sep:
            raise ValueError
        at = datetime.fromisoformat(at_text)
        uuid.UUID(row_id)
    except ValueError:
        raise InvalidInput(NOT_A_POSITION, cursor=repr(cursor[:80])) from None
    return at, row_id


def after_id(query: Select, id_column, cursor: str) -> Select:
    """Rows with a smaller integer id than the cursor (ids grow with time)."""
    if not cursor.isdigit() or len(cursor) > 18:
        raise InvalidInput(NOT_A_POSITION, cursor=repr(cursor[:80]))
    return query.where(id_column < int(cursor))


# --- filters ----------------------------------------------------------------------------------
def parse_day(value: str, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            N_("%(name)s %(value)s is not a date (YYYY-MM-DD)"),
            name=Label(name),
            value=repr(value[:40]),
        ) from None


def day_range(since: str, until: str) -> tuple[datetime | None, datetime | None]:
    """`since`..`until` (UTC days, both included) as [start, end) times; 422 when reversed."""
    first, last = parse_day(since, N_("from")), parse_day(until, N_("to"))
    if first and last and first > last:
        raise InvalidInput(
            N_("the range starts (%(first)s) after it ends (%(last)s)"), first=first, last=last
        )
    start = datetime.combine(first, time.min, UTC) if first else None
    end = datetime.combine(last + timedelta(days=1), time.min, UTC) if last else None
    return start, end


def in_day_range(at_column, since: str, until: str) -> list[ColumnElement[bool]]:
    start, end = day_range(since, until)
    conditions = []
    if start is not None:
        conditions.append(at_column >= start)
    if end is not None:
        conditions.append(at_column < end)
    return conditions


def user_id_named(session: Session, username: str) -> int | None:
    """The id of the user with this name; -1 (matching no row) when there is none."""
    if not username:
        return None
    found = session.scalar(select(User.id).where(User.username == username))
    return found if found is not None else -1


def query_string(filters: Mapping[str, Any], **extra: Any) -> str:
    """The filters (and `extra`) that are set, as a query string for the page's links."""
    from urllib.parse import urlencode

    values = {k: v for k, v in {**filters, **extra}.items() if v not in (None, "")}
    return urlencode({k: getattr(v, "value", v) for k, v in values.items()})
