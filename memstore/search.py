"""Nearest-neighbour search over the vectors of one memory version.

Two searchers with one interface, ``search(queries, k, exclude=None) ->
(distances, positions)``:

- :class:`ExactSearch` holds the vectors in RAM (zero copy from Arrow where
  the column comes in one chunk) and searches them by blocked torch matmul +
  topk, in bounded extra memory, on the GPU when torch sees one. On the CPU
  this is the fastest exact search we measured (benchmarks/bench_search.py).
- :class:`IndexedSearch` asks a LanceDB ANN index (see ``Memory.create_index``)
  for candidates and lets Lance re-rank them exactly (``refine_factor``).

A third, :class:`memstore.ivf_search.IVFSearch`, partitions the vectors in
RAM (faiss) for large batches with large k, such as a kNN-LM's.

Distances follow LanceDB's conventions, so both searchers agree:
``cosine``: 1 - cos(q, x); ``dot``: 1 - q.x; ``l2``: squared euclidean
distance. Smaller is nearer. Results are sorted by (distance, position), so
equal distances come out in the order the rows were added.

Examples
--------
>>> import numpy as np
>>> x = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
>>> d, pos = ExactSearch(x).search(np.array([[1, 0.1]], dtype=np.float32), k=2)
>>> pos.tolist(), [round(float(v), 3) for v in d[0]]
([[0, 2]], [0.005, 0.226])
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pyarrow as pa
import torch

from .device import resolve_device
from .errors import DimensionMismatchError, InvalidInputError
from .snapshot import vectors_as_numpy  # noqa: F401 -- here for callers; it needs no torch

METRICS = ("cosine", "dot", "l2")

#: extra memory a search may use for one block of scores, in bytes
BLOCK_BYTES = 32 << 20
#: scores of one matmul step, in bytes: they stay in cache for the group maxima
MATMUL_BYTES = 8 << 20
#: fewest rows of one matmul step (fewer run slower)
MIN_MATMUL_ROWS = 1024
#: rows of a group: scores are selected from (query, group) pairs
GROUP_ROWS = 16
#: cosine search takes vectors whose norms are this close to 1 as normalised already
UNIT_NORM_TOL = 1e-6
#: queries scored together; more only makes the score blocks thinner
QUERY_CHUNK = 2048
#: queries sent to Lance in one call: Lance opens files per query of a call, and
#: 10,000 queries in one call ran out of file descriptors
ANN_QUERY_CHUNK = 1024


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise InvalidInputError(f"metric {metric!r} is not one of {METRICS}")
    return metric


def check_k(k, n: int) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    if k > n:
        raise InvalidInputError(
            f"Expected k <= n_samples_fit, but k = {k}, n_samples_fit = {n}; "
            "ask for fewer neighbours or add rows to the memory"
        )
    return int(k)


def as_queries(queries, dim: int) -> np.ndarray:
    """(n_queries, dim) float32, C-contiguous; one vector is one query."""
    if isinstance(queries, torch.Tensor):
        queries = queries.detach().cpu().numpy()
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2:
        raise InvalidInputError(f"queries must be (n_queries, dim), got shape {q.shape}")
    if q.shape[1] != dim:
        raise DimensionMismatchError(f"queries have dimension {q.shape[1]}, the memory holds {dim}-d vectors")
    if q.shape[0] == 0:
        raise InvalidInputError("no queries given: pass at least one (n_queries, dim) row")
    if not np.isfinite(q).all():
        raise InvalidInputError("queries contain NaN or inf; clean them before searching")
    return np.ascontiguousarray(q)


class ExactSearch:
    """Exact k-nearest-neighbour search by blocked matmul and a running threshold.

    The rows are scored a block at a time, ``scores = x_block @ q.T``, into one
    reused buffer of at most ``block_bytes``, by matmul steps whose scores fit
    in cache; each step's group maxima (GROUP_ROWS rows) are taken while the
    scores are still there. Each query keeps its best k so far, and a group is
    read again only where its maximum beats the query's k-th best so far;
    after the first blocks that is rare. On the CPU, batches of 1,024 queries
    ran at 73-85% of the machine's matmul rate, 1.0-1.3x slower than faiss's
    IndexFlatIP and 2-5x faster than numpy; batches of 64 ran 3.5-5.5x faster
    than faiss (benchmarks/results/search-100000_1000000x512_1280.md).

    Parameters
    ----------
    vectors : (n, dim) float32 array; kept by reference, not copied (on the CPU).
    metric : ``"cosine"`` (default), ``"dot"`` or ``"l2"``.
    device : ``"auto"`` (GPU when available), ``"cpu"``, ``"cuda"``, ...
    block_bytes : bound on the extra memory of one block of scores.
    """

    def __init__(self, vectors, metric: str = "cosine", device="auto", block_bytes: int = BLOCK_BYTES):
        self.metric = check_metric(metric)
        self.device = resolve_device(device)
        with warnings.catch_warnings():
            # Arrow buffers are read-only; torch warns, but nothing here writes to them
            warnings.simplefilter("ignore", UserWarning)
            x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        self.vectors = x.to(self.device)  # (n, dim)
        # on the CPU the scores come from numpy's matmul: its OpenBLAS ran 1.1-1.5x
        # faster than torch's MKL for our shapes (AMD EPYC, benchmarks/bench_search.py)
        self._vectors_np = self.vectors.numpy() if self.device.type == "cpu" else None
        self.block_bytes = block_bytes
        self._scale = None
        if metric == "dot":
            return
        with torch.inference_mode():
            norms_sq = _row_norms_sq(self.vectors)  # (n,)
        if metric == "l2":
            self._half_norms_sq = 0.5 * norms_sq  # (n,)
            return
        norms = norms_sq.sqrt()
        if len(norms) and not bool(((norms - 1).abs() <= UNIT_NORM_TOL).all()):
            # cosine: scale scores by 1/|x| per block rather than keep a normalised copy
            # of the vectors; unit vectors (most embeddings) need no scaling at all
            self._scale = torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))  # (n,)

    def __len__(self) -> int:
        return self.vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def search(self, queries, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest rows of each query.

        Parameters
        ----------
        queries : (n_queries, dim) array.
        k : neighbours per query.
        exclude : optional (n_queries,) row positions to leave out, one per query
            (-1 for none): leave-one-out search of the memory's own rows.

        Returns
        -------
        distances : (n_queries, k) float32, ascending.
        positions : (n_queries, k) int64 row positions into ``vectors``; equal
            distances (also at the k-th place) go to the earliest rows.
        """
        q = as_queries(queries, self.dim)
        k = check_k(k, len(self) - (exclude is not None))
        if exclude is not None:
            exclude = np.asarray(exclude, dtype=np.int64).reshape(-1)
            if exclude.shape[0] != q.shape[0]:
                raise InvalidInputError(f"exclude has {exclude.shape[0]} entries for {q.shape[0]} queries")
        dists, poss = [], []
        with torch.inference_mode(), _one_torch_thread(self._vectors_np is not None):
            for start in range(0, q.shape[0], QUERY_CHUNK):
                chunk = torch.from_numpy(q[start:start + QUERY_CHUNK]).to(self.device)
                excl = None if exclude is None else torch.from_numpy(exclude[start:start + QUERY_CHUNK])
                d, p = self._search_chunk(chunk, k, excl)
                dists.append(d)
                poss.append(p)
        # already in (distance, position) order
        return np.concatenate(dists), np.concatenate(poss)

    def _search_chunk(self, q: torch.Tensor, k: int, exclude: torch.Tensor | None):
        """Top k of one chunk of queries over every block of rows."""
        nq, n = q.shape[0], len(self)
        if self.metric == "cosine":
            q = torch.nn.functional.normalize(q, dim=1)
        # rows per block (one selection): as many as block_bytes of scores allow; rows
        # per matmul step: MATMUL_BYTES of scores, which stay in cache for the group
        # maxima taken right after; both whole groups
        budget = max(GROUP_ROWS, self.block_bytes // (4 * nq) // GROUP_ROWS * GROUP_ROWS)
        step = min(budget, max(MIN_MATMUL_ROWS, MATMUL_BYTES // (4 * nq) // GROUP_ROWS * GROUP_ROWS))
        rows = min(_round_up(n, GROUP_ROWS), budget // step * step)
        buffer = torch.empty(rows * nq, device=self.device)  # scores of one block, reused
        group_max = torch.empty(rows // GROUP_ROWS * nq, device=self.device)  # (groups, nq), reused
        q_np = None if self._vectors_np is None else q.numpy()
        # best k so far, larger score first, equal scores in row order; -inf, -1: none yet
        best_s = torch.full((nq, k), -torch.inf, device=self.device)  # (nq, k)
        best_p = torch.full((nq, k), -1, dtype=torch.int64, device=self.device)  # (nq, k)
        # blocks grow from a small first one to `rows`, doubling: all of the first block is
        # selected from, and the k-th best score so far lets each later block skip
        # most of its groups (when a block is no larger than what came before it,
        # about k of a query's scores in it beat its k-th best)
        lo = 0
        # one query: one block, selected by a single topk
        size = step if nq == 1 else min(step, _round_up(max(MIN_MATMUL_ROWS, 16 * k), GROUP_ROWS))
        while lo < n:
            hi = min(n, lo + size)
            m = _round_up(hi - lo, GROUP_ROWS)
            # (rows, queries): x @ q.T runs faster than q @ x.T for few queries
            # (MKL and OpenBLAS alike), and a slice of rows is contiguous
            scores = buffer[:m * nq].view(m, nq)
            scores[hi - lo:] = -torch.inf  # a last block's padding: never selected
            maxima = group_max[:m // GROUP_ROWS * nq].view(m // GROUP_ROWS, nq) if lo else None
            for a in range(lo, hi, step):
                b = min(hi, a + step)
                part = scores[a - lo:b - lo]  # (<= step, nq)
                self._score(part, q, q_np, a, b)
                if exclude is not None:
                    hit = (exclude >= a) & (exclude < b)
                    if hit.any():
                        part[(exclude[hit] - a).to(self.device), hit.nonzero().squeeze(1).to(self.device)] = -torch.inf
                if maxima is not None:  # while the part is in cache
                    g0, g1 = (a - lo) // GROUP_ROWS, _round_up(b - lo, GROUP_ROWS) // GROUP_ROWS
                    torch.amax(scores[g0 * GROUP_ROWS:g1 * GROUP_ROWS].view(g1 - g0, GROUP_ROWS, nq), 1,
                               out=maxima[g0:g1])
            if maxima is None:
                best_s, best_p = _select_all(scores[:hi - lo], lo, best_s, best_p)
            else:
                best_s, best_p = _select_groups(scores, maxima, lo, best_s, best_p)
            lo, size = hi, min(rows, 2 * size)
        if self.metric == "l2":
            dist = ((q * q).sum(1, keepdim=True) - 2.0 * best_s).clamp_min_(0.0)
        else:
            dist = 1.0 - best_s  # cosine: 1 - cos; dot: 1 - q.x
        return dist.float().cpu().numpy(), best_p.cpu().numpy()

    def _score(self, part: torch.Tensor, q: torch.Tensor, q_np, a: int, b: int) -> None:
        """Scores of rows a..b against the queries into ``part`` (b - a, nq); larger is nearer."""
        if q_np is not None:
            np.matmul(self._vectors_np[a:b], q_np.T, out=part.numpy())
        elif q.shape[0] == 1:
            torch.mv(self.vectors[a:b], q[0], out=part[:, 0])  # bandwidth-bound
        else:
            torch.mm(self.vectors[a:b], q.T, out=part)
        if self._scale is not None:
            part *= self._scale[a:b, None]  # cosine, while the part is in cache
        elif self.metric == "l2":
            part -= self._half_norms_sq[a:b, None]  # q.x - |x|^2/2 = (|q|^2 - |q-x|^2) / 2


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@contextlib.contextmanager
def _one_torch_thread(active: bool):
    """Run torch on one thread while numpy's OpenBLAS does the matmuls.

    Both pools spin-wait after their work; torch's spinning workers slowed the
    OpenBLAS matmuls by up to 1.4x on 2 cores. The selection left to torch is
    light, and one thread does it at the same speed.
    """
    if not active:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _select_all(scores: torch.Tensor, lo: int, best_s: torch.Tensor, best_p: torch.Tensor):
    """Fold every score of one block of (m, nq) scores, of rows lo.., into each query's best k."""
    nq = scores.shape[1]
    s, p = _top_k_set(scores.T.contiguous(), best_s.shape[1])  # (nq, k'): a transposing copy of one step
    return _merge(best_s, best_p, torch.arange(nq, device=s.device).repeat_interleave(s.shape[1]),
                  s.flatten(), lo + p.flatten())


def _select_groups(scores: torch.Tensor, maxima: torch.Tensor, lo: int, best_s: torch.Tensor,
                   best_p: torch.Tensor):
    """Fold a later block into each query's best k, reading only the groups that can change it.

    ``scores`` is (m, nq), m a multiple of GROUP_ROWS, and ``maxima`` (m / GROUP_ROWS,
    nq) the largest score of each group. A group can change a query's best k
    only where its maximum beats the query's k-th best so far (equal does not:
    the earlier row wins a tie). After the first blocks such (group, query)
    pairs are few, so selection reads a few groups, whatever the block size.
    """
    m, nq = scores.shape
    group, owner = (maxima > best_s[:, -1]).nonzero().unbind(1)  # (n_pairs,) each
    if not len(owner):
        return best_s, best_p
    groups = scores.view(m // GROUP_ROWS, GROUP_ROWS, nq)
    candidates = groups[group, :, owner]  # (n_pairs, GROUP_ROWS): a strided gather, so groups are small
    pair, row = (candidates > best_s[owner, -1:]).nonzero().unbind(1)  # the scores that beat the k-th best
    return _merge(best_s, best_p, owner[pair], candidates[pair, row], lo + group[pair] * GROUP_ROWS + row)


def _top_k_set(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest of each row of (r, m) scores, equal ones at the cut taken in column order.

    Returns (values, columns), each (r, min(k, m)), in no particular order.
    torch.topk picks among equal values arbitrarily: one more than k is asked
    for, and a row whose k-th and (k+1)-th values are equal (a tie across the
    cut: rare) is redone by a stable sort.
    """
    k = min(k, scores.shape[1])
    s, p = torch.topk(scores, min(k + 1, scores.shape[1]), dim=1)  # (r, k + 1), descending
    if s.shape[1] > k:
        tied = (s[:, k - 1] == s[:, k]).nonzero().squeeze(1).tolist()
        s, p = s[:, :k], p[:, :k]
        for r in tied:
            p[r] = torch.sort(scores[r], descending=True, stable=True).indices[:k]
            s[r] = scores[r, p[r]]
    return s, p


def _merge(best_s, best_p, query, s, p):
    """Merge scored rows into the best k of their queries.

    best_s, best_p : (nq, k) each query's best so far, larger score first, equal
        scores in row order; (-inf, -1) where none yet.
    query, s, p : (n,) each: a row's query, score and position.

    The best k of a query are its first k by (score descending, row), found by
    stable sorts of its old best and new rows together, least key first.
    """
    k = best_s.shape[1]
    queries = torch.unique(query)  # (nu,) ascending
    all_q = torch.cat([queries.repeat_interleave(k), query])
    all_s = torch.cat([best_s[queries].flatten(), s])
    all_p = torch.cat([best_p[queries].flatten(), p])
    order = torch.argsort(all_p, stable=True)
    order = order[torch.argsort(all_s[order], descending=True, stable=True)]
    order = order[torch.argsort(all_q[order], stable=True)]
    first = torch.searchsorted(all_q[order], queries)  # (nu,): where each query's rows start
    take = order[first[:, None] + torch.arange(k, device=first.device)]  # (nu, k); each query has >= k
    best_s[queries], best_p[queries] = all_s[take], all_p[take]
    return best_s, best_p


def _row_norms_sq(x: torch.Tensor, rows: int = 1 << 16) -> torch.Tensor:
    """(n,) squared row norms of (n, dim) ``x``, a block of rows at a time: no (n, dim) temporary."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for lo in range(0, x.shape[0], rows):
        block = x[lo:lo + rows]
        torch.linalg.vecdot(block, block, dim=1, out=out[lo:lo + rows])
    return out


class IndexedSearch:
    """Approximate search through the LanceDB ANN index of a memory's vectors.

    Lance returns candidates from every row of the data table, including rows
    pruned before the searched version; those are filtered out here and the
    query asked again for more when too few remain.

    Parameters
    ----------
    dataset : the Lance dataset of ``sample_data`` holding the index.
    ids : (n,) ids of the rows alive at the searched version, ascending.
    metric : must be the index's metric, or Lance silently scans everything.
    nprobes, refine_factor : Lance's search knobs (None: Lance's defaults).
    """

    def __init__(self, dataset, ids: np.ndarray, metric: str, nprobes: int | None = None,
                 refine_factor: int | None = None):
        self.dataset = dataset
        self.ids = np.asarray(ids, dtype=np.int64)
        self.metric = check_metric(metric)
        self.nprobes = nprobes
        self.refine_factor = refine_factor
        self.dim = dataset.schema.field("vector").type.list_size
        # rows of the table that are not alive at this version (pruned, or added later)
        self._has_dead = dataset.count_rows() != len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`ExactSearch.search`; ``exclude`` and the results are row positions."""
        q = as_queries(queries, self.dim)
        k = check_k(k, len(self) - (exclude is not None))
        exclude_ids = None
        if exclude is not None:
            exclude = np.asarray(exclude, dtype=np.int64).reshape(-1)
            exclude_ids = np.where(exclude >= 0, self.ids[np.clip(exclude, 0, None)], -1)
        dist = np.empty((q.shape[0], k), np.float32)
        ids = np.empty((q.shape[0], k), np.int64)
        # Lance runs the queries of one call concurrently, each with its own open
        # files: 10,000 queries in one call ran out of file descriptors
        for start in range(0, q.shape[0], ANN_QUERY_CHUNK):
            todo = np.arange(start, min(start + ANN_QUERY_CHUNK, q.shape[0]))
            fetch = k + (exclude is not None)
            while len(todo):
                d, i, full = self._ask(q[todo], k, fetch, None if exclude_ids is None else exclude_ids[todo])
                dist[todo[full]], ids[todo[full]] = d[full], i[full]
                todo = todo[~full]
                fetch *= 4  # too many candidates were dead rows: ask those queries for more
        return _sorted(dist, np.searchsorted(self.ids, ids))

    def _ask(self, q: np.ndarray, k: int, fetch: int, exclude_ids):
        nearest = {"column": "vector", "q": q, "k": fetch, "metric": self.metric}
        if self.nprobes is not None:
            nearest["nprobes"] = self.nprobes
        if self.refine_factor is not None:
            nearest["refine_factor"] = self.refine_factor
        hits = self.dataset.to_table(nearest=nearest, columns=["id", "_distance"])
        qi = hits["query_index"].to_numpy() if q.shape[0] > 1 or "query_index" in hits.column_names \
            else np.zeros(hits.num_rows, np.int64)
        hit_ids = hits["id"].to_numpy()
        hit_d = hits["_distance"].to_numpy()
        keep = np.ones(len(hit_ids), bool)
        if self._has_dead:
            # alive: the id is among self.ids (ascending): a binary search, no hash set of all ids per call
            at = np.minimum(np.searchsorted(self.ids, hit_ids), len(self.ids) - 1)
            keep &= self.ids[at] == hit_ids
        if exclude_ids is not None:
            keep &= hit_ids != exclude_ids[qi]
        qi, hit_ids, hit_d = qi[keep], hit_ids[keep], hit_d[keep]
        order = np.lexsort((hit_ids, hit_d, qi))
        qi, hit_ids, hit_d = qi[order], hit_ids[order], hit_d[order]
        counts = np.bincount(qi, minlength=q.shape[0])
        rank = np.arange(len(qi)) - np.repeat(np.cumsum(counts) - counts, counts)
        take = rank < k
        full = counts >= k
        out_d = np.full((q.shape[0], k), np.inf, np.float32)
        out_i = np.full((q.shape[0], k), -1, np.int64)
        out_d[qi[take], rank[take]] = hit_d[take]
        out_i[qi[take], rank[take]] = hit_ids[take]
        # a query with fewer than k live candidates from a query that asked for
        # every row cannot get more: that happens only when k > live rows, checked above
        return out_d, out_i, full


def _sorted(dist: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by (distance, position): ties go to the earlier row, deterministically."""
    order = np.lexsort((pos, dist), axis=1) if dist.shape[1] > 1 else np.zeros_like(pos)
    return np.take_along_axis(dist, order, 1), np.take_along_axis(pos, order, 1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true k neighbours found, over queries: recall@k."""
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth))
    return hits / truth.size


__all__ = ["METRICS", "ExactSearch", "IndexedSearch", "recall", "resolve_device"]
