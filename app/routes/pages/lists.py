"""What the growing lists (recent explanations, the review queue) share: their filters and the
keyset cursor as one query dependency, and the links to the next page with the same filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query

from app import paging
from app.explanations.identity import parse_identity

FilterText = Annotated[str, Query(max_length=64)]
DayText = Annotated[str, Query(max_length=10, description="a UTC day, YYYY-MM-DD")]


@dataclass(frozen=True)
class ListQuery:
    """The filters both growing lists share, and the keyset cursor of the page asked for."""

    filters: dict[str, str]  # case identity, UTC days (since, until), user: as the form sent them
    after: str

    @property
    def identity(self) -> dict[str, str]:
        return parse_identity(self.filters)

    def page_url(self, path: str, after: str | None, **more: str) -> str | None:
        """The list at `after` (None: no such page) with the same filters."""
        if after is None:
            return None
        query = paging.query_string({**more, **self.filters}, after=after)
        return f"{path}?{query}" if query else path


def list_query(
    study_instance_uid: FilterText = "",
    patient_pseudonym: FilterText = "",
    since: DayText = "",
    until: DayText = "",
    user: FilterText = "",
    after: Annotated[str, Query(max_length=120, description="keyset cursor: next page")] = "",
) -> ListQuery:
    filters = {
        "study_instance_uid": study_instance_uid,
        "patient_pseudonym": patient_pseudonym,
        "since": since,
        "until": until,
        "user": user,
    }
    return ListQuery(filters, after)


ListQueryDep = Annotated[ListQuery, Depends(list_query)]
