"""Flag and correct: radiologists object to a field or a retrieved text, a reviewer accepts or
rejects, and accepted corrections (label overrides, hard-negative texts) feed training."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import InvalidInput, NotFound
from app.models import AuditEvent, Explanation, Flag, FlagReason, FlagStatus, User

CORRECTION_COLUMNS = (
    "flag_id",
    "explanation_id",
    "input_sha256",
    "model_version",
    "catalog_version",
    "kind",
    "field",
    "corrected_value",
    "text",
    "reason",
)


def create_flag(
    session: Session,
    explanation: Explanation,
    user: User,
    *,
    field: str | None,
    text_rank: int | None,
    reason: FlagReason,
    corrected_value: str | None,
    comment: str,
    audit_event: Callable[[Flag], AuditEvent] | None = None,
) -> Flag:
    """Exactly one of `field` (a field of the explanation) or `text_rank` (a retrieved text)."""
    if (field is None) == (text_rank is None):
        raise InvalidInput("flag either one field or one retrieved text (give field or text_rank)")
    flag = Flag(
        explanation_id=explanation.id,
        reason=reason,
        corrected_value=(corrected_value or "").strip() or None,
        comment=comment,
        model_version=explanation.model_version,
        catalog_version=explanation.catalog_version,
        created_by=user.id,
        status=FlagStatus.open,
    )
    if field is not None:
        known = [f["field"] for f in explanation.result.get("fields") or []]
        if field not in known:
            raise InvalidInput(f"the explanation has no field {field!r}; one of {known}")
        flag.target, flag.field = "field", field
    else:
        texts = {t["rank"]: t["text"] for t in explanation.result.get("texts") or []}
        if text_rank not in texts:
            raise InvalidInput(f"the explanation has no retrieved text of rank {text_rank}")
        flag.target, flag.text_rank, flag.text = "text", text_rank, texts[text_rank]
    session.add(flag)
    if audit_event is not None:
        session.flush()  # the flag's id, for its audit event in the same transaction
        session.add(audit_event(flag))
    session.commit()
    return flag


def review_queue(
    session: Session,
    *,
    status: FlagStatus | None = None,
    field: str | None = None,
    model_version: str | None = None,
    reason: FlagReason | None = None,
    limit: int = 200,
) -> list[Flag]:
    query = select(Flag).order_by(Flag.id.desc()).limit(limit)
    for column, value in (
        (Flag.status, status),
        (Flag.field, field),
        (Flag.model_version, model_version),
        (Flag.reason, reason),
    ):
        if value is not None:
            query = query.where(column == value)
    return list(session.scalars(query))


def review(
    session: Session,
    flag_id: int,
    reviewer: User,
    accept: bool,
    note: str,
    audit_event: Callable[[Flag], AuditEvent] | None = None,
) -> Flag:
    flag = session.get(Flag, flag_id)
    if flag is None:
        raise NotFound(f"no flag {flag_id}")
    if flag.status != FlagStatus.open:
        raise InvalidInput(f"flag {flag_id} was already {flag.status.value}")
    flag.status = FlagStatus.accepted if accept else FlagStatus.rejected
    flag.reviewed_by = reviewer.id
    flag.reviewed_at = datetime.now(UTC)
    flag.review_note = note
    if audit_event is not None:
        session.add(audit_event(flag))
    session.commit()
    return flag


def accepted_corrections(session: Session) -> list[dict[str, Any]]:
    """What the next training run reads: per accepted flag, the case (by input hash) and either
    a label override (field, corrected value) or a hard-negative text."""
    rows = session.execute(
        select(Flag, Explanation.input_sha256)
        .join(Explanation, Explanation.id == Flag.explanation_id)
        .where(Flag.status == FlagStatus.accepted)
        .order_by(Flag.id)
    )
    return [
        {
            "flag_id": flag.id,
            "explanation_id": flag.explanation_id,
            "input_sha256": input_sha256,
            "model_version": flag.model_version,
            "catalog_version": flag.catalog_version,
            "kind": "label_override" if flag.target == "field" else "hard_negative",
            "field": flag.field,
            "corrected_value": flag.corrected_value,
            "text": flag.text,
            "reason": flag.reason.value,
        }
        for flag, input_sha256 in rows
    ]


def rates_by_model(session: Session) -> dict[str, dict[str, dict[str, float]]]:
    """Per model version and field: flags and accepted corrections per explanation made by it,
    so a new version can be compared with the one before it."""
    made = dict(
        session.execute(
            select(Explanation.model_version, func.count()).group_by(Explanation.model_version)
        ).all()
    )
    counts = session.execute(
        select(Flag.model_version, Flag.field, Flag.status, func.count())
        .where(Flag.target == "field")
        .group_by(Flag.model_version, Flag.field, Flag.status)
    ).all()
    rates: dict[str, dict[str, dict[str, float]]] = {}
    for version, field, status, n in counts:
        per_field = rates.setdefault(version, {}).setdefault(
            field, {"flag_rate": 0.0, "accepted_rate": 0.0}
        )
        total = made.get(version) or 1
        per_field["flag_rate"] += n / total
        if status == FlagStatus.accepted:
            per_field["accepted_rate"] += n / total
    return rates
