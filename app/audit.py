"""The append-only audit trail: who did what to which record, when, and how it ended.

Each event is written in its own short transaction, so a request that fails or rolls back still
leaves its trace. There is deliberately no update or delete here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app import csv_export
from app.errors import NotFound, NotYours
from app.tables import AuditEvent, User

CSV_COLUMNS = (
    "at",
    "actor",
    "action",
    "target_type",
    "target_id",
    "request_id",
    "outcome",
    "model_version",
)


def make_event(
    action: str,
    outcome: str,
    *,
    user: User | None = None,
    actor: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    request_id: str | None = None,
    model_version: str | None = None,
) -> AuditEvent:
    return AuditEvent(
        actor_id=user.id if user is not None else None,
        actor=user.username if user is not None else actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        request_id=request_id,
        outcome=outcome,
        model_version=model_version,
    )


def record(sessions: sessionmaker[Session], action: str, outcome: str, **fields) -> None:
    """Writes one event in a transaction of its own (fields as in `make_event`)."""
    with sessions() as session:
        session.add(make_event(action, outcome, **fields))
        session.commit()


def search(
    session: Session,
    *,
    action: str | None = None,
    actor: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    limit: int = 500,
) -> list[AuditEvent]:
    """Newest first, filtered by any of the given fields."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if action:
        query = query.where(AuditEvent.action == action)
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if outcome:
        query = query.where(AuditEvent.outcome == outcome)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    return list(session.scalars(query))


def to_csv(events: Iterable[AuditEvent]) -> str:
    rows = (
        {column: getattr(event, column) for column in CSV_COLUMNS} | {"at": event.at.isoformat()}
        for event in events
    )
    return csv_export.to_csv(CSV_COLUMNS, rows)


def request_event(request, action: str, outcome: str, **fields) -> AuditEvent:
    """The event of this request (its caller and request id), not yet added to any session."""
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        fields.setdefault("user", principal.user)
    return make_event(
        action, outcome, request_id=getattr(request.state, "request_id", None), **fields
    )


def record_request(request, action: str, outcome: str, **fields) -> None:
    """`record` with the caller and request id of this request (fields as in `make_event`)."""
    event = request_event(request, action, outcome, **fields)
    with request.app.state.sessions() as session:
        session.add(event)
        session.commit()


def explanation_created(request) -> Callable[[Any], AuditEvent]:
    """For app.explanations.together: the event it commits in the same transaction as the
    explanation, so a stored explanation always has its audit row (and a refused one has
    neither)."""
    return lambda row: request_event(
        request,
        "explanation.create",
        "success",
        target_type="explanation",
        target_id=row.id,
        model_version=row.model_version,
    )


def flag_action(request, action: str, outcome: str = "success") -> Callable[[Any], AuditEvent]:
    """For `flagging.create_flag` and `review`: a flag action (create, accept, reject),
    committed with the flag itself, the same from the API and the pages; or its refusal
    (outcome "forbidden": a reviewer deciding their own flag)."""
    return lambda flag: request_event(
        request,
        action,
        outcome,
        target_type="flag",
        target_id=str(flag.id),
        model_version=flag.model_version,
    )


def record_view(request, explanation_id: str, row, refused: NotFound | None = None) -> None:
    """An explanation view: `row`, or `refused` with it: "not_found", or "denied" for someone
    else's explanation (NotYours; the caller is answered 404 all the same)."""
    if row is not None:
        outcome = "success"
    else:
        outcome = "denied" if isinstance(refused, NotYours) else "not_found"
    record_request(
        request,
        "explanation.view",
        outcome,
        target_type="explanation",
        target_id=explanation_id[:255],
        model_version=row.model_version if row is not None else None,
    )


def model_activated(request, version: str) -> AuditEvent:
    """For `registry.activate_version`: committed with the switch itself."""
    return request_event(
        request,
        "model.activate",
        "success",
        target_type="model",
        target_id=version[:255],
        model_version=version[:64],
    )
