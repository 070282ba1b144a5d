import json

import numpy as np
import pytest

from model.checkpoint import Checkpoint, CheckpointError
from model.inference import Explainer
from model.train import embed_cases


def test_save_and_load_reproduce_outputs_exactly(tmp_path, lidc_small, trained_small):
    result, ckpt = trained_small
    folder = ckpt.save(tmp_path / "ckpt")
    loaded = Checkpoint.load(folder)
    before = embed_cases(result.model, lidc_small)
    after = embed_cases(loaded.model, lidc_small)
    np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(ckpt.catalog.embeddings, loaded.catalog.embeddings)
    assert loaded.catalog.version == ckpt.catalog.version
    case = lidc_small.slices(3)
    assert Explainer(ckpt).explain(case) == Explainer(loaded).explain(case)


def test_checkpoint_explains_itself_and_holds_no_pickle(tmp_path, trained_small):
    _, ckpt = trained_small
    folder = ckpt.save(tmp_path / "ckpt")
    meta = json.loads((folder / "checkpoint.json").read_text())
    assert meta["model_config"]["architecture"] == "attn"
    assert meta["schema"]["name"] == "lidc"
    assert meta["text_encoder"]["revision"] and meta["text_encoder"]["name"]
    assert meta["catalog_version"] == ckpt.catalog.version
    # the served read-out's chosen C per field, saved beside its weights
    assert set(meta["served"]["C"]) == {f["name"] for f in meta["schema"]["fields"]}
    assert sorted(p.name for p in folder.iterdir()) == [
        "cases.csv",
        "cases.faiss",
        "cases.json",
        "catalog.faiss",
        "catalog.json",
        "checkpoint.json",
        "model.safetensors",
        "outlines.npz",  # the LIDC cases' contours, to draw them as similar cases
        "served.safetensors",
        "zeroshot.safetensors",
    ]


def test_loaded_text_head_reembeds_the_catalog(tmp_path, trained_small):
    from model.encoders import TextTokenCache
    from model.train import embed_texts

    _, ckpt = trained_small
    loaded = Checkpoint.load(ckpt.save(tmp_path / "ckpt"))
    cache = TextTokenCache(loaded.text_encoder(), loaded.catalog.texts)
    again = embed_texts(loaded.model, cache, loaded.catalog.texts)
    np.testing.assert_allclose(again, loaded.catalog.embeddings, atol=1e-5)


def test_existing_folder_is_never_overwritten(tmp_path, trained_small):
    _, ckpt = trained_small
    ckpt.save(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="already exists"):
        ckpt.save(tmp_path / "ckpt")


def test_a_folder_without_checkpoint_json_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        Checkpoint.load(tmp_path)
