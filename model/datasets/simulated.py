"""A simulated hospital cohort with the thesis's five descriptors (for demos and scale tests).

Everything generated here is labelled simulated (cohort.simulated = True, name "simulated-...").
"""

from __future__ import annotations

from model.schema import Field, Schema


def thesis_schema() -> Schema:
    """The thesis's five descriptors: nodule shape, nodule density, vascular infiltration,
    cell differentiation and necrosis."""
    fields = (
        Field("shape", "Nodule shape", ("round", "lobulated", "spiculated", "irregular"),
              ("round", "lobulated", "spiculated", "irregular"), "{value} nodule"),
        Field("density", "Nodule density", ("solid", "part_solid", "ground_glass"),
              ("solid", "part-solid", "ground-glass"), "{value} density"),
        Field("vinfiltration", "Vascular infiltration", ("absent", "present"),
              ("absent", "present"), "vascular infiltration {value}"),
        Field("cdiff", "Cell differentiation", ("well", "moderate", "poor"),
              ("well differentiated", "moderately differentiated", "poorly differentiated"),
              "{value} cells", ordinal=True),
        Field("necrosis", "Necrosis", ("absent", "present"), ("absent", "present"),
              "necrosis {value}"),
    )
    template = "A {shape} of {density}; {vinfiltration}; {cdiff}; {necrosis}."
    return Schema("thesis", fields, template,
                  description="SIMULATED cohort with the thesis's five descriptors")
