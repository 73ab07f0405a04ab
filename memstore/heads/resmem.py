"""ResMem (Yang et al. 2023): a trained model, plus a memory of what it got wrong.

The base model f is trained as usual. ``fit`` stores, for every training
row, its embedding (the base model's penultimate features, the input of its
last ``nn.Linear``) and its residual

    r_i = onehot(y_i) - softmax(f(x_i) / T)    (classification)
    r_i = y_i - f(x_i)                         (regression)

as a row of a memory (the residual is a vector column next to the
embedding). A prediction adds the residuals of the k nearest rows,

    ResMem(x) = softmax(f(x) / T) + Σ_i w_i r_i,   w_i ∝ exp(-d_i / σ),

where d_i is the search's distance from x's embedding to row i (``metric="l2"``, the
default: the *squared* Euclidean distance, LanceDB's convention; ``"cosine"``: 1 - cos) and the
weights sum to 1. So the memory corrects the model where its training rows say it is wrong.
With k = 1 and a small σ it reproduces the training labels exactly.

Examples
--------
>>> import numpy as np, torch
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
>>> X = np.random.default_rng(0).standard_normal((60, 2)).astype(np.float32)
>>> y = np.arange(60) % 3
>>> head = ResMem(model, k=1, sigma=1e-3).fit(X, y)
>>> bool((head.predict(X) == y).all())
True
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pyarrow as pa
import torch
from sklearn.utils.metaestimators import available_if

from ..errors import InvalidInputError
from ..search import METRICS, check_k
from .base import INDEXES, POSITIVE, HasMethods, Integers, MemoryHead, StrOptions

TASKS = ("classification", "regression")


def model_outputs(model: torch.nn.Module, X, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(outputs, features) of a torch model: features are the input of its last ``nn.Linear``.

    The model runs in eval mode (dropout off, batch-norm statistics frozen); the hook is
    removed and the model's train/eval mode restored afterwards, so it is left as it was.
    """
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise InvalidInputError(f"{type(model).__name__} has no torch.nn.Linear output layer whose input "
                                "could serve as the embedding")
    seen = []
    handle = linears[-1].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    outputs = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            device = next(model.parameters()).device
            for lo in range(0, len(X), batch_size):
                x = torch.as_tensor(np.asarray(X[lo:lo + batch_size])).to(device)
                outputs.append(model(x).float().cpu())
    finally:
        handle.remove()
        model.train(was_training)
    feats = torch.cat([s.float().reshape(len(s), -1).cpu() for s in seen])
    return torch.cat(outputs).numpy(), feats.numpy()


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _weights(dist: np.ndarray, sigma: float) -> np.ndarray:
    """(n, k) neighbour weights softmax(-d / σ) along each row."""
    logw = -dist.astype(np.float64) / sigma
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    return w / w.sum(axis=1, keepdims=True)


class ResMem(MemoryHead):
    """A base model plus the residual memory of its training rows (scikit-learn estimator).

    Parameters
    ----------
    base_model : a trained torch module mapping a batch of inputs to logits
        (classification) or predictions (regression); its last ``nn.Linear``
        layer's input is the embedding.
    memory : a memory (or a path) that ``fit`` adds the rows to; default a
        temporary one. Every row it holds must carry a residual.
    k : neighbours. sigma : σ of the weights exp(-d / σ). temperature : T of
    softmax(f(x) / T). metric : distance of embeddings. task :
    ``"classification"`` or ``"regression"``.
    """

    # checked at fit (memstore.heads.base); k's upper bound, the rows, is checked against the memory
    _parameter_constraints = {
        "base_model": [torch.nn.Module],
        "memory": [None, str, os.PathLike, HasMethods(["add", "sql"])],
        "k": [Integers(1)],
        "sigma": [POSITIVE],
        "temperature": [POSITIVE],
        "metric": [StrOptions(set(METRICS))],
        "task": [StrOptions(set(TASKS))],
        "batch_size": [Integers(1)],
        "index": [StrOptions(set(INDEXES))],
    }
    _fitted_attributes = ("memory_",)

    def __init__(self, base_model, memory=None, k: int = 10, sigma: float = 1.0, temperature: float = 1.0,
                 metric: str = "l2", task: str = "classification", batch_size: int = 256, index: str = "auto"):
        self.base_model = base_model
        self.memory = memory
        self.k = k
        self.sigma = sigma
        self.temperature = temperature
        self.metric = metric
        self.task = task
        self.batch_size = batch_size
        self.index = index

    # -- fitting -------------------------------------------------------------------------
    def _base(self, X) -> tuple[np.ndarray, np.ndarray]:
        """(f(x) as probabilities or predictions, features)."""
        out, feats = model_outputs(self.base_model, X, self.batch_size)
        if self.task == "classification":
            return _softmax(out / self.temperature), feats
        return out.reshape(len(out), -1), feats

    def fit(self, X, y, provenance: dict | None = None):
        """Store every training row's embedding and residual in the memory (one version)."""
        import memstore

        self._validate_params()
        pred, feats = self._base(X)
        y = np.asarray(y)
        if len(y) != len(pred):
            raise InvalidInputError(f"{len(y)} targets for {len(pred)} inputs")
        if self.task == "classification":
            n_classes = pred.shape[1]
            if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
                raise InvalidInputError(f"classification targets must be class indices 0..{n_classes - 1} "
                                        f"(the base model's outputs), got {y[:5].tolist()}...")
            self.classes_ = np.arange(n_classes)
            residual = np.eye(n_classes, dtype=np.float32)[y] - pred
            labels = y.astype(np.int64)
        else:
            target = y.reshape(len(y), -1).astype(np.float32)
            if target.shape[1] != pred.shape[1]:
                raise InvalidInputError(f"targets have {target.shape[1]} columns, the base model predicts "
                                        f"{pred.shape[1]}")
            residual, labels = target - pred, "regression"  # rows need a label; the target is f(x_i) + r_i
        mem = self.memory
        if mem is None:
            mem = memstore.open(tempfile.mkdtemp(prefix="resmem-") + "/memory.mem")
        elif not hasattr(mem, "add"):
            mem = memstore.open(mem)
        column = pa.FixedSizeListArray.from_arrays(pa.array(residual.astype(np.float32).ravel()), residual.shape[1])
        mem.add(feats, labels, provenance={**(provenance or {}), "residual": column},
                message=f"ResMem: {len(feats)} residuals of {type(self.base_model).__name__}")
        self.memory_ = mem
        self._load_memory()
        return self

    def _load_memory(self) -> None:
        mem = self.memory_
        table = mem.sql("SELECT id, residual FROM samples ORDER BY id").to_arrow_table()
        if table["residual"].null_count:
            raise InvalidInputError(f"{table['residual'].null_count} rows of the memory carry no residual: "
                                    "give ResMem a memory of its own")
        self.residuals_ = np.asarray(table["residual"].combine_chunks().flatten()).reshape(table.num_rows, -1)
        self.ids_ = mem.samples.ids
        self.memory_version_ = mem.version
        check_k(self.k, len(self.ids_))  # before a searcher (an index="ivf" one) is built for nothing
        self._searcher = mem.searcher(self.metric, self.index, k=self.k)

    # -- predicting ----------------------------------------------------------------------
    def _parts(self, X):
        """(base f(x), neighbour weights (n, k), positions (n, k), distances (n, k))."""
        self._check_fitted()
        base, feats = self._base(X)
        dist, pos = self._searcher.search(feats, self.k)
        return base, _weights(dist, self.sigma), pos, dist

    def score_grid(self, X, y, *, k=None, sigma=None) -> pa.Table:
        """``score`` for every combination of k and σ, from one forward pass and one search.

        The base model runs once and the memory is searched once, for the
        largest k; smaller k take the nearest of those. This is how k and σ are
        chosen on validation data. Parameters left out take this head's value.

        Returns
        -------
        pyarrow.Table with columns k, sigma, score (accuracy, or R² for
        regression); one row per combination, in the order of the arguments.

        Examples
        --------
        Choose on validation data, then set the best (``examples/resmem_fashion.py``)::

            grid = head.score_grid(X_val, y_val, k=[1, 10, 50], sigma=[0.1, 1.0, 10.0])
            best = max(grid.to_pylist(), key=lambda row: row["score"])
            head.set_params(k=best["k"], sigma=best["sigma"])
        """
        from sklearn.metrics import accuracy_score, r2_score

        self._check_fitted()
        ks = [self.k] if k is None else list(np.atleast_1d(k))
        sigmas = [self.sigma] if sigma is None else list(np.atleast_1d(sigma))
        for value in ks:
            check_k(value, len(self.ids_))
        for value in sigmas:
            if not value > 0:
                raise InvalidInputError(f"sigma must be positive, got {value!r}")
        base, feats = self._base(X)
        searcher = self._searcher if max(ks) <= self.k else self.memory_.searcher(self.metric, self.index, k=max(ks))
        dist, pos = searcher.search(feats, int(max(ks)))
        metric = accuracy_score if self.task == "classification" else r2_score
        rows = []
        for kk in ks:
            for s in sigmas:
                pred = self._predictions(self._corrected(base, _weights(dist[:, :kk], s), pos[:, :kk]))
                rows.append({"k": int(kk), "sigma": float(s), "score": float(metric(y, pred))})
        return pa.Table.from_pylist(rows)

    def decision_function(self, X) -> np.ndarray:
        """f(x) + Σ w_i r_i: (n, classes) scores, or (n, outputs) predictions for regression."""
        base, w, pos, _ = self._parts(X)
        return self._corrected(base, w, pos)

    def _corrected(self, base: np.ndarray, w: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """f(x) + Σ_i w_i r_i over each query's neighbours."""
        return base + np.einsum("nk,nkc->nc", w, self.residuals_[pos])

    def _has_proba(self) -> bool:
        # a regression head has no probabilities, and hasattr(head, "predict_proba") says so,
        # as scikit-learn's meta-estimators and checks expect (sklearn.utils.metaestimators.available_if)
        if self.task != "classification":
            raise AttributeError("predict_proba is for task='classification'")
        return True

    @available_if(_has_proba)
    def predict_proba(self, X) -> np.ndarray:
        """The ResMem scores clipped at 0 and normalised per row (task="classification" only)."""
        scores = np.clip(self.decision_function(X), 0, None)
        total = scores.sum(axis=1, keepdims=True)
        return np.where(total > 0, scores / np.where(total > 0, total, 1), 1.0 / scores.shape[1])

    def predict(self, X) -> np.ndarray:
        return self._predictions(self.decision_function(X))

    def _predictions(self, scores: np.ndarray) -> np.ndarray:
        """Classes from ResMem scores, or the predictions themselves (regression)."""
        if self.task == "classification":
            return self.classes_[scores.argmax(axis=1)]
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def score(self, X, y) -> float:
        """Accuracy (classification) or R² (regression), as scikit-learn's mixins."""
        from sklearn.metrics import accuracy_score, r2_score

        return (accuracy_score if self.task == "classification" else r2_score)(y, self.predict(X))

    def explain(self, X) -> pa.Table:
        """The memory part of each prediction, one row per (query, neighbour).

        Columns: query, rank, id, distance, weight (w_i), label, and
        ``contribution``: w_i r_i of the predicted class (classification) or
        of the first output (regression). For each query the contributions add
        up to ResMem(x) - f(x) there. Join with ``mem.sql`` on id.
        """
        base, w, pos, dist = self._parts(X)
        scores = self._corrected(base, w, pos)
        col = scores.argmax(axis=1) if self.task == "classification" else np.zeros(len(scores), np.int64)
        contribution = w * self.residuals_[pos, col[:, None]]
        n, k = pos.shape
        labels = self.memory_.samples.labels.take(pa.array(pos.ravel()))
        return pa.table({
            "query": np.repeat(np.arange(n), k), "rank": np.tile(np.arange(k), n),
            "id": self.ids_[pos.ravel()], "distance": dist.ravel(), "weight": w.ravel(),
            "label": labels, "contribution": contribution.ravel(),
            "memory_version": np.full(n * k, self.memory_version_),
        })


__all__ = ["ResMem", "model_outputs"]
