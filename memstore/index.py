"""ANN indexes on a memory's vectors: build, tune to a recall target, report.

LanceDB's IVF indexes are fast but, left at their defaults, poor: IVF_PQ gives
recall@10 of about 0.26 on 512-d vectors. What decides recall is how many
partitions a query probes (``nprobes``) and how many PQ candidates Lance
re-ranks with the exact vectors (``refine_factor``). ``build_index`` therefore
measures recall@k against exact search on a sample of the memory's own rows
(each query's own row left out of both) and picks the cheapest knobs on
:data:`SCHEDULE` that reach the target. The knobs and the measured recall are
recorded in the audit row of the ``create_index`` version, and searches use
them unless told otherwise.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from .errors import InvalidInputError
from .search import ExactSearch, IndexedSearch, check_metric, recall

INDEX_TYPES = ("IVF_PQ", "IVF_HNSW_SQ", "IVF_SQ", "IVF_FLAT")

#: ``index="auto"`` searches through the ANN index from this many rows on. At
#: 1,000,000 x 512 a tuned IVF_PQ answered single queries 10x faster than exact
#: search and batches 1.2x faster (5.3 against 6.5 ms a query); at half that size
#: batched exact search is faster, and heads search in batches
#: (benchmarks/results/search-100000_1000000x512_1280.md)
ANN_AUTO_ROWS = 1_000_000

#: (nprobes, refine_factor) tried in order of cost until the recall target is met
SCHEDULE = ((10, 2), (20, 5), (20, 10), (40, 10), (40, 20), (80, 20), (80, 50), (160, 50), (320, 100))


@dataclass(frozen=True)
class IndexReport:
    """What ``Memory.create_index`` built and measured.

    ``recall`` is recall@k against exact search on ``sample`` of the memory's
    own rows at the chosen ``nprobes``/``refine_factor``; the per-query times
    are single-query searches on this machine.
    """

    version: int
    index_type: str
    metric: str
    rows: int
    num_partitions: int
    num_sub_vectors: int | None
    build_seconds: float
    nprobes: int
    refine_factor: int
    k: int
    sample: int
    recall: float
    target_recall: float
    exact_ms_per_query: float
    indexed_ms_per_query: float

    @property
    def speedup(self) -> float:
        """Single-query exact time over single-query indexed time."""
        return self.exact_ms_per_query / self.indexed_ms_per_query

    def as_dict(self) -> dict:
        return asdict(self)


def default_params(n: int, dim: int, index_type: str) -> dict:
    """Partitions ~ sqrt(n) (LanceDB's rule); PQ with 8-d sub-vectors (16 bytes a 128-d block)."""
    params = {"num_partitions": max(1, min(4096, round(math.sqrt(n))))}
    if index_type == "IVF_PQ":
        sub = next(s for s in (dim // 8, dim // 4, dim // 2, dim, 1) if s >= 1 and dim % s == 0)
        params["num_sub_vectors"] = sub
    return params


def check_index_request(index_type: str, metric: str, n: int, target_recall: float) -> None:
    check_metric(metric)
    if index_type not in INDEX_TYPES:
        raise InvalidInputError(f"index_type {index_type!r} is not one of {INDEX_TYPES}")
    if n < 256:
        raise InvalidInputError(
            f"the memory holds {n} rows; an ANN index needs at least 256 to train on, and "
            "exact search is faster at this size anyway"
        )
    if not 0 < target_recall <= 1:
        raise InvalidInputError(f"target_recall must be in (0, 1], got {target_recall!r}")


def build_index(dataset, samples, *, index_type: str, metric: str, num_partitions: int | None,
                num_sub_vectors: int | None, target_recall: float, k: int, sample: int,
                seed: int = 0):
    """Create the index on ``dataset`` (a Lance write) and tune its search knobs.

    Returns the dataset at its new version and the measured settings (dict).
    """
    n, dim = samples.vectors.shape
    params = default_params(n, dim, index_type)
    if num_partitions is not None:
        params["num_partitions"] = int(num_partitions)
    if num_sub_vectors is not None:
        params["num_sub_vectors"] = int(num_sub_vectors)
    start = time.perf_counter()
    dataset = dataset.create_index("vector", index_type=index_type, metric=metric, replace=True, **params)
    build_seconds = time.perf_counter() - start

    k = min(k, n - 1)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    queries = samples.vectors[rows]
    exact = ExactSearch(samples.vectors, metric)
    exact_ms = _ms_per_query(lambda q, r: exact.search(q, k, exclude=r), queries, rows)
    _, truth = exact.search(queries, k, exclude=rows)

    chosen = None
    for nprobes, refine in SCHEDULE:
        nprobes = min(nprobes, params["num_partitions"])
        indexed = IndexedSearch(dataset, samples.ids, metric, nprobes=nprobes, refine_factor=refine)
        _, found = indexed.search(queries, k, exclude=rows)
        measured = recall(found, truth)
        chosen = (nprobes, refine, measured, indexed)
        if measured >= target_recall:
            break
    nprobes, refine, measured, indexed = chosen
    indexed_ms = _ms_per_query(lambda q, r: indexed.search(q, k, exclude=r), queries, rows)
    return dataset, {
        "index_type": index_type,
        "metric": metric,
        "rows": n,
        "num_partitions": params["num_partitions"],
        "num_sub_vectors": params.get("num_sub_vectors"),
        "build_seconds": round(build_seconds, 3),
        "nprobes": nprobes,
        "refine_factor": refine,
        "k": k,
        "sample": len(rows),
        "recall": round(measured, 4),
        "target_recall": target_recall,
        "exact_ms_per_query": round(exact_ms, 3),
        "indexed_ms_per_query": round(indexed_ms, 3),
    }


def _ms_per_query(search, queries: np.ndarray, rows: np.ndarray, at_most: int = 20) -> float:
    """Median single-query latency over up to ``at_most`` queries."""
    times = []
    for i in range(min(at_most, len(queries))):
        start = time.perf_counter()
        search(queries[i:i + 1], rows[i:i + 1])
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


__all__ = ["INDEX_TYPES", "IndexReport", "build_index", "default_params"]
