"""Benchmark: face search with `processing.ann.VectorIndex` against exact brute force.

Synthetic FaceNet-like data, fixed seed: `--identities` random unit "people" in `--dim` dimensions, each indexed
`--n / --identities` times with Gaussian noise of `--noise` per component (0.03 in 512-d puts two shots of one
person at cosine ~0.7, strangers at ~0, as FaceNet does), plus `--queries` probes that are new shots of random
people. For each configuration:

- per-query latency of `VectorIndex.search(probe, k)`, one query at a time (p50/p95, ms);
- recall@k: the share of the exact top-k (numpy brute force over all vectors) that the index returns.

Configurations: the HNSW index (above the exact limit) at each `--expansion-search`, brute force over all `--n`
vectors (what "scan every row" costs), and the exact mode at the exact limit (the largest set searched exactly).

Run from the repository root (about a minute on 2 cores)::

    .venv/bin/python bench/bench_search.py --json-out bench/search_results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import usearch  # noqa: E402

from processing.ann import EXACT_LIMIT, VectorIndex  # noqa: E402


def unit_rows(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def make_data(n: int, identities: int, dim: int, noise: float, queries: int, seed: int):
    rng = np.random.default_rng(seed)
    people = unit_rows(rng.normal(size=(identities, dim)))
    owner = np.arange(n) % identities
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 20_000):  # in slices: the noise of 100k x 512 at once is 400 MB of float64
        stop = min(n, start + 20_000)
        vectors[start:stop] = unit_rows(people[owner[start:stop]] + rng.normal(scale=noise, size=(stop - start, dim)))
    probe_owner = rng.integers(0, identities, size=queries)
    probes = unit_rows(people[probe_owner] + rng.normal(scale=noise, size=(queries, dim)))
    return vectors, probes


def exact_top_k(vectors: np.ndarray, probes: np.ndarray, k: int) -> np.ndarray:
    truth = np.empty((len(probes), k), dtype=np.int64)
    for start in range(0, len(probes), 250):
        sims = probes[start : start + 250] @ vectors.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
        truth[start : start + 250] = np.take_along_axis(top, order, axis=1)
    return truth


def timed_queries(search, probes: np.ndarray) -> tuple[list[float], list[list[int]]]:
    latencies, answers = [], []
    for probe in probes:
        started = time.perf_counter()
        answers.append(search(probe))
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, answers


def summarise(name: str, size: int, latencies: list[float], answers: list[list[int]], truth: np.ndarray | None,
              k: int, **extra: Any) -> dict[str, Any]:
    recall = None
    if truth is not None:
        recall = float(np.mean([len(set(got) & set(want.tolist())) / k for got, want in zip(answers, truth,
                                                                                             strict=True)]))
    return {"config": name, "vectors": size, "p50_ms": float(np.percentile(latencies, 50)),
            "p95_ms": float(np.percentile(latencies, 95)), f"recall_at_{k}": recall, **extra}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="indexed vectors")
    parser.add_argument("--identities", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--noise", type=float, default=0.03, help="per-component noise of a shot")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--expansion-search", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--exact-queries", type=int, default=200, help="queries for the brute-force rows")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    k = args.k

    started = time.perf_counter()
    vectors, probes = make_data(args.n, args.identities, args.dim, args.noise, args.queries, args.seed)
    same = float(np.mean(np.sum(vectors[: args.identities] * vectors[args.identities : 2 * args.identities],
                                axis=1)))
    print(f"data: {args.n} x {args.dim}, {args.identities} identities, noise {args.noise} "
          f"(same person cosine ~{same:.2f}), {args.queries} probes; {time.perf_counter() - started:.1f} s")
    truth = exact_top_k(vectors, probes, k)
    keys = np.arange(args.n, dtype=np.int64)

    started = time.perf_counter()
    index = VectorIndex(args.dim)
    index.add(keys, vectors)
    build_s = time.perf_counter() - started
    assert index.approximate, "n must exceed the exact limit"
    print(f"HNSW build: {build_s:.1f} s (connectivity {index.connectivity}, expansion_add {index.expansion_add})")

    rows = []
    for expansion in args.expansion_search:
        index._hnsw.expansion_search = expansion
        index.expansion_search = expansion
        latencies, answers = timed_queries(lambda p: [key for key, _ in index.search(p, k)], probes)
        rows.append(summarise(f"hnsw ef={expansion}", args.n, latencies, answers, truth, k,
                              expansion_search=expansion))

    few = probes[: args.exact_queries]
    latencies, answers = timed_queries(
        lambda p: np.argpartition(-(vectors @ p), k - 1)[:k].tolist(), few)
    rows.append(summarise("brute force (numpy)", args.n, latencies, answers, truth[: len(few)], k))

    exact = VectorIndex(args.dim)
    exact.add(keys[:EXACT_LIMIT], vectors[:EXACT_LIMIT])
    assert not exact.approximate
    latencies, _ = timed_queries(lambda p: [key for key, _ in exact.search(p, k)], few)
    rows.append(summarise(f"exact mode at the limit ({EXACT_LIMIT})", EXACT_LIMIT, latencies, [], None, k))

    header = f"| config | vectors | p50 ms | p95 ms | recall@{k} |"
    lines = [header, "| --- | ---: | ---: | ---: | ---: |"]
    for row in rows:
        recall = row[f"recall_at_{k}"]
        lines.append(f"| {row['config']} | {row['vectors']:,} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | "
                     f"{'exact' if recall is None else f'{recall:.4f}'} |")
    print("\n".join(lines))

    if args.json_out:
        result = {
            "benchmark": "face search (processing.ann.VectorIndex)",
            "data": {"n": args.n, "dim": args.dim, "identities": args.identities, "noise": args.noise,
                     "queries": args.queries, "k": k, "seed": args.seed, "same_person_cosine": same},
            "index": {"exact_limit": EXACT_LIMIT, "connectivity": index.connectivity,
                      "expansion_add": index.expansion_add, "default_expansion_search": VectorIndex(1).expansion_search,
                      "build_s": build_s, "metric": "cos", "graph_dtype": "f16", "exact_dtype": "f32"},
            "rows": rows,
            "machine": {"python": platform.python_version(), "numpy": np.__version__,
                        "usearch": usearch.__version__, "cpus": os.cpu_count(), "platform": platform.platform()},
        }
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
