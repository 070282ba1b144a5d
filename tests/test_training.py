"""A real CPU training run on a small real LIDC subset."""

from itertools import pairwise

import numpy as np

from model.retrieval import top1_fields
from model.train import balanced_weights, embed_cases, embed_texts, split_by_patient


def test_training_lowers_the_loss(trained_small):
    result, _ = trained_small
    losses = result.history["train_loss"]
    # 12 epochs on 80 patients: the loss falls every epoch (by about a fifth in all; it is far
    # from its floor, so a model that stopped learning, or learned backwards, fails here)
    assert all(later < earlier for earlier, later in pairwise(losses)), losses
    assert losses[-1] < 0.9 * losses[0], losses


def test_retrieval_beats_the_majority_baseline_on_training_data(lidc_small, trained_small):
    result, ckpt = trained_small
    labels = lidc_small.labels
    image = embed_cases(result.model, lidc_small)
    sims = image @ ckpt.catalog.embeddings.T
    predicted = top1_fields(np.argsort(-sims, axis=1), ckpt.catalog.labels)
    model_accuracy = (predicted == labels).mean()
    majority = np.mean(
        [
            (labels[:, j] == np.bincount(labels[:, j]).argmax()).mean()
            for j in range(labels.shape[1])
        ]
    )
    assert model_accuracy > majority + 0.05, (model_accuracy, majority)


def test_catalog_holds_each_distinct_training_text_once(lidc_small, trained_small):
    _, ckpt = trained_small
    texts = lidc_small.texts()
    assert sorted(ckpt.catalog.texts) == sorted(set(texts))
    assert ckpt.catalog.counts.sum() == len(lidc_small)
    for text, row in zip(ckpt.catalog.texts, ckpt.catalog.labels, strict=True):
        assert lidc_small.schema.parse(text).tolist() == row.tolist()


def test_text_encoder_runs_once_per_distinct_text(lidc_small, text_encoder, trained_small):
    from model.encoders import TextTokenCache

    result, _ = trained_small
    cache = TextTokenCache(text_encoder, lidc_small.texts())
    assert len(cache.texts) == len(set(lidc_small.texts())) < len(lidc_small)
    emb = embed_texts(result.model, cache, cache.texts[:3])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


def test_validation_split_is_by_patient():
    patients = np.array(["a", "a", "b", "c", "c", "c", "d", "e"])
    train, val = split_by_patient(patients, 0.4, seed=1)
    assert set(patients[train]).isdisjoint(patients[val])
    assert len(train) + len(val) == len(patients)
    assert len(set(patients[val])) == 2


def test_balanced_weights_favour_rare_classes_and_skip_unknowns():
    labels = np.array([[0], [0], [0], [1], [-1]])
    w = balanced_weights(labels)
    assert w[3] == 3 * w[0] and w[4] == 0 and np.isclose(w.sum(), 1)


def test_both_architectures_train_with_masks_for_few_slices(lidc_small, text_encoder):
    from model.config import preset
    from model.train import train

    view = lidc_small.subset(np.arange(60))
    for arch in ("mlp", "attn"):
        mcfg, tcfg = preset("thesis", architecture=arch, embed_dim=32, ff_dim=64, epochs=1)
        result = train(view, mcfg, tcfg, text_encoder)
        emb = embed_cases(result.model, view)
        assert emb.shape == (60, 32) and np.isfinite(emb).all()
        # Padding must not change a case's embedding: alone vs. in a batch with longer cases.
        one = embed_cases(result.model, lidc_small.subset([0]))
        np.testing.assert_allclose(one[0], emb[0], atol=1e-5)


def test_device_defaults_to_cpu_and_cuda_is_never_required(trained_small):
    import pytest
    import torch

    from model.config import TrainConfig, config_from_dict
    from model.train import resolve_device

    # A train_config saved before the device setting existed loads as a CPU run.
    assert config_from_dict(TrainConfig, {"epochs": 3}).device == "cpu"
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")
    result, _ = trained_small
    assert result.model.device == torch.device("cpu")  # checkpoints stay CPU-only
