"""In-RAM IVF search with exact distances: the fast path for batches of queries with large k.

A kNN-LM asks for k = 1024 neighbours of every token position. Exact search
then spends most of its time selecting, and LanceDB's persisted index re-reads
candidate vectors from disk for every query; both ran far below the kNN-LM
paper's datastore (faiss IndexIVFPQ) at 1M keys
(benchmarks/results/knnlm-1000000.md). This searcher partitions a version's
vectors around k-means centroids in RAM (faiss ``IndexIVFFlat``, the
well-kept implementation) and scores every vector of the ``nprobes``
partitions nearest to a query with its exact distance: no quantisation, so the
kNN distribution is the exact one wherever the true neighbours are found.

``nprobes`` is tuned when the searcher is built: the fewest partitions, on a
doubling schedule, whose recall@k against :class:`ExactSearch` on a sample of
the memory's own rows reaches ``target_recall``. The index holds a copy of
the vectors (4 bytes per value) and lives as long as the memory handle.

Examples
--------
>>> import numpy as np
>>> x = np.random.default_rng(0).standard_normal((5000, 16)).astype(np.float32)
>>> ivf = IVFSearch(x, "l2", k=10, sample=50)
>>> d, pos = ivf.search(x[:3], k=1)
>>> pos[:, 0].tolist(), ivf.recall >= 0.95
([0, 1, 2], True)
"""

from __future__ import annotations

import math
import time

import numpy as np

from .errors import InvalidInputError
from .search import ExactSearch, _sorted, as_queries, check_k, check_metric, recall

#: nprobes tried in order until the recall target is met (capped at the partitions)
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: rows per partition the k-means trains on (faiss warns below 39)
TRAIN_ROWS_PER_LIST = 256


def _faiss():
    try:
        import faiss
    except ImportError as e:
        raise InvalidInputError("index='ivf' needs faiss: pip install 'memstore[lm]' (or faiss-cpu)") from e
    return faiss


class IVFSearch:
    """Exact distances over the nearest partitions of an in-RAM IVF (faiss IndexIVFFlat).

    Parameters
    ----------
    vectors : (n, dim) float32.
    metric : ``"cosine"``, ``"dot"`` or ``"l2"`` (distances as :class:`ExactSearch`).
    nlist : partitions; default about sqrt(n), at least 1.
    nprobes : partitions searched per query; default: tuned to ``target_recall``.
    target_recall, k, sample : the tuning: recall@k on ``sample`` of the rows.
    seed : of the training sample and the tuning queries.
    """

    def __init__(self, vectors, metric: str = "cosine", *, nlist: int | None = None, nprobes: int | None = None,
                 target_recall: float = 0.95, k: int = 10, sample: int = 200, seed: int = 0):
        faiss = _faiss()
        self.metric = check_metric(metric)
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, self.dim = x.shape
        if n == 0:
            raise InvalidInputError("no vectors to index")
        if not 0 < target_recall <= 1:
            raise InvalidInputError(f"target_recall must lie in (0, 1], got {target_recall!r}")
        self.nlist = nlist or max(1, min(n // TRAIN_ROWS_PER_LIST, round(math.sqrt(n))))
        if not isinstance(self.nlist, int) or not 1 <= self.nlist <= n:
            raise InvalidInputError(f"nlist must be an integer in 1..{n} (rows), got {nlist!r}")
        if metric == "cosine":
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(norms > 0, norms, 1)
        t = time.perf_counter()
        inner = metric != "l2"
        quantizer = faiss.IndexFlatIP(self.dim) if inner else faiss.IndexFlatL2(self.dim)
        self.index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist,
                                        faiss.METRIC_INNER_PRODUCT if inner else faiss.METRIC_L2)
        rng = np.random.default_rng(seed)
        train = min(n, self.nlist * TRAIN_ROWS_PER_LIST)
        self.index.train(x[np.sort(rng.choice(n, train, replace=False))] if train < n else x)
        self.index.add(x)
        self.build_seconds = time.perf_counter() - t
        self._exact = ExactSearch(vectors, metric, device="cpu")
        self.nprobes, self.recall = self._tune(nprobes, target_recall, min(k, n - 1) if n > 1 else 1,
                                               min(sample, n), rng)

    def __len__(self) -> int:
        return self.index.ntotal

    def _tune(self, nprobes, target, k, sample, rng) -> tuple[int, float]:
        rows = rng.choice(len(self), sample, replace=False)
        q = self._exact.vectors.numpy()[rows]
        _, truth = self._exact.search(q, k)
        schedule = [nprobes] if nprobes is not None else sorted({min(p, self.nlist) for p in NPROBES})
        for p in schedule:
            self.nprobes = p
            got = recall(self.search(q, k)[1], truth)
            if got >= target:
                break
        return p, got

    def search(self, queries, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`ExactSearch.search`; queries whose partitions hold fewer than k rows are searched exactly."""
        q = as_queries(queries, self.dim)
        k = check_k(k, len(self) - (exclude is not None))
        fetch = k + (exclude is not None)
        self.index.nprobe = self.nprobes
        scores, pos = self.index.search(self._prepare(q), fetch)
        if exclude is not None:
            exclude = np.asarray(exclude, dtype=np.int64).reshape(-1)
            drop = pos == exclude[:, None]
            keep = np.argsort(drop, axis=1, kind="stable")[:, :k]  # the excluded row moves last
            scores, pos = np.take_along_axis(scores, keep, 1), np.take_along_axis(pos, keep, 1)
        dist = self._distances(scores)
        short = (pos < 0).any(axis=1)
        if short.any():  # too few rows in the probed partitions
            d, p = self._exact.search(q[short], k, None if exclude is None else exclude[short])
            dist[short], pos[short] = d, p
        return _sorted(dist.astype(np.float32), pos)

    def _prepare(self, q: np.ndarray) -> np.ndarray:
        if self.metric != "cosine":
            return q
        norms = np.linalg.norm(q, axis=1, keepdims=True)
        return np.ascontiguousarray(q / np.where(norms > 0, norms, 1))

    def _distances(self, scores: np.ndarray) -> np.ndarray:
        if self.metric == "l2":
            return np.maximum(scores, 0)  # faiss gives squared L2 already
        return 1.0 - scores  # cosine: 1 - cos; dot: 1 - q.x


__all__ = ["IVFSearch"]
