"""Reader-aware targets and per-nodule scores: hand-computed cases, and training with them."""

import math

import numpy as np
import pytest
import torch

from model.loss import clip_loss, multitask_loss, reader_positives
from model.readers import nodule_scores, reader_distributions

# two nodules: A read three times (values 0, 0, 1; one unknown in field 2), B once
LABELS = np.array([[0, 1], [0, -1], [1, 1], [2, 0]])
NODULES = np.array(["A", "A", "A", "B"])


def test_each_read_gets_its_nodules_distribution_of_known_values():
    density, second = reader_distributions(LABELS, NODULES, [3, 2])
    np.testing.assert_allclose(density[:3], [[2 / 3, 1 / 3, 0]] * 3)
    np.testing.assert_allclose(density[3], [0, 0, 1])
    np.testing.assert_allclose(second[:3], [[0, 1]] * 3)  # the unknown read takes no part
    none = reader_distributions(np.array([[-1]]), np.array(["C"]), [2])[0]
    np.testing.assert_array_equal(none, [[0, 0]])


def test_nodule_agreement_and_the_nll_of_the_readers():
    dist = np.array([[0.6, 0.4, 0.0], [0.2, 0.8, 0.0], [0.4, 0.6, 0.0], [0.1, 0.1, 0.8]])
    out = nodule_scores(LABELS[:, 0], NODULES, dist.argmax(1), dist)
    # A: mean (0.4, 0.6, 0) answers 1, readers' majority 0; B: answers 2, reader 2
    assert out["nodule_agreement"] == 0.5 and out["nodules"] == 2
    nll_a = -(2 / 3 * math.log(0.4) + 1 / 3 * math.log(0.6))
    assert out["reader_nll"] == pytest.approx((nll_a - math.log(0.8)) / 2)
    plain = nodule_scores(LABELS[:, 0], NODULES, np.array([0, 0, 1, 2]), None)
    assert plain["nodule_agreement"] == 1.0 and math.isnan(plain["reader_nll"])


def test_soft_head_targets_equal_hard_ones_when_the_readers_agree():
    logits = [torch.randn(4, 3)]
    labels = torch.tensor([[0], [1], [2], [-1]])
    soft = [torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])]
    hard = multitask_loss(logits, labels)
    torch.testing.assert_close(multitask_loss(logits, labels, soft=soft), hard)
    split = [torch.tensor([[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])]
    assert not torch.isclose(multitask_loss(logits, labels, soft=split), hard)


def test_reader_positives_weigh_texts_the_nodules_readers_would_give():
    density, second = reader_distributions(LABELS, NODULES, [3, 2])
    soft = [torch.from_numpy(density), torch.from_numpy(second)]
    text_labels = torch.tensor([[0, 1], [1, 1], [2, 0]])  # distinct texts in the batch
    index = torch.tensor([0, 0, 1, 2])  # read 2 (unknown field 2) shares text 0 here
    w = reader_positives(soft, text_labels, index)
    np.testing.assert_allclose(w[0].numpy(), [2 / 3, 1 / 3, 0], atol=1e-6)
    np.testing.assert_allclose(w[3].numpy(), [1e-6, 1e-6, 1], atol=1e-6)  # B: only its own
    image, text = torch.eye(4)[:, :3], torch.eye(3)
    loss = clip_loss(image, text, torch.tensor(1.0), index, w)
    assert torch.isfinite(loss)
    # one-hot positives are the label-aware loss exactly
    onehot = torch.nn.functional.one_hot(index, 3).float()
    torch.testing.assert_close(
        clip_loss(image, text, torch.tensor(1.0), index, onehot),
        clip_loss(image, text, torch.tensor(1.0), index),
    )


def test_training_with_reader_targets_on_real_reads(lidc_small, text_encoder):
    from model.config import preset
    from model.train import embed_cases, soft_targets, train

    view = lidc_small.subset(np.arange(80))
    n_classes = [len(f.values) for f in lidc_small.schema.fields]
    soft = soft_targets(view, n_classes, "cpu")
    # reads of a nodule with several readers that disagree get a split target
    assert any(((d > 0) & (d < 1)).any() for d in soft)
    mcfg, tcfg = preset("lidc", epochs=2, patience=0, val_fraction=0.2, reader_targets=True)
    result = train(view, mcfg, tcfg, text_encoder, field_classes=n_classes)
    assert result.steps > 0 and all(np.isfinite(result.history["train_loss"]))
    assert np.isfinite(result.history["val_loss"]).all()
    assert np.isfinite(embed_cases(result.model, view)).all()
