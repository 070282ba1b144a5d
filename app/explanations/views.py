"""What the clinician's screen shows: example files and explanations turned into view data.

The routes in `app.routes.pages` only pick a template; everything they render comes from here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import registry
from app.errors import NotFound
from app.explanations import drawing
from app.explanations.service import (
    ExplanationInput,
    features_from_file,
    header_of,
    served_answer,
)
from app.i18n import N_, gettext, read_back
from app.tables import Explanation, Flag, User
from model.outline import OutlineStore
from model.segmentation import from_contours
from model.validation import InputError

EXAMPLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.npy$")


# --- example files --------------------------------------------------------------------------
def examples_dir(data_dir: Path) -> Path:
    """Where `clipmed demo` writes held-out LIDC cases as feature files."""
    return Path(data_dir) / "examples"


def list_examples(data_dir: Path) -> list[str]:
    """Names of the example .npy files, sorted; none when the folder is missing."""
    folder = examples_dir(data_dir)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and EXAMPLE_NAME.match(p.name))


def load_example(data_dir: Path, name: str, k: int) -> ExplanationInput:
    """One listed example; NotFound for any other name (no path tricks). Where `clipmed demo`
    also wrote the read's contours, the example is explained from them (so it is drawn)."""
    if name not in list_examples(data_dir):
        raise NotFound(N_("no example named %(name)s"), name=repr(name))
    path = examples_dir(data_dir) / name
    contours = path.with_name(path.stem + ".contours.json")
    if contours.is_file():
        try:
            segmentation = from_contours(json.loads(contours.read_text()))
        except (InputError, ValueError):
            segmentation = None  # a read drawn broken: fall back to its features
        if segmentation is not None:
            return ExplanationInput(segmentation.features, k, segmentation)
    data = path.read_bytes()
    return ExplanationInput(features_from_file(data, name), k, header=header_of(data, name))


# --- explanations as view data --------------------------------------------------------------
@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    pct: int  # width of the bar in percent, 0..100


@dataclass(frozen=True)
class FieldView:
    name: str
    label: str
    value_label: str | None  # the served answer
    probability_pct: int  # its calibrated probability (the vote share in older explanations)
    calibrated: bool
    vote_label: str | None
    share_pct: int  # the vote's share
    top1_label: str | None
    zero_shot: list[Bar]
    head: list[Bar] | None
    values: tuple[tuple[str, str], ...] = ()  # (code, label) per valid value, for corrections


@dataclass(frozen=True)
class SliceBar:
    slice: int
    value: float
    x: float
    height: float


@dataclass(frozen=True)
class SliceChart:
    title: str  # "Slice attention" or "Slice evidence"
    description: str
    bars: list[SliceBar]
    width: int
    height: int


def pct(value: float) -> int:
    """A 0..1 score as a bar width in percent, clamped."""
    return int(round(min(max(float(value), 0.0), 1.0) * 100))


def value_labels(session: Session, model_version: str) -> dict[str, dict[str, str]]:
    """{field: {code: human label}} from the registered schema of the version that answered."""
    return registry.field_values(session, model_version)


def _distribution(scores: dict[str, float], labels: dict[str, str]) -> list[Bar]:
    return [Bar(labels.get(code, code), float(p), pct(p)) for code, p in scores.items()]


def slice_chart(result: dict[str, Any]) -> SliceChart | None:
    """Attention weights when the model has them, else each slice's evidence (its similarity
    to the best text); bar heights are relative to the range of the values."""
    attention = result.get("slice_attention")
    if attention:
        points = [(int(a["slice"]), float(a["weight"])) for a in attention]
        title = N_("Slice attention")
        description = N_(
            "How much each slice contributed to the case embedding (attention weight)."
        )
    else:
        evidence = result.get("slice_evidence") or []
        points = [(int(e["slice"]), float(e["similarity"])) for e in evidence]
        title = N_("Slice evidence")
        description = N_("How closely each slice, on its own, matches the best-ranked text.")
    if not points:
        return None
    step, chart_height, floor = 12, 60, 2.0
    # From min(0, lowest) to max(0, highest): similarities may be negative; every slice keeps
    # a sliver so none disappears.
    low = min(0.0, *(v for _, v in points))
    high = max(0.0, *(v for _, v in points))
    span = (high - low) or 1.0
    bars = [
        SliceBar(
            s, v, i * step + 1, round(floor + (v - low) / span * (chart_height - 2 * floor), 2)
        )
        for i, (s, v) in enumerate(points)
    ]
    return SliceChart(title, description, bars, len(points) * step, chart_height)


# model.inference's low-confidence reasons (stored in English with the explanation), shown in
# the reader's language; tests/app/test_i18n.py checks that they are the model's words.
LOW_CONFIDENCE_REASONS = (
    N_("best similarity %(best)s is under %(threshold)s, which 90%% of the training cases reach"),
    N_("probability under %(probability)s for %(fields)s"),
    N_("split vote on %(fields)s"),
)


def shown_reason(reason: str, field_labels: dict[str, str] | None = None) -> str:
    """A stored low-confidence reason in the reader's language (as stored, when not ours),
    the fields it names by their labels."""
    found = read_back(reason, LOW_CONFIDENCE_REASONS)
    if found is None:
        return reason
    message, values = found
    if "fields" in values and field_labels:
        named = (field_labels.get(name, name) for name in values["fields"].split(", "))
        values["fields"] = ", ".join(gettext(label) for label in named)
    return gettext(message) % values


def explanation_view(
    session: Session, row: Explanation, outlines: OutlineStore | None = None
) -> dict[str, Any]:
    """Everything the results fragment renders, with LIDC's labels in place of codes;
    `outlines` (the active checkpoint's training cases) draws the similar cases."""
    result = row.result
    labels = value_labels(session, row.model_version)
    fields = []
    for f in result.get("fields", []):
        codes = labels.get(f["field"], {})
        vote = f.get("vote", {})
        head = f.get("head")
        served = served_answer(f)
        fields.append(
            FieldView(
                name=f["field"],
                label=f.get("label") or f["field"],
                value_label=served.get("label"),
                probability_pct=pct(served.get("probability", 0.0)),
                calibrated=bool(served.get("calibrated")),
                vote_label=vote.get("label"),
                share_pct=pct(vote.get("share", 0.0)),
                top1_label=(f.get("top1") or {}).get("label"),
                zero_shot=_distribution(f.get("zero_shot", {}), codes),
                head=_distribution(head, codes) if head else None,
                values=tuple(codes.items()),
            )
        )
    field_labels = {f.name: f.label for f in fields}
    texts = [{**t, "pct": pct(t["similarity"])} for t in result.get("texts", [])]
    chart = slice_chart(result)
    similar_cases = result.get("similar_cases", [])
    return {
        "row": row,
        "result": result,
        "texts": texts,
        "fields": fields,
        "field_labels": field_labels,
        "chart": chart,
        "similar_cases": similar_cases,
        "outline": case_outline(row, chart),
        "similar_outlines": similar_outlines(similar_cases, outlines),
        "low_confidence_reasons": [
            shown_reason(r, field_labels) for r in result.get("low_confidence_reasons", [])
        ],
    }


# --- flags as view data ----------------------------------------------------------------------
@dataclass(frozen=True)
class FlagView:
    flag: Flag
    flagged_by: str  # the username
    served: str | None  # what the model answered for the flagged field (its label)
    proposed: str | None  # the correct value proposed (its label; the code when unknown)


def flag_views(session: Session, flags: list[Flag]) -> list[FlagView]:
    """What a reviewer needs to decide a flag: who raised it, what the model served (its
    served read-out; the vote in older explanations) and what is proposed instead."""
    if not flags:
        return []
    names = dict(
        session.execute(
            select(User.id, User.username).where(User.id.in_({f.created_by for f in flags}))
        ).all()
    )
    results: dict[str, dict[str, Any]] = dict(
        session.execute(
            select(Explanation.id, Explanation.result).where(
                Explanation.id.in_({f.explanation_id for f in flags})
            )
        ).all()
    )
    labels = {v: value_labels(session, v) for v in {f.model_version for f in flags}}
    views = []
    for flag in flags:
        served = None
        if flag.field is not None:
            fields = (results.get(flag.explanation_id) or {}).get("fields") or []
            evidence = next((f for f in fields if f.get("field") == flag.field), None)
            if evidence is not None:
                answer = served_answer(evidence)
                served = answer.get("label") or answer.get("value")
        codes = labels[flag.model_version].get(flag.field or "", {})
        proposed = codes.get(flag.corrected_value or "", flag.corrected_value)
        views.append(FlagView(flag, names.get(flag.created_by, "?"), served, proposed))
    return views


# --- outlines ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaseOutline:
    drawing: drawing.OutlineDrawing | None
    missing: str | None  # why there is no picture, said plainly


NO_OUTLINE_FEATURES = N_(
    "This case was uploaded as features; send contours, a mask or a DICOM SEG to see its outline."
)
NO_OUTLINE_TRAINING = N_("No outline is kept for this training case.")


def case_outline(row: Explanation, chart: SliceChart | None) -> CaseOutline:
    """The uploaded nodule per slice, each panel over its bar of the slice chart."""
    kind = getattr(row, "input_kind", "features")  # rows stored before outlines were kept
    stored = getattr(row, "outline", None)
    if kind == "features" or not stored:
        why = NO_OUTLINE_FEATURES if kind == "features" else N_("No outline was stored.")
        return CaseOutline(None, why)
    evidence = None
    if chart is not None:
        kind = "attention" if chart.title == "Slice attention" else "evidence"
        evidence = drawing.evidence_from_bars(chart.bars, chart.height, kind)
    drawn = drawing.draw_outline(stored, evidence=evidence, subject=gettext("this nodule"))
    return CaseOutline(drawn, None if drawn else N_("The stored outline could not be drawn."))


def similar_outlines(
    similar_cases: list[dict[str, Any]], outlines: OutlineStore | None
) -> dict[str, CaseOutline]:
    """{case_id: its drawing} for the similar cases: a few middle slices, small."""
    views = {}
    for c in similar_cases:
        case_id = str(c.get("case_id"))
        outline = outlines.get(case_id) if outlines is not None else None
        drawn = drawing.draw_outline(
            outline,
            panel=56,
            max_panels=5,
            middle=True,
            subject=gettext("training case %(id)s") % {"id": case_id},
            css_class="outline small",
        )
        views[case_id] = CaseOutline(drawn, None if drawn else NO_OUTLINE_TRAINING)
    return views
