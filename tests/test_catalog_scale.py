"""The similar-case index at scale: kind chosen by size, approximate kinds that keep recall@10,
and indexes (old exact ones included) that survive save/load with their search parameters."""

import json

import faiss
import numpy as np
import pandas as pd
import pytest

from model.catalog import (
    APPROXIMATE,
    EXACT_BELOW,
    CaseIndex,
    CaseIndexSpec,
    choose_case_index,
)
from model.checkpoint import Checkpoint, build_checkpoint

DIM = 128  # the lidc preset's embedding width


def clustered_embeddings(n: int, seed: int = 0, clusters: int = 144, rank: int = 24):
    """L2-normalised vectors shaped like case embeddings: one cluster per descriptor combination
    (144 in the simulated schema), spread along a few directions rather than all 128."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM))
    spread = rng.standard_normal((rank, DIM)) / np.sqrt(rank)
    x = centres[rng.integers(0, clusters, n)] + 1.5 * rng.standard_normal((n, rank)) @ spread
    x += 0.05 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # (n, 128)


def case_table(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"case_id": [f"C{i}" for i in range(n)], "patient_id": [f"P{i // 2}" for i in range(n)]}
    )


@pytest.fixture(scope="module")
def archive_and_queries():
    x = clustered_embeddings(20_200)
    return x[:20_000], x[20_000:]  # queries are not in the index


def recall_at_10(index: CaseIndex, base: np.ndarray, queries: np.ndarray) -> float:
    exact = faiss.IndexFlatIP(DIM)
    exact.add(base)
    truth = exact.search(queries, 10)[1]
    found = index.search(queries, 10)[1]
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def test_auto_is_exact_under_the_threshold_and_approximate_from_it():
    assert choose_case_index(10) == "flat"
    assert choose_case_index(EXACT_BELOW - 1) == "flat"
    assert choose_case_index(EXACT_BELOW) == APPROXIMATE != "flat"
    assert choose_case_index(500, exact_below=100) == APPROXIMATE
    assert choose_case_index(10**6, exact_below=10**7) == "flat"


def test_an_explicit_kind_wins_over_size_and_unknown_kinds_are_refused():
    assert choose_case_index(10, "hnsw") == "hnsw"
    assert choose_case_index(10**6, "flat") == "flat"
    with pytest.raises(ValueError, match="unknown case index"):
        choose_case_index(10, "annoy")
    with pytest.raises(ValueError, match="unknown case index kind"):
        CaseIndexSpec(kind="annoy")


def test_service_setting_defaults_to_the_model_threshold():
    from app.config import Settings

    settings = Settings()
    assert settings.case_index == "auto"
    assert settings.case_index_exact_below == EXACT_BELOW


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_keeps_recall_at_10(kind, archive_and_queries):
    base, queries = archive_and_queries
    index = CaseIndex.build(case_table(len(base)), base, CaseIndexSpec(kind=kind))
    assert recall_at_10(index, base, queries) >= 0.95


def test_flat_index_is_exact(archive_and_queries):
    base, queries = archive_and_queries
    index = CaseIndex.build(case_table(len(base)), base)
    assert index.spec.kind == "flat"
    assert recall_at_10(index, base, queries) == 1.0


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_index_round_trips_with_the_same_results(tmp_path, kind):
    x = clustered_embeddings(3000, seed=1)
    before = CaseIndex.build(case_table(3000), x, CaseIndexSpec(kind=kind))
    before.save(tmp_path)
    after = CaseIndex.load(tmp_path)
    assert after.spec == before.spec
    assert type(after.index) is type(before.index)
    pd.testing.assert_frame_equal(after.cases, before.cases)
    queries = clustered_embeddings(50, seed=2)
    for got, want in zip(after.search(queries, 10), before.search(queries, 10), strict=True):
        np.testing.assert_array_equal(got, want)
    meta = json.loads((tmp_path / "cases.json").read_text())
    assert meta["kind"] == kind and meta["cases"] == 3000


def test_ivf_records_the_list_count_it_chose(tmp_path):
    index = CaseIndex.build(case_table(3000), clustered_embeddings(3000), CaseIndexSpec(kind="ivf"))
    assert index.spec.ivf_nlist == round(4 * np.sqrt(3000))
    assert index.index.nlist == index.spec.ivf_nlist


@pytest.mark.parametrize(
    ("kind", "field", "read"),
    [
        ("hnsw", "hnsw_ef_search", lambda index: index.hnsw.efSearch),
        ("ivf", "ivf_nprobe", lambda index: index.nprobe),
    ],
)
def test_search_parameters_come_from_cases_json_on_load(tmp_path, kind, field, read):
    built = CaseIndex.build(case_table(2000), clustered_embeddings(2000), CaseIndexSpec(kind=kind))
    assert read(built.index) == getattr(built.spec, field)
    built.save(tmp_path)
    meta = json.loads((tmp_path / "cases.json").read_text())
    meta[field] = 7  # tuned after the build, without rebuilding
    (tmp_path / "cases.json").write_text(json.dumps(meta))
    loaded = CaseIndex.load(tmp_path)
    assert getattr(loaded.spec, field) == 7
    assert read(loaded.index) == 7


def test_an_old_exact_index_without_cases_json_still_loads(tmp_path):
    x = clustered_embeddings(500)
    old = faiss.IndexFlatIP(DIM)  # what checkpoints held before cases.json existed
    old.add(x)
    faiss.write_index(old, str(tmp_path / "cases.faiss"))
    case_table(500).to_csv(tmp_path / "cases.csv", index=False)
    loaded = CaseIndex.load(tmp_path)
    assert loaded.spec == CaseIndexSpec(kind="flat")
    np.testing.assert_array_equal(loaded.search(x[:5], 1)[1][:, 0], np.arange(5))


def test_cases_json_that_contradicts_the_faiss_file_is_refused(tmp_path):
    CaseIndex.build(case_table(300), clustered_embeddings(300)).save(tmp_path)
    (tmp_path / "cases.json").write_text(json.dumps({"kind": "hnsw"}))
    with pytest.raises(ValueError, match="cases.json says 'hnsw'"):
        CaseIndex.load(tmp_path)


def test_checkpoint_builds_and_reloads_the_kind_it_is_given(
    tmp_path, trained_small, lidc_small, small_configs, text_encoder
):
    result, exact = trained_small
    assert exact.cases.spec.kind == "flat"  # a small cohort under "auto"
    ckpt = build_checkpoint(
        result,
        lidc_small,
        text_encoder,
        small_configs[1],
        {"cohort": lidc_small.name, "simulated": False},
        case_index="auto",
        case_index_exact_below=10,  # so a small cohort counts as large
    )
    assert ckpt.cases.spec.kind == APPROXIMATE
    loaded = Checkpoint.load(ckpt.save(tmp_path / "ckpt"))
    assert loaded.cases.spec == ckpt.cases.spec
    embedded = exact.cases.index.reconstruct_n(0, 20)
    for got, want in zip(
        loaded.cases.search(embedded, 5), ckpt.cases.search(embedded, 5), strict=True
    ):
        np.testing.assert_array_equal(got, want)
