"""Descriptor schemas: the fields a cohort describes, their texts, and the way back from text.

A schema is plain data (saved as JSON beside every cohort and checkpoint). It turns a case's
descriptor codes into the sentence the text encoder reads, and parses such a sentence back into
codes; the two are exact inverses (tested for every value of every field).

Missing values are their own state: code ``UNKNOWN`` (-1) in label matrices, ``None`` in
descriptor dicts, and ``unknown_label`` ("not assessed") in texts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

UNKNOWN = -1  # label-matrix code of a missing value


class SchemaError(ValueError):
    """A descriptor, text or schema file that does not fit the schema."""


@dataclass(frozen=True)
class Field:
    name: str  # key in descriptor dicts and the template, e.g. "density"
    label: str  # human name of the field, e.g. "Nodule density"
    values: tuple[str, ...]  # stored codes, in order (the order is the class index)
    value_labels: tuple[str, ...]  # human label per code, as shown in texts and the UI
    clause: str = "{value}"  # this field's part of the sentence; also its zero-shot text
    ordinal: bool = False  # codes are ordered (±1 accuracy and weighted kappa apply)
    column: str = ""  # column of the cohort table holding the code; defaults to `name`
    # Standard codes, for DICOM SR and FHIR exports: value -> (scheme, code, display), the
    # scheme as a DICOM Coding Scheme Designator ("RADLEX", "SCT", "NCIt"); values without
    # a confident standard code are left out (exporters fall back to a private scheme).
    codes: Mapping[str, tuple[str, str, str]] = field(default_factory=dict, hash=False)
    concept: tuple[str, str, str] | None = None  # the field itself (scheme, code, display)

    def __post_init__(self) -> None:
        # from JSON, codes arrive as lists: kept as tuples so a saved schema loads back equal
        object.__setattr__(
            self, "codes", {str(v): _code(c, self.name) for v, c in dict(self.codes).items()}
        )
        if self.concept is not None:
            object.__setattr__(self, "concept", _code(self.concept, self.name))
        unknown = set(self.codes) - set(self.values)
        if unknown:
            raise SchemaError(f"field {self.name!r}: codes for unknown values {sorted(unknown)}")
        if len(self.values) != len(self.value_labels):
            raise SchemaError(
                f"field {self.name!r}: {len(self.values)} values but "
                f"{len(self.value_labels)} labels"
            )
        if len(set(self.values)) != len(self.values):
            raise SchemaError(f"field {self.name!r}: duplicate values")
        if len(set(self.value_labels)) != len(self.value_labels):
            raise SchemaError(f"field {self.name!r}: duplicate value labels")
        if "{value}" not in self.clause:
            raise SchemaError(f"field {self.name!r}: clause must contain {{value}}")

    @property
    def source_column(self) -> str:
        return self.column or self.name

    def code_index(self, code: str | None) -> int:
        """Class index of a stored code; ``UNKNOWN`` for None/empty."""
        if code is None or code == "":
            return UNKNOWN
        try:
            return self.values.index(str(code))
        except ValueError:
            raise SchemaError(
                f"unknown value {code!r} for field {self.name!r}; allowed: {', '.join(self.values)}"
            ) from None

    def lookup(self, value: str | None) -> int | None:
        """Class index of a value given as its code or its label, any case; None if neither."""
        if value is None:
            return None
        wanted = value.strip().lower()
        for i, (code, label) in enumerate(zip(self.values, self.value_labels, strict=True)):
            if wanted in (str(code).lower(), str(label).lower()):
                return i
        return None

    def code(self, value: str) -> tuple[str, str, str] | None:
        """(scheme, code, display) of a stored value, or None where it has no standard code."""
        return self.codes.get(value)

    def text_for(self, index: int, unknown_label: str) -> str:
        label = unknown_label if index == UNKNOWN else self.value_labels[index]
        return self.clause.format(value=label)


def _code(code: object, field_name: str) -> tuple[str, str, str]:
    if not (isinstance(code, (tuple, list)) and len(code) == 3):
        raise SchemaError(f"field {field_name!r}: a code is (scheme, code, display), got {code!r}")
    if not all(isinstance(part, str) and part for part in code):
        raise SchemaError(f"field {field_name!r}: a code is three non-empty strings: {code!r}")
    return (code[0], code[1], code[2])


@dataclass(frozen=True)
class Schema:
    name: str  # e.g. "lidc"
    fields: tuple[Field, ...]  # the described fields, in template order
    template: str  # sentence with one {field_name} placeholder per field
    unknown_label: str = "not assessed"  # how a missing value reads in a text
    description: str = ""  # one line for reports
    _pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise SchemaError(f"schema {self.name!r}: duplicate field names")
        placeholders = re.findall(r"{(\w+)}", self.template)
        if sorted(placeholders) != sorted(names):
            raise SchemaError(
                f"schema {self.name!r}: template placeholders {placeholders} do not match "
                f"fields {names}"
            )
        object.__setattr__(self, "_pattern", self._build_pattern())

    # --- lookup ---------------------------------------------------------------------------
    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def class_counts(self) -> list[int]:
        """Classes per field, in field order (the sizes of the per-field heads)."""
        return [len(f.values) for f in self.fields]

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise SchemaError(
            f"schema {self.name!r} has no field {name!r}; fields: {', '.join(self.field_names)}"
        )

    # --- descriptors <-> label codes ------------------------------------------------------
    def encode(self, descriptors: Mapping[str, str | None]) -> np.ndarray:
        """Descriptor dict (codes or None) -> int label vector, UNKNOWN for missing."""
        extra = set(descriptors) - set(self.field_names)
        if extra:
            raise SchemaError(f"unknown field(s) {sorted(extra)} for schema {self.name!r}")
        return np.array([f.code_index(descriptors.get(f.name)) for f in self.fields], np.int64)

    def decode(self, labels: Sequence[int]) -> dict[str, str | None]:
        if len(labels) != len(self.fields):
            raise SchemaError(f"expected {len(self.fields)} labels, got {len(labels)}")
        out: dict[str, str | None] = {}
        for f, i in zip(self.fields, labels, strict=True):
            i = int(i)
            if i != UNKNOWN and not 0 <= i < len(f.values):
                raise SchemaError(f"label {i} out of range for field {f.name!r}")
            out[f.name] = None if i == UNKNOWN else f.values[i]
        return out

    def encode_table(self, rows: Sequence[Mapping[str, object]]) -> np.ndarray:
        """Rows of a cohort table -> [n, fields] label matrix, reading each field's column."""
        labels = np.empty((len(rows), len(self.fields)), np.int64)
        for j, f in enumerate(self.fields):
            col = f.source_column
            for i, row in enumerate(rows):
                value = row.get(col)
                if isinstance(value, float):
                    # CSV readers turn an integer column with gaps into floats: 3.0 is code "3".
                    value = (
                        None if np.isnan(value) else (int(value) if value.is_integer() else value)
                    )
                labels[i, j] = f.code_index(None if value is None else str(value))
        return labels

    def value_columns(self, labels: np.ndarray) -> dict[str, list[str]]:
        """A [n, fields] label matrix as one column of stored codes per field ("" = unknown),
        the descriptor columns of a case table."""
        return {
            f.name: [f.values[v] if v >= 0 else "" for v in labels[:, j]]
            for j, f in enumerate(self.fields)
        }

    # --- labels <-> text --------------------------------------------------------------------
    def text(self, labels: Sequence[int]) -> str:
        """The sentence for one case's label vector."""
        self.decode(labels)  # validates
        parts = {
            f.name: f.text_for(int(i), self.unknown_label)
            for f, i in zip(self.fields, labels, strict=True)
        }
        return self.template.format(**parts)

    def parse(self, text: str) -> np.ndarray:
        """Exact inverse of :meth:`text`."""
        assert self._pattern is not None
        m = self._pattern.fullmatch(text.strip())
        if m is None:
            raise SchemaError(f"text does not follow the {self.name!r} template: {text!r}")
        out = np.empty(len(self.fields), np.int64)
        for j, f in enumerate(self.fields):
            label = m.group(f"f{j}")
            out[j] = UNKNOWN if label == self.unknown_label else f.value_labels.index(label)
        return out

    def value_texts(self, field_name: str) -> list[str]:
        """One text per value of a field (zero-shot prompts), in class order."""
        f = self.field(field_name)
        return [f.text_for(i, self.unknown_label) for i in range(len(f.values))]

    def _build_pattern(self) -> re.Pattern[str]:
        pieces = re.split(r"({\w+})", self.template)
        index = {f.name: j for j, f in enumerate(self.fields)}
        regex = ""
        for piece in pieces:
            m = re.fullmatch(r"{(\w+)}", piece)
            if m is None:
                regex += re.escape(piece)
                continue
            j = index[m.group(1)]
            f = self.fields[j]
            options = sorted([*f.value_labels, self.unknown_label], key=len, reverse=True)
            alternatives = "|".join(re.escape(o) for o in options)
            before, after = f.clause.split("{value}")
            regex += f"{re.escape(before)}(?P<f{j}>{alternatives}){re.escape(after)}"
        return re.compile(regex)

    # --- persistence ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "template": self.template,
            "unknown_label": self.unknown_label,
            "fields": [_field_dict(f) for f in self.fields],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> Schema:
        try:
            fields = tuple(
                Field(
                    **{**f, "values": tuple(f["values"]), "value_labels": tuple(f["value_labels"])}
                )
                for f in d["fields"]
            )
            return cls(
                name=d["name"],
                fields=fields,
                template=d["template"],
                unknown_label=d.get("unknown_label", "not assessed"),
                description=d.get("description", ""),
            )
        except (KeyError, TypeError) as e:
            raise SchemaError(f"malformed schema: {e}") from e

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Schema:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _field_dict(f: Field) -> dict:
    """A field as JSON; without codes, exactly as schemas were saved before they had any."""
    d = asdict(f)
    if not f.codes:
        del d["codes"]
    if f.concept is None:
        del d["concept"]
    return d
