"""model.recipe: one function trains a model on a case set and builds its checkpoint, from
what the case set carries (schema, ids, extractor, feature names, outlines)."""

from __future__ import annotations

import numpy as np
import pytest

from model.checkpoint import Checkpoint
from model.config import preset
from model.inference import Explainer
from model.recipe import INDEXING, SCORING, UntrainedError, train_checkpoint

pytestmark = pytest.mark.slow


def test_a_fold_of_lidc_becomes_a_checkpoint_that_records_its_own_cases(
    lidc_small, text_encoder, tmp_path
):
    view = lidc_small.subset(np.arange(0, len(lidc_small), 2))
    mcfg, tcfg = preset("lidc", epochs=2, val_fraction=0.3, patience=0, embed_dim=32)
    stages: list[str] = []
    ckpt, result = train_checkpoint(
        view, mcfg, tcfg, text_encoder, {"cohort": "half"}, on_stage=stages.append
    )
    assert stages == [SCORING, INDEXING]
    assert result.steps > 0 and ckpt.model is result.model
    assert ckpt.cases.cases["case_id"].tolist() == view.case_ids
    assert ckpt.meta["feature_extractor"] == lidc_small.feature_extractor is not None
    assert ckpt.meta["feature_ranges"]["names"] == lidc_small.feature_names
    assert ckpt.outlines is not None and set(ckpt.outlines.case_ids) <= set(view.case_ids)
    # the held-out validation patients are scored, with flat keys per field and read-out
    assert ckpt.meta["metrics"]["val/cases"] > 0
    assert {f"val/{name}/vote_macro_f1" for name in view.schema.field_names} <= set(
        ckpt.meta["metrics"]
    )
    # The held-out patients also decide where retrieval's vote joins the served answer (on
    # this half of the cohort: two fields). Saved and loaded, the checkpoint answers alike,
    # and the served answer reads its own texts whatever k is asked.
    served = ckpt.served
    assert served is not None and served.reads_votes, [f.readout for f in served.fields]
    loaded = Checkpoint.load(ckpt.save(tmp_path / "ckpt"))
    assert loaded.served is not None
    assert [f.vote_weight for f in loaded.served.fields] == [f.vote_weight for f in served.fields]
    for i in (0, 7):
        case = view.slices(i)
        answers = [
            Explainer(c).explain(case, k=k)["fields"] for c in (ckpt, loaded) for k in (1, 8)
        ]
        served_answers = [[f["served"] for f in fields] for fields in answers]
        assert all(a == served_answers[0] for a in served_answers)


def test_a_run_without_a_single_step_is_refused(lidc_small, text_encoder):
    mcfg, tcfg = preset("lidc", epochs=0, val_fraction=0.0, embed_dim=32)
    with pytest.raises(UntrainedError, match="no optimiser steps"):
        train_checkpoint(lidc_small, mcfg, tcfg, text_encoder, {})
