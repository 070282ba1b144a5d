"""Similar-case index at 10k, 100k and 1M cases: exact (flat) against HNSW and IVF.

Embeddings are real model outputs, not random vectors: a simulated cohort of `--archive` cases
plus the query cases is generated on disk (SIMULATED, model.datasets.simulated; `--feature-dim`
features per slice, smaller than the simulator's default 1024 so that a million cases fit in a
few GB), a `lidc`-preset model (128-d) is trained on its first `--train-cases` cases, and every
case is embedded with it. The archive of size N is the first N cases; the queries are the last
`--queries` cases, in no index. The embeddings are cached in `--work`, so later runs only
measure.

Per size and index kind: build time, index memory (bytes of faiss.serialize_index), p50/p99 of
single-query latency (k=10, one query per call, as the service searches), and recall@10 against
exact search. HNSW is measured over several efSearch values and IVF over several nprobe values
on the same index; the row marked * is the kind and parameters that model.catalog picks by
default. Prints a markdown table and writes JSON.

    .venv/bin/python bench/index_scale.py [--sizes 10000 100000 1000000] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np

from model.catalog import (
    EXACT_BELOW,
    CaseIndexSpec,
    build_case_faiss,
    choose_case_index,
    set_search_parameters,
)

K = 10
SEED = 0
ARGS = argparse.Namespace()  # the command line, set by main()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def embeddings(work: Path, n_archive: int, n_queries: int, feature_dim: int, train_cases: int):
    """(n_archive + n_queries, 128) float32 L2-normalised case embeddings and how they were made."""
    total = n_archive + n_queries
    cached = work / f"embeddings-{total}-f{feature_dim}-t{train_cases}.npy"
    about = work / f"{cached.stem}.json"
    if cached.is_file() and about.is_file():
        return np.load(cached, mmap_mode="r"), json.loads(about.read_text())

    import shutil

    import torch

    from model.config import preset
    from model.datasets.simulated import simulate_cohort
    from model.encoders import FrozenTextEncoder
    from model.train import embed_cases, train

    work.mkdir(parents=True, exist_ok=True)
    folder = work / f"cohort-{total}-f{feature_dim}"
    t0 = time.perf_counter()
    if folder.exists():
        shutil.rmtree(folder)  # a cohort from an interrupted run; regenerate it
    cohort = simulate_cohort(total, folder, seed=SEED, feature_dim=feature_dim, progress=True)
    simulate_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    mcfg, tcfg = preset("lidc", epochs=10)
    encoder = FrozenTextEncoder.for_config(mcfg)
    n_classes = cohort.schema.class_counts
    torch.manual_seed(SEED)
    result = train(
        cohort.subset(np.arange(min(train_cases, n_archive))),
        mcfg,
        tcfg,
        encoder,
        field_classes=n_classes,
    )
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    out = np.lib.format.open_memmap(
        work / f".{cached.name}", mode="w+", dtype=np.float32, shape=(total, mcfg.embed_dim)
    )
    step = 50_000
    for start in range(0, total, step):
        part = cohort.subset(np.arange(start, min(start + step, total)))
        out[start : start + len(part)] = embed_cases(result.model, part)
    out.flush()
    del out
    os.replace(work / f".{cached.name}", cached)
    embed_s = time.perf_counter() - t0
    shutil.rmtree(folder)  # the embeddings are what the benchmark needs

    meta = {
        "source": (
            f"SIMULATED cohort (model.datasets.simulated, seed {SEED}, {feature_dim} features "
            f"per slice) embedded by a lidc-preset model (128-d, {tcfg.epochs} epochs at most) "
            f"trained on its first {min(train_cases, n_archive)} cases"
        ),
        "cases": total,
        "embed_dim": mcfg.embed_dim,
        "best_epoch": result.best_epoch,
        "simulate_seconds": round(simulate_s, 1),
        "train_seconds": round(train_s, 1),
        "embed_seconds": round(embed_s, 1),
    }
    about.write_text(json.dumps(meta, indent=2) + "\n")
    return np.load(cached, mmap_mode="r"), meta


def single_query_search(index: faiss.Index, queries: np.ndarray):
    """(ids (q, K), latencies in ms (q,)) with one query per search call."""
    rows = [np.ascontiguousarray(queries[i : i + 1]) for i in range(len(queries))]
    for row in rows[:50]:  # warm caches and the allocator
        index.search(row, K)
    ids = np.empty((len(rows), K), np.int64)
    lat = np.empty(len(rows))
    for i, row in enumerate(rows):
        t0 = time.perf_counter_ns()
        _, found = index.search(row, K)
        lat[i] = (time.perf_counter_ns() - t0) / 1e6
        ids[i] = found[0]
    return ids, lat


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [len(set(f[f >= 0]) & set(t)) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / truth.shape[1])


def measure(index, queries, truth, threads, **row) -> dict:
    """`row` plus p50/p99 latency at each thread count and recall@10 against `truth`."""
    for t in threads:
        faiss.omp_set_num_threads(t)
        ids, lat = single_query_search(index, queries)
        row[f"p50_ms_{t}t"] = round(float(np.percentile(lat, 50)), 3)
        row[f"p99_ms_{t}t"] = round(float(np.percentile(lat, 99)), 3)
        row["recall_at_10"] = round(recall_at_k(ids, truth), 4)
    faiss.omp_set_num_threads(max(threads))
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def sweep(index, spec: CaseIndexSpec) -> list[tuple[CaseIndexSpec, str]]:
    """The search settings measured on one built index, with their labels."""
    if spec.kind == "hnsw":
        base = f"M={spec.hnsw_m}, efC={spec.hnsw_ef_construction}"
        return [
            (replace(spec, hnsw_ef_search=ef), f"{base}, efSearch={ef}")
            for ef in sorted({*ARGS.ef_search, spec.hnsw_ef_search})
        ]
    if spec.kind == "ivf":
        return [
            (replace(spec, ivf_nprobe=p), f"nlist={spec.ivf_nlist}, nprobe={p}")
            for p in sorted({*ARGS.nprobe, spec.ivf_nprobe})
        ]
    return [(spec, "exact")]


def bench_size(x: np.ndarray, queries: np.ndarray) -> list[dict]:
    n = len(x)
    default = CaseIndexSpec(kind=choose_case_index(n))
    rows, truth = [], None
    specs = [
        CaseIndexSpec(kind="flat"),
        CaseIndexSpec(
            kind="hnsw", hnsw_m=ARGS.hnsw_m, hnsw_ef_construction=ARGS.hnsw_ef_construction
        ),
        CaseIndexSpec(kind="ivf", ivf_nlist=ARGS.ivf_nlist),
    ]
    for spec in specs:
        if spec.kind != "flat" and spec.kind not in ARGS.kinds:
            continue
        t0 = time.perf_counter()
        index, spec = build_case_faiss(x, spec)
        build_s = time.perf_counter() - t0
        memory = len(faiss.serialize_index(index))
        if truth is None:  # the flat index comes first: exact top-10, batched
            truth = index.search(queries, K)[1]
        for searched, params in sweep(index, spec):
            set_search_parameters(index, searched)
            row = measure(
                index,
                queries,
                truth,
                ARGS.threads,
                cases=n,
                kind=spec.kind,
                params=params,
                build_seconds=round(build_s, 2),
                memory_mib=round(memory / 2**20, 1),
                default=searched == replace(default, ivf_nlist=searched.ivf_nlist),
            )
            rows.append(row)
        del index
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--archive", type=int, default=1_000_000, help="cases embedded; each size is a prefix"
    )
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="OpenMP threads for queries"
    )
    parser.add_argument("--kinds", nargs="+", default=["hnsw", "ivf"], choices=["hnsw", "ivf"])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--feature-dim", type=int, default=64, help="simulated features/slice")
    parser.add_argument("--train-cases", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=Path("reports/bench/index_scale"))
    parser.add_argument("--out", type=Path, default=Path("reports/bench/index_scale.json"))
    parser.add_argument("--hnsw-m", type=int, default=CaseIndexSpec.hnsw_m)
    parser.add_argument(
        "--hnsw-ef-construction", type=int, default=CaseIndexSpec.hnsw_ef_construction
    )
    parser.add_argument("--ivf-nlist", type=int, default=CaseIndexSpec.ivf_nlist)
    args = parser.parse_args(namespace=ARGS)

    faiss.omp_set_num_threads(max(args.threads))  # building uses every thread given
    import torch

    torch.set_num_threads(max(args.threads))
    if max(args.sizes) > args.archive:
        parser.error(f"--sizes must be at most --archive ({args.archive})")
    all_x, about = embeddings(
        args.work, args.archive, args.queries, args.feature_dim, args.train_cases
    )
    queries = np.ascontiguousarray(all_x[len(all_x) - args.queries :])
    load_before = load_average()
    rows = []
    for n in sorted(args.sizes):
        rows.extend(bench_size(np.ascontiguousarray(all_x[:n]), queries))

    machine = (
        f"{cpu_model()}, {os.cpu_count()} CPUs, FAISS {faiss.__version__} with "
        f"{max(args.threads)} OpenMP threads to build, Python {platform.python_version()}"
    )
    print(f"Machine: {machine}; load average {load_before} before, {load_average()} after")
    print(f"Embeddings: {about['source']}; {about['embed_dim']}-d")
    print(
        f"Queries: {args.queries} held-out cases, k={K}, one query per call, "
        f"with {' and '.join(map(str, args.threads))} OpenMP thread(s) (columns 1t, 2t)"
    )
    print(f"Default (*): exact below {EXACT_BELOW} cases, else {choose_case_index(EXACT_BELOW)}\n")
    heads = "".join(f" p50 ms {t}t | p99 ms {t}t |" for t in args.threads)
    print(f"| cases | index | parameters | build s | memory MiB |{heads} recall@10 |")
    print("|---:|---|---|---:|---:|" + "---:|---:|" * len(args.threads) + "---:|")
    for r in rows:
        mark = " *" if r["default"] else ""
        cells = "".join(
            f" {r[f'p50_ms_{t}t']:.3f} | {r[f'p99_ms_{t}t']:.3f} |" for t in args.threads
        )
        print(
            f"| {r['cases']:,} | {r['kind']}{mark} | {r['params']} | {r['build_seconds']:.2f} | "
            f"{r['memory_mib']:.1f} |{cells} {r['recall_at_10']:.4f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": machine,
        "load_average": [load_before, load_average()],
        "threads": args.threads,
        "embeddings": about,
        "queries": args.queries,
        "k": K,
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
