import itertools

import numpy as np
import pytest

from model.schema import UNKNOWN, Field, Schema, SchemaError, builtin_schema

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


def test_codes_survive_json_and_old_files_without_them_still_load(tmp_path):
    schema = builtin_schema("lidc")
    density = schema.field("density")
    assert density.code("solid") == ("http://radlex.org", "RID5741", "solid")
    assert density.code("part_solid")[1] == "RID46011"
    assert density.code("ground_glass")[1] == "RID46016"
    assert schema.field("malignancy").code("suspicious") is None  # text only
    assert density.code(None) is None
    schema.save(tmp_path / "schema.json")
    again = Schema.load(tmp_path / "schema.json")
    assert [f.codes for f in again.fields] == [f.codes for f in schema.fields]
    assert [f.concept for f in again.fields] == [f.concept for f in schema.fields]
    old = schema.to_dict()
    for f in old["fields"]:
        del f["codes"], f["concept"]
    loaded = Schema.from_dict(old)
    assert loaded == schema  # codes are not part of a schema's identity
    assert loaded.field("density").code("solid") is None


def test_codes_must_name_known_values_and_be_triples():
    with pytest.raises(SchemaError, match="codes for unknown values"):
        Field("f", "F", ("a",), ("A",), codes={"b": ("s", "c", "d")})
    with pytest.raises(SchemaError, match=r"\(system, code, display\)"):
        Field("f", "F", ("a",), ("A",), codes={"a": ("s", "c")})
