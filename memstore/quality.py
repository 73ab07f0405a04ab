"""Row quality estimated from the memory itself (Geirhos et al. 2024, "pruning").

Every row searches the memory for its k nearest other rows (leave-one-out).
A neighbour whose label differs from the searching row's is a *wrong
neighbour*: it pushes that row's prediction the wrong way. A row's
``wrong_count`` is how often it was a wrong neighbour. Mislabelled rows and
rows deep in another class's region score high; on ImageNet Geirhos et al.
dropped rows with ``wrong_count >= 128`` at k=100. The threshold scales with
the memory (rows per class, k), so choose it on a validation split cut from
the training data, never on the test set.

Two ways to use the counts, both plain SQL over ``samples.wrong_count``:

- hard pruning: ``mem.prune("SELECT id FROM samples WHERE wrong_count >= 40")``
- soft pruning (SoftRankVoting): ``mem.reweight(SOFT_RANK_SQL)`` sets
  ``weight = 1.75 / (1 + wrong_count)``; with ``KNNClassifier(voting="rank")``
  each neighbour then votes ``1 / (i + 2) * 1.75 / (1 + wrong_count)``.

Examples
--------
>>> import numpy as np
>>> x = np.array([[0, 1], [0.1, 1], [1, 0], [1, 0.1], [0.05, 1]], np.float32)
>>> wrong_neighbour_counts(x, np.array(["a", "a", "b", "b", "b"]), k=2).tolist()
[1, 3, 0, 0, 2]
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .search import ExactSearch, check_k

#: the weight SoftRankVoting gives a row, as SQL for ``Memory.reweight``
SOFT_RANK_SQL = "SELECT id, 1.75 / (1 + wrong_count) AS weight FROM samples WHERE wrong_count IS NOT NULL"

#: queries searched at a time (bounds the (chunk, k) neighbour arrays)
QUERY_CHUNK = 8192


def soft_rank_weight(wrong_count) -> np.ndarray:
    """SoftRankVoting's row weight, 1.75 / (1 + wrong_count)."""
    return 1.75 / (1.0 + np.asarray(wrong_count, np.float64))


def wrong_neighbour_counts(vectors, labels, k: int = 100, *, metric: str = "cosine", searcher=None,
                           progress=None) -> np.ndarray:
    """(n,) int: how often each row is among the k nearest rows of a row with another label.

    Parameters
    ----------
    vectors : (n, dim) float32.
    labels : (n,) labels, any type numpy or Arrow can compare.
    k : neighbours per row, the row itself excluded.
    searcher : an exact or indexed searcher over ``vectors`` (default: exact).
    progress : an optional callable given the number of rows done after each chunk.
    """
    vectors = np.asarray(vectors, np.float32)
    n = len(vectors)
    k = check_k(k, n - 1)
    labels = labels if isinstance(labels, pa.Array) else pa.array(np.asarray(labels))
    codes = pc.dictionary_encode(labels).indices.to_numpy(zero_copy_only=False)  # (n,) label index of each row
    searcher = searcher or ExactSearch(vectors, metric)
    counts = np.zeros(n, np.int64)
    for lo in range(0, n, QUERY_CHUNK):
        hi = min(n, lo + QUERY_CHUNK)
        _, pos = searcher.search(vectors[lo:hi], k, exclude=np.arange(lo, hi))  # (chunk, k)
        wrong = codes[pos] != codes[lo:hi, None]  # (chunk, k)
        counts += np.bincount(pos[wrong], minlength=n)
        if progress is not None:
            progress(hi - lo)
    return counts


__all__ = ["SOFT_RANK_SQL", "soft_rank_weight", "wrong_neighbour_counts"]
