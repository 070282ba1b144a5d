"""The optional identity of an uploaded case: DICOM study/series UIDs, a nodule label and a
patient pseudonym. Never required; when given, each must have its documented form."""

from __future__ import annotations

import re
from collections.abc import Mapping

from app.errors import InvalidInput
from app.i18n import N_, Label

# DICOM PS3.5 9.1: digits and dots, no leading zero in a component, at most 64 characters.
UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._#/-]{0,63}")
PSEUDONYM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
UID_FORM = N_("a DICOM UID: digits and dots, at most 64 characters")
FORMS: dict[str, tuple[re.Pattern[str], str]] = {
    "study_instance_uid": (UID, UID_FORM),
    "series_instance_uid": (UID, UID_FORM),
    "nodule_label": (LABEL, N_("letters, digits, space and . _ # / -, at most 64 characters")),
    "patient_pseudonym": (PSEUDONYM, N_("letters, digits and . _ -, at most 64 characters")),
}
FIELDS = tuple(FORMS)


def parse_identity(values: Mapping[str, object]) -> dict[str, str]:
    """The identity fields present in `values` (empty ones skipped), each checked."""
    identity = {}
    for name, (pattern, form) in FORMS.items():
        value = values.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise InvalidInput(
                N_("%(name)s must be a string (%(form)s)"), name=name, form=Label(form)
            )
        value = value.strip()
        if len(value) > 64 or not pattern.fullmatch(value):
            shown = value if len(value) <= 70 else value[:70] + "..."
            raise InvalidInput(
                N_("%(name)s %(value)s is not valid: expected %(form)s"),
                name=name,
                value=repr(shown),
                form=Label(form),
            )
        identity[name] = value
    return identity
