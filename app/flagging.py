"""Flag and correct: radiologists object to a field or a retrieved text, a reviewer accepts or
rejects, and accepted corrections (label overrides, hard-negative texts) feed training."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import paging, registry
from app.errors import Forbidden, InvalidInput, NotFound
from app.explanations.service import served_answer
from app.i18n import N_, Label
from app.tables import AuditEvent, Explanation, Flag, FlagReason, FlagStatus, User

CORRECTION_COLUMNS = (
    "flag_id",
    "explanation_id",
    "input_sha256",
    "model_version",
    "catalog_version",
    "kind",
    "field",
    "served_value",
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
        raise InvalidInput(
            N_("flag either one field or one retrieved text (give field or text_rank)")
        )
    corrected_value = (corrected_value or "").strip() or None
    flag = Flag(
        explanation_id=explanation.id,
        reason=reason,
        corrected_value=corrected_value,
        comment=comment,
        model_version=explanation.model_version,
        catalog_version=explanation.catalog_version,
        created_by=user.id,
        status=FlagStatus.open,
    )
    if field is not None:
        known = [f["field"] for f in explanation.result.get("fields") or []]
        if field not in known:
            raise InvalidInput(
                N_("the explanation has no field %(field)s; one of %(known)s"),
                field=repr(field),
                known=known,
            )
        if corrected_value is not None:
            allowed = registry.field_values(session, explanation.model_version).get(field, {})
            if corrected_value not in allowed:
                raise InvalidInput(
                    N_("%(value)s is not a value of %(field)s; allowed values: %(allowed)s"),
                    value=repr(corrected_value),
                    field=repr(field),
                    allowed=describe_values(allowed),
                )
        flag.target, flag.field = "field", field
    else:
        if corrected_value is not None:
            raise InvalidInput(N_("a flagged retrieved text takes no corrected value"))
        texts = {t["rank"]: t["text"] for t in explanation.result.get("texts") or []}
        if text_rank not in texts:
            raise InvalidInput(
                N_("the explanation has no retrieved text of rank %(rank)s"), rank=text_rank
            )
        flag.target, flag.text_rank, flag.text = "text", text_rank, texts[text_rank]
    session.add(flag)
    if audit_event is not None:
        session.flush()  # the flag's id, for its audit event in the same transaction
        session.add(audit_event(flag))
    session.commit()
    return flag


def describe_values(allowed: dict[str, str]) -> str:
    """`1 (Very subtle), 2 (Moderately subtle)`: the codes to send, with what they mean."""
    if not allowed:
        return "none (the model version's schema is not registered)"
    return ", ".join(f"{code} ({label})" for code, label in allowed.items())


def review_queue(
    session: Session,
    *,
    status: FlagStatus | None = None,
    field: str | None = None,
    model_version: str | None = None,
    reason: FlagReason | None = None,
    limit: int = 200,
    since: str = "",
    until: str = "",
    flagged_by: int | None = None,
    identity: Mapping[str, str] | None = None,
    after: str = "",
) -> list[Flag]:
    """Newest first, `limit` flags from the keyset cursor `after` (a flag id) on, filtered by
    status, field, model version, reason, UTC days (`since`/`until`, both included), who raised
    them and the flagged explanation's identity (IDENTITY_FIELDS, already validated)."""
    query = select(Flag).order_by(Flag.id.desc()).limit(limit)
    for column, value in (
        (Flag.status, status),
        (Flag.field, field),
        (Flag.model_version, model_version),
        (Flag.reason, reason),
        (Flag.created_by, flagged_by),
    ):
        if value is not None:
            query = query.where(column == value)
    if identity:
        query = query.join(Explanation, Explanation.id == Flag.explanation_id)
        for name, value in identity.items():
            query = query.where(getattr(Explanation, name) == value)
    query = query.where(*paging.in_day_range(Flag.created_at, since, until))
    if after:
        query = paging.after_id(query, Flag.id, after)
    return list(session.scalars(query))


def review(
    session: Session,
    flag_id: int,
    reviewer: User,
    accept: bool,
    note: str,
    audit_event: Callable[[Flag], AuditEvent] | None = None,
    audit_refusal: Callable[[Flag], AuditEvent] | None = None,
) -> Flag:
    """Separation of duties: whoever raised a flag (an admin too) never decides it; the
    refusal is audited (`audit_refusal`) before it is raised."""
    flag = session.get(Flag, flag_id)
    if flag is None:
        raise NotFound(N_("no flag %(id)s"), id=flag_id)
    if flag.created_by == reviewer.id:
        if audit_refusal is not None:
            session.add(audit_refusal(flag))
            session.commit()
        raise Forbidden(
            N_(
                "flag %(id)s was raised by you: another reviewer must accept or reject it "
                "(separation of duties)"
            ),
            id=flag_id,
        )
    if flag.status != FlagStatus.open:
        raise InvalidInput(
            N_("flag %(id)s was already %(status)s"), id=flag_id, status=Label(flag.status.value)
        )
    flag.status = FlagStatus.accepted if accept else FlagStatus.rejected
    flag.reviewed_by = reviewer.id
    flag.reviewed_at = datetime.now(UTC)
    flag.review_note = note
    if audit_event is not None:
        session.add(audit_event(flag))
    session.commit()
    return flag


def flags_of(session: Session, explanation_id: str) -> list[Flag]:
    """An explanation's flags, oldest first."""
    return list(
        session.scalars(select(Flag).where(Flag.explanation_id == explanation_id).order_by(Flag.id))
    )


def accepted_corrections(session: Session) -> list[dict[str, Any]]:
    """What the next training run reads: per accepted flag, the case (by input hash) and either
    a label override (field, a valid code of it) or a hard-negative text. Accepted field flags
    without a valid code of their version's schema are left out (see `skipped_corrections`)."""
    return partition_corrections(session)[0]


def skipped_corrections(session: Session) -> list[dict[str, Any]]:
    """Accepted field flags that cannot be trained on (no value, or one the schema of their
    model version does not have, e.g. free text from before the values were checked)."""
    return partition_corrections(session)[1]


def served_value(result: dict[str, Any], field: str) -> str | None:
    """The code a stored result served for `field`: its served read-out, or the vote in
    explanations from before it (`explaining.served_answer`)."""
    for evidence in result.get("fields", []):
        if evidence.get("field") == field:
            return served_answer(evidence).get("value")
    return None


def partition_corrections(session: Session) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(exported, skipped) accepted corrections; a skipped row says why in `skipped_because`."""
    rows = session.execute(
        select(Flag, Explanation.input_sha256, Explanation.result)
        .join(Explanation, Explanation.id == Flag.explanation_id)
        .where(Flag.status == FlagStatus.accepted)
        .order_by(Flag.id)
    )
    schemas: dict[str, dict[str, dict[str, str]]] = {}
    exported, skipped = [], []
    for flag, input_sha256, result in rows:
        row = {
            "flag_id": flag.id,
            "explanation_id": flag.explanation_id,
            "input_sha256": input_sha256,
            "model_version": flag.model_version,
            "catalog_version": flag.catalog_version,
            "kind": "label_override" if flag.target == "field" else "hard_negative",
            "field": flag.field,
            # what the reviewer saw and objected to: training starts from it
            "served_value": served_value(result, flag.field) if flag.field else None,
            "corrected_value": flag.corrected_value,
            "text": flag.text,
            "reason": flag.reason.value,
        }
        if flag.target == "field":
            if flag.model_version not in schemas:
                schemas[flag.model_version] = registry.field_values(session, flag.model_version)
            allowed = schemas[flag.model_version].get(flag.field or "", {})
            if flag.corrected_value is None:
                skipped.append({**row, "skipped_because": "no corrected value"})
                continue
            if flag.corrected_value not in allowed:
                why = f"{flag.corrected_value!r} is not a value of {flag.field!r}"
                skipped.append({**row, "skipped_because": why})
                continue
        exported.append(row)
    return exported, skipped


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
        assert field is not None  # create_flag: a "field" flag names its field
        per_field = rates.setdefault(version, {}).setdefault(
            field, {"flag_rate": 0.0, "accepted_rate": 0.0}
        )
        total = made.get(version) or 1
        per_field["flag_rate"] += n / total
        if status == FlagStatus.accepted:
            per_field["accepted_rate"] += n / total
    return rates
