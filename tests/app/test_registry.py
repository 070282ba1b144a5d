"""The model registry service: register, activate, the one active version, the swap."""

from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy.orm import Session

from app import registry
from app.db import make_engine, make_session_factory
from app.errors import CheckpointRejected, NotFound
from app.serving import ServingState


@pytest.fixture
def session(database):
    engine = make_engine(database)
    with make_session_factory(engine)() as session:
        yield session
    engine.dispose()


def test_register_then_activate(session: Session, small_checkpoints):
    row = registry.register_checkpoint(session, small_checkpoints.first)
    assert (row.version, row.catalog_version) == small_checkpoints.first_version
    assert row.config["feature_dim"] == 16 and row.schema_["fields"]
    assert not row.is_active and registry.get_active(session) is None
    # the same folder again is the same row
    assert registry.register_checkpoint(session, small_checkpoints.first).id == row.id

    state = ServingState()
    registry.activate_version(session, row.version, state)
    assert registry.get_active(session).version == row.version
    serving = state.current
    assert (serving.model_version, serving.catalog_version) == small_checkpoints.first_version


def test_activating_another_version_leaves_exactly_one_active(session, small_checkpoints):
    first = registry.register_checkpoint(session, small_checkpoints.first)
    second = registry.register_checkpoint(session, small_checkpoints.second)
    state = ServingState()
    registry.activate_version(session, first.version, state)
    old = state.current
    registry.activate_version(session, second.version, state)
    active = [r.version for r in registry.list_versions(session) if r.is_active]
    assert active == [second.version]
    assert (state.current.model_version, state.current.catalog_version) == (
        small_checkpoints.second_version
    )
    # whoever held the old Serving still has a complete, consistent one
    assert (old.model_version, old.catalog_version) == small_checkpoints.first_version
    assert old.explainer.checkpoint is old.checkpoint


def test_a_folder_that_does_not_load_is_never_registered(session, small_checkpoints, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(small_checkpoints.first, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointRejected, match="does not load"):
        registry.register_checkpoint(session, broken)
    with pytest.raises(CheckpointRejected, match="not a checkpoint folder"):
        registry.register_checkpoint(session, tmp_path / "missing")
    assert registry.is_empty(session)


def test_a_version_whose_folder_changed_is_not_activated(session, small_checkpoints, tmp_path):
    first = registry.register_checkpoint(session, small_checkpoints.first)
    state = ServingState()
    registry.activate_version(session, first.version, state)

    moved = tmp_path / "second"
    shutil.copytree(small_checkpoints.second, moved)
    second = registry.register_checkpoint(session, moved)
    meta = json.loads((moved / "checkpoint.json").read_text())
    meta["version"] = "something-else"
    (moved / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointRejected, match="registered as model"):
        registry.activate_version(session, second.version, state)
    assert registry.get_active(session).version == first.version
    assert state.current.model_version == first.version
    with pytest.raises(NotFound):
        registry.activate_version(session, "no-such-version", state)
