"""Feature values far outside the training data: refused by name, and the model stays finite."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from model.clip import batch_slices
from model.feature_range import (
    ABSOLUTE_LIMIT,
    SPAN_FLOOR,
    SPAN_MULTIPLE,
    FeatureBounds,
    training_feature_ranges,
)
from model.inference import Explainer, InputError, validate_features


@pytest.fixture(scope="module")
def explainer(trained_small):
    return Explainer(trained_small[1])


def largest_accepted(bounds: FeatureBounds, high: bool) -> np.ndarray:
    """Each feature's outermost float32 value that its bounds still accept."""
    edge = bounds.high if high else bounds.low
    values = edge.astype(np.float32)
    inward = np.float32(-np.inf) if high else np.float32(np.inf)
    outside = values > edge if high else values < edge
    return np.where(outside, np.nextafter(values, inward), values).astype(np.float32)


def test_a_checkpoint_records_each_features_training_range_by_name(trained_small, lidc_small):
    ranges = trained_small[1].meta["feature_ranges"]
    every_slice = np.concatenate([lidc_small.slices(i) for i in range(len(lidc_small))])
    assert ranges["names"] == lidc_small.feature_names
    assert ranges["slices"] == len(every_slice)
    np.testing.assert_allclose(ranges["min"], every_slice.min(0))
    np.testing.assert_allclose(ranges["max"], every_slice.max(0))
    np.testing.assert_allclose(ranges["mean"], every_slice.mean(0, dtype=np.float64), rtol=1e-5)
    np.testing.assert_allclose(
        ranges["std"], every_slice.std(0, dtype=np.float64), rtol=1e-4, atol=1e-6
    )


def test_bounds_are_ten_spans_beyond_the_training_range_with_a_floor():
    class Cases:  # two cases: feature 0 spans 2..4, feature 1 is constant 7
        arrays = [np.array([[2.0, 7.0]]), np.array([[4.0, 7.0], [3.0, 7.0]])]

        def __len__(self):
            return len(self.arrays)

        def slices(self, i):
            return self.arrays[i]

    bounds = FeatureBounds.from_ranges(training_feature_ranges(Cases(), ["width", "flat"]))
    np.testing.assert_allclose(bounds.low, [2 - SPAN_MULTIPLE * 2, 7 - SPAN_MULTIPLE * SPAN_FLOOR])
    np.testing.assert_allclose(bounds.high, [4 + SPAN_MULTIPLE * 2, 7 + SPAN_MULTIPLE * SPAN_FLOOR])
    bounds.check(np.array([[24.0, 17.0], [-18.0, -3.0]]))  # the edges themselves are accepted
    with pytest.raises(InputError, match=r"feature 'flat' \(1\) of slice 1 is 17.5"):
        bounds.check(np.array([[24.0, 17.0], [0.0, 17.5]]))


@pytest.mark.parametrize(("value", "column"), [(1e30, 0), (-3e38, 5), (2.0**62, 37)])
def test_values_far_outside_the_training_range_are_refused_naming_feature_and_slice(
    explainer, lidc_small, value, column
):
    name = lidc_small.feature_names[column]
    case = lidc_small.slices(0).astype(np.float64)
    case[1, column] = value
    with pytest.raises(InputError, match=rf"feature '{name}' \({column}\) of slice 1 is "):
        explainer.explain(case)


def test_int64_features_far_out_are_refused_not_overflowed(explainer):
    dim = explainer.checkpoint.config.feature_dim
    case = np.ones((3, dim), np.int64)
    case[2, 4] = np.iinfo(np.int64).max
    with pytest.raises(InputError, match=r"\(4\) of slice 2 is 9.22337e\+18"):
        explainer.explain(case)


def test_the_largest_accepted_values_explain_with_finite_numbers(explainer):
    highest = largest_accepted(explainer.bounds, high=True)
    lowest = largest_accepted(explainer.bounds, high=False)
    case = np.stack([highest, lowest, highest])
    out = explainer.explain(case, k=5)
    json.dumps(out, allow_nan=False)  # every number in the answer is finite
    assert len(out["texts"]) == 5
    assert all(-1.001 <= t["similarity"] <= 1.001 for t in out["texts"])


def test_a_checkpoint_without_ranges_falls_back_to_the_absolute_bound(trained_small):
    ckpt = trained_small[1]
    old = dataclasses.replace(
        ckpt, meta={k: v for k, v in ckpt.meta.items() if k != "feature_ranges"}
    )
    explainer = Explainer(old)
    dim = ckpt.config.feature_dim
    at_limit = np.full((2, dim), ABSOLUTE_LIMIT, np.float32)
    json.dumps(explainer.explain(at_limit), allow_nan=False)
    over = at_limit.copy()
    over[1, 3] = 1.5 * ABSOLUTE_LIMIT
    with pytest.raises(InputError, match=r"feature 3 of slice 1 is 1.5e\+06.*-1e\+06 to 1e\+06"):
        explainer.explain(over)


def test_validation_without_bounds_takes_the_absolute_bound():
    assert validate_features(np.full((2, 4), -ABSOLUTE_LIMIT), 4).dtype == np.float32
    with pytest.raises(InputError, match="feature 2 of slice 0 is 1e\\+30"):
        validate_features(np.array([[0.0, 0.0, 1e30, 0.0]]), 4)


def test_the_model_embeds_any_finite_float32_without_nan(trained_small):
    model = trained_small[1].model
    dim = model.cfg.feature_dim
    extreme = np.array(
        [[3e38] * dim, [-3e38] * dim, np.resize([1e30, -1e30], dim)], np.float32
    )  # what validation refuses, straight into the model (any feature count, odd included)
    slices, mask = batch_slices([extreme], model.cfg.max_slices)
    with torch.no_grad():
        embedding, weights = model.encode_image(slices, mask, want_weights=True)
        heads = model.classify(embedding)
    assert torch.isfinite(embedding).all()
    assert torch.linalg.vector_norm(embedding, dim=-1).item() == pytest.approx(1.0, abs=1e-3)
    assert weights is None or torch.isfinite(weights).all()
    assert all(torch.isfinite(h).all() for h in heads)
