"""The cohorts the package can build (LIDC-IDRI, the simulated thesis cohort) and the
descriptor schemas they bring.

:mod:`model.schema` stays a leaf that knows no dataset; a schema shipped with the package is
looked up here, by name.
"""

from __future__ import annotations

from model.schema import Schema, SchemaError

BUILTIN_SCHEMAS = ("lidc", "lidc-ratings", "thesis")  # the names `builtin_schema` knows


def builtin_schema(name: str) -> Schema:
    """The schemas shipped with the package (BUILTIN_SCHEMAS)."""
    from model.datasets import lidc, simulated  # the importers load only when a schema is asked

    schemas = {
        "lidc": lidc.binned_schema,
        "lidc-ratings": lidc.ratings_schema,
        "thesis": simulated.thesis_schema,
    }
    assert tuple(schemas) == BUILTIN_SCHEMAS
    if name not in schemas:
        raise SchemaError(f"unknown schema {name!r}; built in: {', '.join(schemas)}")
    return schemas[name]()
