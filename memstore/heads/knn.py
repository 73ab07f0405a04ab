"""The visual-memory kNN classifier of Geirhos et al. 2024, reading a memory.

A query's k nearest rows vote for their labels. With ``i`` the neighbour's
0-based rank and ``d`` its distance (cosine: 1 - cos):

=============  ===========================  ===============================
voting         vote of one neighbour         parameter
=============  ===========================  ===============================
``plurality``  1
``distance``   exp(-d) ** p                  ``power`` p = 1
``softmax``    exp((1 - d) / T)              ``temperature`` T = 0.07
``rank``       1 / (i + 2)
=============  ===========================  ===============================

Each vote is multiplied by the row's quality weight (``use_weights=True``),
so ``mem.reweight`` steers the head without refitting a model. The class with
the largest total wins. **Ties** (totals equal to 1e-12 relative) go to the
tied class whose nearest neighbour ranks first, i.e. 1-NN among the tied
classes; a query whose votes are all zero (every neighbour weighs 0) gets
uniform probabilities and the nearest neighbour's class.

Every prediction can be traced to its rows: :meth:`KNNClassifier.explain`
gives one row per (query, neighbour) with the row's id, provenance, vote and
share of the decision, and the memory version; ``fit(mem.at(version))``
reproduces a prediction made at that version exactly.

Examples
--------
>>> import numpy as np, tempfile, memstore
>>> mem = memstore.open(tempfile.mkdtemp() + "/toy.mem")
>>> _ = mem.add(np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32),
...             ["cat", "cat", "dog", "dog"], provenance={"uri": ["a", "b", "c", "d"]})
>>> clf = memstore.KNNClassifier(k=3, voting="rank").fit(mem)
>>> clf.predict(np.array([[0.8, 0.2]], np.float32)).tolist()
['cat']
>>> clf.explain(np.array([[0.8, 0.2]], np.float32)).select(["rank", "id", "label", "uri"]).to_pylist()[0]
{'rank': 0, 'id': 1, 'label': 'cat', 'uri': 'b'}
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, validate_data

from ..errors import InvalidInputError, UnknownIdsError
from ..search import METRICS, ExactSearch, check_k
from .base import INDEXES, POSITIVE, Integers, MemoryHead, StrOptions

VOTINGS = ("plurality", "distance", "softmax", "rank")

#: relative difference under which two class totals count as tied
TIE_TOLERANCE = 1e-12


def vote_weights(voting: str, distances: np.ndarray, *, power: float = 1.0,
                 temperature: float = 0.07) -> np.ndarray:
    """(n_queries, k) votes of neighbours sorted by distance, before row weights.

    >>> vote_weights("rank", np.zeros((1, 3))).round(3).tolist()
    [[0.5, 0.333, 0.25]]
    """
    d = distances.astype(np.float64)
    if voting == "plurality":
        return np.ones_like(d)
    if voting == "distance":
        return np.exp(-power * d)
    if voting == "softmax":
        logits = (1.0 - d) / temperature
        with np.errstate(over="ignore"):
            votes = np.exp(logits)
        # only metrics with unbounded distances (dot, l2) can overflow; shift those rows
        bad = ~np.isfinite(votes).all(1)
        if bad.any():
            votes[bad] = np.exp(logits[bad] - logits[bad].max(1, keepdims=True))
        return votes
    if voting == "rank":
        ranks = np.arange(d.shape[1], dtype=np.float64)
        return np.broadcast_to(1.0 / (ranks + 2.0), d.shape).copy()
    raise InvalidInputError(f"voting {voting!r} is not one of {VOTINGS}")


class KNNClassifier(ClassifierMixin, MemoryHead):
    """k-nearest-neighbour classifier over a memory (scikit-learn estimator).

    Parameters
    ----------
    k : int, default 50
        Neighbours that vote.
    voting : {"plurality", "distance", "softmax", "rank"}, default "rank"
        How a neighbour's vote depends on its rank and distance (module docstring).
        Rank voting was the best in Geirhos et al. 2024.
    metric : {"cosine", "dot", "l2"}, default "cosine"
    temperature : float, default 0.07
        T of softmax voting.
    power : float, default 1.0
        p of distance voting.
    use_weights : bool, default True
        Multiply each vote by the row's quality weight.
    index : {"auto", "exact", "ann"}, default "auto"
        Exact search, or the memory's ANN index (``Memory.create_index``);
        ``auto`` takes the index for large memories.
    nprobes, refine_factor : int, optional
        ANN search knobs; default: those ``create_index`` tuned.
    device : str, default "auto"
        Where exact search runs: the GPU when torch sees one.
    level : int, optional
        Predict at this level of the memory's taxonomy (``mem.set_taxonomy``;
        0: the roots): each row votes for its label's ancestor at that level
        (a row labelled above it votes for its own label). ``explain`` then
        adds the row's own label as ``row_label``.

    Attributes
    ----------
    classes_ : ndarray of the labels, sorted.
    memory_ : the fitted Memory (None when fitted on arrays).
    memory_version_ : the version the memory was read at.
    ids_ : (n_samples_fit_,) row ids, ascending.
    n_samples_fit_, n_features_in_ : int
    """

    # checked at fit (memstore.heads.base); k's upper bound, the rows, is checked against the memory
    _parameter_constraints = {
        "k": [Integers(1)],
        "voting": [StrOptions(set(VOTINGS))],
        "metric": [StrOptions(set(METRICS))],
        "temperature": [POSITIVE],
        "power": [POSITIVE],
        "use_weights": ["boolean"],
        "index": [StrOptions(set(INDEXES))],
        "nprobes": [Integers(1), None],
        "refine_factor": [Integers(1), None],
        "device": [str, torch.device, None],
        "level": [Integers(0), None],
    }
    _fitted_attributes = ("classes_",)
    _fit_hint = "fit(memory)"

    def __init__(self, k: int = 50, voting: str = "rank", *, metric: str = "cosine",
                 temperature: float = 0.07, power: float = 1.0, use_weights: bool = True,
                 index: str = "auto", nprobes: int | None = None, refine_factor: int | None = None,
                 device: str = "auto", level: int | None = None):
        self.k = k
        self.voting = voting
        self.metric = metric
        self.temperature = temperature
        self.power = power
        self.use_weights = use_weights
        self.index = index
        self.nprobes = nprobes
        self.refine_factor = refine_factor
        self.device = device
        self.level = level

    # -- fitting ---------------------------------------------------------------------
    def fit(self, X, y=None, sample_weight=None):
        """Read a memory (``mem`` or ``mem.at(version)``), a served one
        (``memstore.connect``), or arrays X (n, dim), y (n,).

        Nothing is learned: the head keeps the rows' ids, labels and weights
        and a search over their vectors (on a served memory, the server's).
        """
        from ..client import RemoteMemory
        from ..memory import Memory

        self._validate_params()
        if isinstance(X, (Memory, RemoteMemory)):
            if y is not None or sample_weight is not None:
                raise InvalidInputError("fit(memory) reads labels and weights from the memory; "
                                        "do not pass y or sample_weight")
            samples = X.samples
            self.memory_, self.ids_, labels, weights = X, samples.ids, samples.labels, samples.weights
            if isinstance(X, RemoteMemory):  # memstore.connect: the server searches, at this version
                self._snapshot, self.memory_version_ = None, samples.version
                self._taxonomy = X.taxonomy if self.level is not None else None
                self._searcher = X.searcher(self.metric, self.index, version=samples.version, ids=samples.ids)
            else:
                # keep the snapshot and its rows, not the handle's caches: a later write
                # through ``X`` moves the handle on, while this head stays at its version
                self._snapshot, self.memory_version_ = X._snapshot, X.version
                self._taxonomy = self._snapshot.taxonomy if self.level is not None else None
                self._searcher = X.searcher(self.metric, self.index, nprobes=self.nprobes,
                                            refine_factor=self.refine_factor, device=self.device) \
                    if len(samples) else None
            vectors, self._offsets = samples.vectors, samples.offsets
            n, dim = samples.vectors.shape
        else:
            vectors, labels, weights = self._check_arrays(X, y, sample_weight)
            self.memory_, self.memory_version_, self._snapshot, self._taxonomy = None, None, None, None
            self._offsets = None
            n, dim = vectors.shape
            self.ids_ = np.arange(n, dtype=np.int64)
            self._searcher = ExactSearch(vectors, self.metric, device=self.device) if n else None
        if n == 0:
            raise InvalidInputError("the memory holds no rows: add labelled rows before fitting")
        if labels.null_count:
            raise InvalidInputError(f"{labels.null_count} rows have no label; relabel or prune them")
        self._row_labels = labels
        if self.level is not None:
            labels = self._labels_at_level(labels)
        check_k(self.k, n)
        classes = pc.unique(labels).sort()
        self.classes_ = classes.to_numpy(zero_copy_only=False)
        self._codes = pc.index_in(labels, classes).to_numpy()  # (n,) class index of each row
        self._labels = labels
        self._vectors = vectors
        self._weights = weights if self.use_weights else np.ones(n, np.float32)
        self.n_samples_fit_, self.n_features_in_ = n, dim
        return self

    def _check_arrays(self, X, y, sample_weight) -> tuple[np.ndarray, pa.Array, np.ndarray]:
        """(vectors, labels, weights) of arrays, checked as scikit-learn's classifiers check them.

        Complex, empty, NaN or inf X, a continuous or missing y and sample
        weights of the wrong shape, negative or all zero are refused with
        memstore's InvalidInputError, scikit-learn's message kept (its error is
        the cause). Input of the wrong kind (sparse, objects that are not
        numbers) stays the TypeError scikit-learn raises.
        """
        try:
            vectors, y = validate_data(self, X, y, dtype=np.float32)
            check_classification_targets(y)
            weights = _check_sample_weight(sample_weight, vectors, dtype=np.float32, ensure_non_negative=True)
        except ValueError as exc:
            raise InvalidInputError(f"{exc} (fit takes a memory, or arrays X (n, dim) and y (n,))") from exc
        return vectors, pa.array(y), weights

    def _labels_at_level(self, labels: pa.Array) -> pa.Array:
        """The rows' labels read at ``level`` of the memory's taxonomy (memstore.taxonomy)."""
        from ..taxonomy import labels_at_level

        taxonomy = self._taxonomy
        if taxonomy is None or not taxonomy.num_rows:
            raise InvalidInputError(
                f"level={self.level!r} needs a memory with a taxonomy: fit(memory) after "
                "mem.set_taxonomy(...), or leave level=None")
        return labels_at_level(taxonomy, labels, self.level)

    # -- neighbours ------------------------------------------------------------------
    def _neighbors(self, X, k: int | None, ids=None):
        """(distances, positions), each (n_queries, k); X=None: leave-one-out over the memory.

        ``ids``: those rows of the memory as the queries, each leaving itself out.
        """
        self._check_fitted()
        k = self.k if k is None else k
        if ids is not None:
            positions = self._positions_of(ids)
            return self._searcher.search(self._vectors[positions], k, exclude=positions)
        if X is None:
            n = self.n_samples_fit_
            return self._searcher.search(self._vectors, k, exclude=np.arange(n))
        return self._searcher.search(X, k)

    def _positions_of(self, ids) -> np.ndarray:
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        positions = np.minimum(np.searchsorted(self.ids_, ids), len(self.ids_) - 1)
        missing = ids[self.ids_[positions] != ids]
        if len(missing):
            raise UnknownIdsError(f"ids {missing[:10].tolist()} are not rows of the memory this head was fitted "
                                  f"on (version {self.memory_version_}); pass ids the memory holds")
        return positions

    def kneighbors(self, X=None, k: int | None = None, return_distance: bool = True):
        """Distances and row ids of the k nearest rows, each (n_queries, k), nearest first.

        ``X=None`` searches every row of the memory for its neighbours, leaving
        the row itself out (leave-one-out). The ids are the memory's ``id``
        column (``0..n-1`` when fitted on arrays).
        """
        dist, pos = self._neighbors(X, k)
        ids = self.ids_[pos]
        return (dist, ids) if return_distance else ids

    # -- deciding --------------------------------------------------------------------
    def _votes(self, dist: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """(n_queries, k) vote of each neighbour: voting rule times row weight."""
        votes = vote_weights(self.voting, dist, power=self.power, temperature=self.temperature)
        return votes * self._weights[pos]

    def _decide(self, votes: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (n_queries, n_classes) and the winning class index per query."""
        nq, k = pos.shape
        n_classes = len(self.classes_)
        cell = (np.arange(nq)[:, None] * n_classes + self._codes[pos]).ravel()  # (nq * k,)
        totals = np.bincount(cell, weights=votes.ravel(), minlength=nq * n_classes).reshape(nq, n_classes)
        first = np.full(nq * n_classes, k, np.int64)  # rank of each class's nearest neighbour
        np.minimum.at(first, cell, np.tile(np.arange(k), nq))
        first = first.reshape(nq, n_classes)
        best = totals.max(1, keepdims=True)
        tied = totals >= best - TIE_TOLERANCE * np.abs(best)
        winner = np.where(tied, first, k + 1).argmin(1)
        sums = totals.sum(1, keepdims=True)
        proba = np.divide(totals, sums, out=np.full_like(totals, 1.0 / n_classes), where=sums > 0)
        return proba, winner

    def predict_proba(self, X=None) -> np.ndarray:
        """(n_queries, n_classes) share of the votes per class, columns in ``classes_`` order.

        ``X=None``: leave-one-out over the memory's own rows.
        """
        dist, pos = self._neighbors(X, None)
        return self._decide(self._votes(dist, pos), pos)[0]

    def predict(self, X=None) -> np.ndarray:
        """The winning label of each query (ties: module docstring); ``X=None``: leave-one-out."""
        dist, pos = self._neighbors(X, None)
        return self.classes_[self._decide(self._votes(dist, pos), pos)[1]]

    # -- attribution -----------------------------------------------------------------
    def explain(self, X=None, *, ids=None) -> pa.Table:
        """One row per (query, neighbour): who made each prediction, and how much.

        ``ids=``: rows of the memory as the queries, each leaving itself out
        (query by example: what would the memory predict for this row without it).

        Columns: query, rank, id, label, distance, vote_weight, share (of the
        query's total vote; the shares of the rows whose label won sum to the
        predicted class's probability), supports (label == predicted),
        predicted, the row's provenance columns, and memory_version. Join it
        with the memory through ``mem.sql(..., explained=table)`` on ``id``.
        """
        dist, pos = self._neighbors(X, None, ids)
        votes = self._votes(dist, pos)
        _, winner = self._decide(votes, pos)
        nq, k = pos.shape
        flat = pos.ravel()
        predicted = pa.array(self.classes_).take(pa.array(np.repeat(winner, k)))
        labels = self._labels.take(pa.array(flat))  # as they voted (at ``level``)
        sums = votes.sum(1, keepdims=True)
        share = np.divide(votes, sums, out=np.zeros_like(votes), where=sums > 0)
        columns = {
            "query": np.repeat(np.arange(nq, dtype=np.int64), k),
            "rank": np.tile(np.arange(k, dtype=np.int64), nq),
            "id": self.ids_[flat],
            "label": labels,
            "distance": dist.ravel(),
            "vote_weight": votes.ravel(),
            "share": share.ravel(),
            "supports": pc.equal(labels, predicted),
            "predicted": predicted,
        }
        if self.level is not None:
            columns["row_label"] = self._row_labels.take(pa.array(flat))
        table = pa.table(columns)
        if self._snapshot is not None:
            for name, column in self._provenance(flat).items():
                table = table.append_column(name, column)
        version = pa.array(np.full(nq * k, -1 if self.memory_version_ is None else self.memory_version_),
                           pa.int64(), mask=np.full(nq * k, self.memory_version_ is None))
        return table.append_column("memory_version", version)

    def _provenance(self, positions: np.ndarray) -> dict:
        """Provenance columns of the rows at ``positions`` (repeats allowed), read from Lance."""
        columns = [c for c in self._snapshot.provenance_columns if c not in ("label", "weight")]
        unique, back = np.unique(self._offsets[positions], return_inverse=True)
        rows = self._snapshot.data.take(unique, columns=columns)
        rows = rows.take(pa.array(back))
        return {c: rows[c] for c in columns}


__all__ = ["KNNClassifier", "VOTINGS", "vote_weights"]
