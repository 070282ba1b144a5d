from dataclasses import replace

import numpy as np
import pytest

from model.inference import MAX_SLICES_PER_CASE, Explainer, InputError, validate_features


@pytest.fixture(scope="module")
def explainer(trained_small):
    return Explainer(trained_small[1])


def test_explanation_has_ranked_distinct_texts_and_evidence(explainer, lidc_small):
    schema = lidc_small.schema
    out = explainer.explain(lidc_small.slices(0), k=5)
    texts = out["texts"]
    assert [t["rank"] for t in texts] == [1, 2, 3, 4, 5]
    assert len({t["text"] for t in texts}) == 5
    sims = [t["similarity"] for t in texts]
    assert sims == sorted(sims, reverse=True) and all(-1 <= s <= 1 for s in sims)
    assert out["model_version"] and out["catalog_version"]
    assert [f["field"] for f in out["fields"]] == schema.field_names
    for f in out["fields"]:
        assert abs(sum(f["zero_shot"].values()) - 1) < 1e-3
        assert abs(sum(f["head"].values()) - 1) < 1e-3
        assert f["vote"]["value"] in schema.field(f["field"]).values
    n = lidc_small.cases["n_slices"].iloc[0]
    assert len(out["slice_attention"]) == min(n, 12)
    assert abs(sum(a["weight"] for a in out["slice_attention"]) - 1) < 1e-3
    # The case was in the training set, so the nearest training case is itself.
    assert out["similar_cases"][0]["case_id"] == lidc_small.cases["case_id"].iloc[0]


def test_vote_is_weighted_by_similarity(explainer, lidc_small):
    out = explainer.explain(lidc_small.slices(1), k=5)
    for f in out["fields"]:
        tally = f["vote"]["tally"]
        assert f["vote"]["value"] == max(tally, key=tally.get)
        assert abs(f["vote"]["share"] - max(tally.values())) < 1e-3


def test_more_slices_than_the_model_takes_are_subsampled(explainer, lidc_small):
    case = np.repeat(lidc_small.slices(0)[:1], 30, axis=0)
    out = explainer.explain(case)
    assert out["slices"] == {"received": 30, "used": 12, "subsampled": True}
    assert [a["slice"] for a in out["slice_attention"]][0] == 0
    assert [a["slice"] for a in out["slice_attention"]][-1] == 29


def test_a_case_longer_than_the_cap_is_refused_not_subsampled(explainer):
    dim = explainer.checkpoint.config.feature_dim
    at_cap = explainer.explain(np.zeros((MAX_SLICES_PER_CASE, dim), np.float32))
    assert at_cap["slices"]["received"] == MAX_SLICES_PER_CASE
    with pytest.raises(InputError, match=f"10000 slices; at most {MAX_SLICES_PER_CASE}"):
        explainer.explain(np.zeros((10_000, dim), np.float32))


def test_validation_takes_a_lower_slice_cap():
    assert validate_features(np.zeros((5, 4)), 4, max_slices=5).shape == (5, 4)
    with pytest.raises(InputError, match="6 slices; at most 5"):
        validate_features(np.zeros((6, 4)), 4, max_slices=5)


def test_complex_and_beyond_float32_values_are_refused_without_warnings():
    with pytest.raises(InputError, match="must be numbers, got dtype complex128"):
        validate_features(np.zeros((2, 4), np.complex128), 4)
    too_large = np.ones((3, 4))
    too_large[2, 1] = 1e300  # becomes inf in float32; filterwarnings=error catches a warning
    with pytest.raises(InputError, match=r"infinite values in slice\(s\) 2"):
        validate_features(too_large, 4)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (np.zeros((3, 7), np.float32), "expected {dim} features per slice, got 7"),
        (np.zeros((0, 0), np.float32), "no slices"),
        (np.zeros((2, 2, 2), np.float32), "2-D array"),
        (np.array([["a"]]), "must be numbers"),
        ("nan", "finite; NaN or infinite values in slice\\(s\\) 1"),
    ],
)
def test_bad_inputs_name_the_problem(explainer, features, message):
    dim = explainer.checkpoint.config.feature_dim
    if isinstance(features, str):
        features = np.ones((3, dim), np.float32)
        features[1, 4] = np.nan
    with pytest.raises(InputError, match=message.format(dim=dim)):
        explainer.explain(features)


def test_k_out_of_range_is_refused(explainer, lidc_small):
    with pytest.raises(InputError, match="k must be between 1 and 50"):
        explainer.explain(lidc_small.slices(0), k=0)


def test_slice_evidence_scores_each_used_slice_against_the_best_text(explainer, lidc_small):
    from model.clip import batch_slices

    case = lidc_small.slices(2)
    out = explainer.explain(case)
    evidence = out["slice_evidence"]
    assert [e["slice"] for e in evidence] == list(range(min(len(case), 12)))
    # Recompute one slice by hand: that slice alone, against the top-1 text's embedding.
    ckpt = explainer.checkpoint
    row = ckpt.catalog.texts.index(out["texts"][0]["text"])
    x, m = batch_slices([case[:1]], ckpt.config.max_slices)
    alone = ckpt.model.encode_image(x, m)[0].detach().numpy()[0]
    expected = float(alone @ ckpt.catalog.index.reconstruct(row))
    assert abs(evidence[0]["similarity"] - expected) < 1e-3


def test_low_similarity_threshold_is_calibrated_on_the_training_cases(explainer, lidc_small):
    from model.train import embed_cases

    ckpt = explainer.checkpoint
    threshold = ckpt.meta["low_similarity"]
    best = ckpt.catalog.search(embed_cases(ckpt.model, lidc_small), 1)[0][:, 0]
    assert abs((best < threshold).mean() - 0.10) < 0.02
    flagged = [explainer.explain(lidc_small.slices(i))["low_confidence_reasons"] for i in range(40)]
    low = [any("best similarity" in r for r in reasons) for reasons in flagged]
    assert low == [bool(b < threshold) for b in best[:40]]


def _difference(a, b, tol=2e-4, path="") -> str:
    """Where two JSON-ready values differ beyond rounding ("" where they do not): a batch pads
    cases to one length, so floats agree up to rounding."""
    if isinstance(a, float) or isinstance(b, float):
        return "" if abs(a - b) <= tol else f"{path}: {a} != {b}"
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return f"{path}: keys {sorted(a)} != {sorted(b)}"
        return next(
            (d for key in a if (d := _difference(a[key], b[key], tol, f"{path}.{key}"))), ""
        )
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        pairs = enumerate(zip(a, b, strict=True))
        return next((d for i, (x, y) in pairs if (d := _difference(x, y, tol, f"{path}[{i}]"))), "")
    return "" if a == b else f"{path}: {a!r} != {b!r}"


def test_a_batch_explains_each_case_as_explain_does(explainer, lidc_small):
    short = lidc_small.slices(0)[:2]
    long = np.repeat(lidc_small.slices(1), 3, axis=0)  # subsampled to the model's slices
    cases = [lidc_small.slices(2), short, long, lidc_small.slices(0)]
    batch = explainer.explain_batch(cases, k=4)
    assert len(batch) == len(cases)
    for case, out in zip(cases, batch, strict=True):
        single = explainer.explain(case, k=4)
        # Labels are the same wherever no score sits on a rounding tie.
        assert [t["text"] for t in out["texts"]] == [t["text"] for t in single["texts"]]
        assert not (difference := _difference(out, single)), difference
    assert explainer.explain_batch([], k=4) == []


def test_a_batch_names_the_invalid_case(explainer, lidc_small):
    dim = explainer.checkpoint.config.feature_dim
    with pytest.raises(InputError, match=f"case 1: expected {dim} features per slice, got 3"):
        explainer.explain_batch([lidc_small.slices(0), np.zeros((2, 3))])


def test_a_served_vote_reads_its_own_texts_whatever_k_is_asked(trained_small, lidc_small):
    """A field that serves retrieval's vote reads it over the head's vote_k texts: the answer
    is the k=vote_k vote's, for a caller asking for one text or eight."""
    ckpt = trained_small[1]
    assert ckpt.served is not None
    fields = [replace(f) for f in ckpt.served.fields]
    fields[0].vote_weight = 1.0  # field 0 serves the vote alone
    served = replace(ckpt.served, fields=fields)
    explainer = Explainer(replace(ckpt, served=served))
    n = served.vote_k
    for case in (lidc_small.slices(0), lidc_small.slices(3)):
        own = explainer.explain(case, k=n)["fields"][0]
        tally = own["vote"]["tally"]
        for k in (1, n + 3):
            answer = explainer.explain(case, k=k)["fields"][0]["served"]
            assert answer == own["served"]
            assert answer["value"] == max(tally, key=tally.get)
        # The other fields are the checkpoint's own answers.
        alone = Explainer(ckpt).explain(case, k=1)["fields"][1]["served"]
        assert explainer.explain(case, k=1)["fields"][1]["served"] == alone


def test_unseen_votes_come_from_the_other_training_cases_texts(
    trained_small, lidc_small, text_encoder
):
    from model.encoders import TextTokenCache
    from model.retrieval import exact_vote
    from model.train import embed_cases, embed_texts, unseen_votes

    model, schema, texts = trained_small[0].model, lidc_small.schema, lidc_small.texts()
    cache = TextTokenCache(text_encoder, texts)
    emb = embed_cases(model, lidc_small)
    unseen = np.arange(0, len(texts), 4)
    votes = unseen_votes(model, cache, schema, texts, emb, unseen, k=3)
    assert votes is not None and len(votes) == len(schema.fields)
    others = [t for i, t in enumerate(texts) if i % 4]
    catalog = list(dict.fromkeys(others))
    labels = np.stack([schema.parse(t) for t in catalog])
    expected = exact_vote(
        emb[unseen], embed_texts(model, cache, catalog), labels, schema.class_counts, 3
    )
    held = np.zeros(len(texts), bool)
    held[unseen] = True
    for got, want in zip(votes, expected, strict=True):
        assert np.isnan(got[~held]).all()
        np.testing.assert_allclose(got[held], want)
    only_unseen = set(texts[i] for i in unseen) - set(others)
    assert only_unseen, "the check needs a text that only unseen cases have"
    assert unseen_votes(model, cache, schema, texts, emb, None, k=3) is None
