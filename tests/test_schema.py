import itertools
import json

import numpy as np
import pytest

from model.datasets import builtin_schema
from model.schema import UNKNOWN, Schema, SchemaError

SCHEMAS = ["lidc", "lidc-ratings", "thesis"]


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_value_round_trips_through_text(name):
    schema = builtin_schema(name)
    base = np.zeros(len(schema.fields), np.int64)
    for j, f in enumerate(schema.fields):
        for k in [*range(len(f.values)), UNKNOWN]:
            labels = base.copy()
            labels[j] = k
            text = schema.text(labels)
            assert schema.parse(text).tolist() == labels.tolist(), text


@pytest.mark.parametrize("name", SCHEMAS)
def test_random_combinations_round_trip_and_texts_are_distinct(name):
    schema = builtin_schema(name)
    rng = np.random.default_rng(0)
    seen = {}
    for _ in range(300):
        labels = np.array([rng.integers(-1, len(f.values)) for f in schema.fields])
        text = schema.text(labels)
        assert schema.parse(text).tolist() == labels.tolist()
        seen.setdefault(text, labels.tolist())
        assert seen[text] == labels.tolist()  # one text per label vector


@pytest.mark.parametrize("name", SCHEMAS)
def test_schema_survives_json(tmp_path, name):
    schema = builtin_schema(name)
    schema.save(tmp_path / "schema.json")
    again = Schema.load(tmp_path / "schema.json")
    assert again == schema
    labels = np.zeros(len(schema.fields), np.int64)
    assert again.text(labels) == schema.text(labels)


def test_unknown_field_value_names_the_problem():
    schema = builtin_schema("lidc")
    with pytest.raises(SchemaError, match="unknown value 'fluffy' for field 'density'"):
        schema.encode({"density": "fluffy"})
    with pytest.raises(SchemaError, match=r"unknown field\(s\) \['colour'\]"):
        schema.encode({"colour": "red"})


def test_text_that_breaks_the_template_is_refused():
    schema = builtin_schema("lidc")
    with pytest.raises(SchemaError, match="does not follow the 'lidc' template"):
        schema.parse("Lung nodule of purple density")


def test_missing_values_decode_to_none():
    schema = builtin_schema("thesis")
    labels = schema.encode({"shape": "round", "necrosis": None})
    assert labels[0] == 0 and (labels[1:] == UNKNOWN).all()
    assert schema.decode(labels) == {
        "shape": "round",
        "density": None,
        "vinfiltration": None,
        "cdiff": None,
        "necrosis": None,
    }


def test_value_texts_are_one_clause_per_value():
    schema = builtin_schema("lidc")
    assert schema.value_texts("density") == [
        "ground-glass density",
        "part-solid density",
        "solid density",
    ]
    assert len(
        set(itertools.chain.from_iterable(schema.value_texts(f.name) for f in schema.fields))
    ) == sum(len(f.values) for f in schema.fields)


def test_table_columns_read_back_as_floats_still_encode():
    schema = builtin_schema("lidc-ratings")
    row = {f.source_column: 1.0 for f in schema.fields}
    row["rating_internal_structure"] = float("nan")
    labels = schema.encode_table([row])[0]
    assert labels[1] == UNKNOWN and (np.delete(labels, 1) == 0).all()


def test_standard_codes_live_in_the_schema_and_survive_json():
    schema = builtin_schema("lidc")
    density = schema.field("density")
    assert density.code("solid") == ("RADLEX", "RID5741", "solid")
    assert schema.field("shape").code("lobulated") == ("RADLEX", "RID5711", "lobulated margin")
    assert schema.field("margin").code("medium") is None  # no confident code: exporters' own
    again = Schema.from_dict(json.loads(json.dumps(schema.to_dict())))
    assert again == schema and again.field("density").code("solid") == density.code("solid")


def test_schemas_saved_before_codes_still_load_and_save_unchanged():
    old = builtin_schema("lidc").to_dict()
    for f in old["fields"]:
        f.pop("codes", None), f.pop("concept", None)
    schema = Schema.from_dict(old)
    assert schema.field("density").code("solid") is None
    assert schema.to_dict() == old


def test_codes_for_values_the_field_lacks_are_refused():
    d = builtin_schema("lidc").to_dict()
    d["fields"][0]["codes"] = {"fluffy": ["RADLEX", "RID1", "fluffy"]}
    with pytest.raises(SchemaError, match="codes for unknown values"):
        Schema.from_dict(d)
