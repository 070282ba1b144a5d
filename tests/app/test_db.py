"""app.db: what the engines write into JSON columns."""

from __future__ import annotations

import json
import math

from sqlalchemy import JSON, Column, Integer, MetaData, Table, insert, select, text

from app.db import json_text, make_engine

VALUES = [
    {"texts": [{"rank": 1, "similarity": 0.8123, "descriptors": {"margin": "≥ 2 mm"}}]},
    {"tally": {"1": 0.25, "2": 0.75}, "tiny": 1e-9, "large": 1e16, "zero": -0.0},
    [1, 2.5, "é", None, True, {"nested": [[]]}, 10**30],
]


def test_json_text_reads_back_as_json_dumps_would():
    for value in VALUES:
        assert json.loads(json_text(value)) == json.loads(json.dumps(value)) == value
    # NaN and infinities as json.dumps writes them (JSON has none): read back by json.loads
    back = json.loads(json_text({"nan": math.nan, "inf": math.inf, "-inf": -math.inf}))
    assert math.isnan(back["nan"]) and back["inf"] == math.inf and back["-inf"] == -math.inf


def test_json_columns_round_trip_through_the_engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'json.db'}")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("v", JSON))
    table.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(table), [{"id": i, "v": v} for i, v in enumerate(VALUES)])
    with engine.connect() as connection:
        assert [row.v for row in connection.execute(select(table).order_by(table.c.id))] == VALUES
        stored = connection.execute(text("SELECT v FROM t WHERE id = 0")).scalar_one()
    engine.dispose()
    assert stored == json_text(VALUES[0]) and "≥" in stored  # compact, characters as they are
