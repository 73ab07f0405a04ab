"""Retrieval-augmented classification (RAC, Long et al. 2022): a classifier that reads a memory.

Two branches look at each input x:

* the **base** branch, a trainable torch model: f_base(x) -> class logits
  (default: a linear layer on x);
* the **retrieval** branch: the k nearest rows of a frozen memory, searched
  with the query vector of x (from a frozen ``query_encoder``, or x itself),
  become k tokens: the row's label (or its text, through a frozen
  ``text_encoder``), plus its rank and distance. A small transformer encoder
  reads the k tokens together, as the paper's text encoder reads the
  neighbours' texts concatenated, and a linear layer gives f_ret(x).

The two are fused as in the paper,

    f(x) = L/2 (f_ret(x)/||f_ret(x)|| + f_base(x)/||f_base(x)||),

and trained together with cross-entropy on the training data, the memory
frozen (L is learned unless ``scale`` is given). ``logit_adjustment=τ`` adds
τ log(class prior) to the training logits (Menon et al. 2021), the usual loss
for long-tailed data; predictions use the plain logits.

Training rows that are themselves rows of the memory (the paper's setting:
the training set is the memory) must not find themselves: pass their
``memory_ids`` and each is left out of its own neighbours. Otherwise the
retrieval branch learns to copy the nearest label, which is right in training
and wrong at test time.

Because the neighbours' labels are read, not learned, the memory can change
after training: :meth:`RACClassifier.use_memory` reads another version (rows
added for a rare class, say) without retraining. With a text encoder, labels
never seen in training work too.

Examples
--------
>>> import numpy as np, tempfile, memstore
>>> rng = np.random.default_rng(0)
>>> centers = rng.standard_normal((3, 8)).astype(np.float32) * 3
>>> y = np.arange(300) % 3
>>> X = centers[y] + rng.standard_normal((300, 8)).astype(np.float32)
>>> mem = memstore.open(tempfile.mkdtemp() + "/toy.mem")
>>> ids = mem.add(X, [f"class {c}" for c in y]).ids
>>> rac = RACClassifier(mem, k=8, epochs=5).fit(X, y, memory_ids=ids)
>>> rac.score(X, y) > 0.9
True
"""

from __future__ import annotations

import copy
import math
import os
import sys
import warnings
from numbers import Integral

import numpy as np
import pyarrow as pa
import torch
from sklearn.base import ClassifierMixin
from torch import nn
from tqdm.auto import tqdm

from ..device import resolve_device
from ..errors import InvalidInputError
from ..search import METRICS, check_k
from .base import INDEXES, NON_NEGATIVE, POSITIVE, HasMethods, Integers, MemoryHead, StrOptions

#: a training row whose nearest neighbour lies closer than this is taken to be that row
SELF_MATCH_DISTANCE = 1e-6


class RetrievalBranch(nn.Module):
    """f_ret: k neighbour tokens (label, rank, distance) -> class logits.

    ``table`` (vocabulary, E) holds frozen text embeddings of the labels, or
    is ``None`` for a learned embedding per label of the vocabulary.
    """

    def __init__(self, vocabulary: int, k: int, n_classes: int, width: int = 128, heads: int = 4,
                 layers: int = 1, table: torch.Tensor | None = None, dropout: float = 0.1):
        super().__init__()
        if table is None:
            self.label = nn.Embedding(vocabulary, width)
            self.register_buffer("table", None)
        else:
            self.label = nn.Linear(table.shape[1], width)  # a projection of the frozen text vectors
            self.register_buffer("table", table.float())
        self.rank = nn.Embedding(k, width)
        self.distance = nn.Linear(1, width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(width, n_classes)
        self.register_buffer("distance_stats", torch.tensor([0.0, 1.0]))  # (mean, std) of training distances

    def forward(self, tokens: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
        """tokens, distances (batch, k) -> f_ret (batch, classes)."""
        labels = self.label(self.table[tokens]) if self.table is not None else self.label(tokens)
        mean, std = self.distance_stats
        d = ((distances - mean) / std).unsqueeze(-1)  # (batch, k, 1)
        h = self.encoder(labels + self.rank.weight[: tokens.shape[1]] + self.distance(d))  # (batch, k, width)
        return self.out(h.mean(1))


class RACModel(nn.Module):
    """The fused model: L/2 (f_ret/||f_ret|| + f_base/||f_base||)."""

    def __init__(self, base: nn.Module, retrieval: RetrievalBranch, scale: float | None):
        super().__init__()
        self.base, self.retrieval = base, retrieval
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale or 10.0)), requires_grad=scale is None)

    def parts(self, x, tokens, distances) -> tuple[torch.Tensor, torch.Tensor]:
        """(base part, retrieval part) of the fused logits, each (batch, classes)."""
        return self.base_part(x), self.retrieval_part(tokens, distances)

    def base_part(self, x) -> torch.Tensor:
        """L/2 f_base/||f_base||, (batch, classes)."""
        return self.log_scale.exp() / 2 * nn.functional.normalize(self.base(x).float(), dim=1)

    def retrieval_part(self, tokens, distances) -> torch.Tensor:
        """L/2 f_ret/||f_ret||, (batch, classes)."""
        return self.log_scale.exp() / 2 * nn.functional.normalize(self.retrieval(tokens, distances), dim=1)

    def forward(self, x, tokens, distances):
        base, ret = self.parts(x, tokens, distances)
        return base + ret


class RACClassifier(ClassifierMixin, MemoryHead):
    """A trainable base classifier fused with a retrieval branch over a frozen memory.

    Parameters
    ----------
    memory : a memory, ``mem.at(version)`` or a path. Its rows' labels (or
        ``text_column``) are what the retrieval branch reads.
    base_model : torch module, optional
        Maps a batch of inputs X to (batch, classes) logits; trained further by
        ``fit`` (on a copy). Default: a linear layer on X (2-D features).
    query_encoder : encoder, optional
        Maps X to vectors of the memory's space (``encode(X) -> (n, dim)``), e.g.
        :func:`memstore.encoders.efficientnet_lite0`. Default: X is the query.
        ``fit``/``predict`` also take precomputed ``queries=``.
    k : neighbours read per input.
    text_encoder : encoder, optional
        Encodes each label text once (e.g. :func:`memstore.encoders.sentence_transformer`);
        the branch then reads text meaning, and labels unseen in training still work.
        Default: a learned embedding per label.
    text_column : str, optional
        A provenance column to read instead of the label (captions, say).
    metric, index : the memory search (see ``Memory.searcher``).
    width, heads, layers : size of the retrieval branch's transformer.
    scale : L; default learned, starting at 10.
    logit_adjustment : τ of the logit-adjusted loss; 0 is plain cross-entropy.
    epochs, batch_size, lr, weight_decay : AdamW with a cosine schedule.
    device : where the model trains and runs ("cpu", "cuda", "auto").
    random_state : seeds initialisation and batch order (the global torch
        random state is left alone).
    progress : show a bar over epochs; default on a terminal.
    """

    # checked at fit (memstore.heads.base); k's upper bound, the rows, is checked against the memory
    _parameter_constraints = {
        "memory": [str, os.PathLike, HasMethods(["searcher", "sql"])],
        "base_model": [nn.Module, None],
        "query_encoder": [HasMethods(["encode"]), None],
        "k": [Integers(1)],
        "text_encoder": [HasMethods(["encode"]), None],
        "text_column": [str, None],
        "metric": [StrOptions(set(METRICS))],
        "index": [StrOptions(set(INDEXES))],
        "width": [Integers(1)],
        "heads": [Integers(1)],
        "layers": [Integers(1)],
        "scale": [POSITIVE, None],
        "logit_adjustment": [NON_NEGATIVE],
        "epochs": [Integers(1)],
        "batch_size": [Integers(1)],
        "lr": [POSITIVE],
        "weight_decay": [NON_NEGATIVE],
        "device": [str, torch.device, None],
        "random_state": [Integral],
        "progress": ["boolean", None],
    }
    _fitted_attributes = ("model_",)

    def __init__(self, memory, base_model=None, query_encoder=None, k: int = 16, text_encoder=None,
                 text_column: str | None = None, metric: str = "cosine", index: str = "auto", width: int = 128,
                 heads: int = 4, layers: int = 1, scale: float | None = None, logit_adjustment: float = 0.0,
                 epochs: int = 20, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1e-4,
                 device="cpu", random_state: int = 0, progress: bool | None = None):
        self.memory = memory
        self.base_model = base_model
        self.query_encoder = query_encoder
        self.k = k
        self.text_encoder = text_encoder
        self.text_column = text_column
        self.metric = metric
        self.index = index
        self.width = width
        self.heads = heads
        self.layers = layers
        self.scale = scale
        self.logit_adjustment = logit_adjustment
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.device = device
        self.random_state = random_state
        self.progress = progress

    # -- the memory ----------------------------------------------------------------------
    def _pin(self, memory):
        import memstore

        mem = memory if hasattr(memory, "samples") else memstore.open(memory, read_only=True)
        if not len(mem):
            raise InvalidInputError(f"the memory at version {mem.version} holds no rows to retrieve from")
        return mem.at(mem.version)  # a frozen view: later writes do not reach a fitted model

    def _row_texts(self, mem) -> list[str]:
        """The text each memory row contributes, in the memory's id order."""
        if self.text_column is None:
            return [str(v) for v in mem.samples.labels.to_pylist()]
        columns = mem.sql("SELECT * FROM samples LIMIT 0").columns
        if self.text_column not in columns:
            raise InvalidInputError(f"text_column {self.text_column!r} is not a column of the memory; "
                                    f"it has {columns}")
        table = mem.sql(f'SELECT id, CAST("{self.text_column}" AS VARCHAR) AS t FROM samples ORDER BY id'
                        ).to_arrow_table()
        return ["" if t is None else t for t in table["t"].to_pylist()]

    def _bind(self, mem) -> None:
        """Read the memory's row texts into tokens, extending the vocabulary where allowed.

        Everything is checked and computed first, then set: a memory that cannot
        be read leaves the model as it was.
        """
        fitted = hasattr(self, "model_")
        if fitted and mem.dim != self.memory_.dim:
            raise InvalidInputError(f"the memory holds {mem.dim}-d vectors, the model was trained on "
                                    f"{self.memory_.dim}-d ones: give it a memory of the same encoder")
        check_k(self.k, len(mem))  # before a searcher (an index="ivf" one) is built for nothing
        texts = self._row_texts(mem)
        vocabulary = dict(getattr(self, "_vocabulary", {}))
        unseen = sorted({t for t in texts if t not in vocabulary})
        if unseen and fitted and self.text_encoder is None:
            raise InvalidInputError(f"the memory holds labels the model never saw: {unseen[:5]}; a learned "
                                    "label embedding cannot read them - fit again, or fit with a text_encoder")
        for t in unseen:
            vocabulary[t] = len(vocabulary)
        table = self._text_table(list(vocabulary)) if fitted and unseen else None
        searcher = mem.searcher(self.metric, self.index, k=self.k)
        self._vocabulary, self.vocabulary_ = vocabulary, list(vocabulary)
        self._row_tokens = np.fromiter((vocabulary[t] for t in texts), np.int64, len(texts))
        self.memory_, self.memory_version_, self.ids_ = mem, mem.version, mem.samples.ids
        self._searcher = searcher
        if table is not None:
            self.model_.retrieval.table = table.to(self._device)

    def _text_table(self, texts: list[str]) -> torch.Tensor | None:
        """(len(texts), E) frozen text vectors, or None without a text encoder."""
        if self.text_encoder is None:
            return None
        return torch.from_numpy(np.asarray(self.text_encoder.encode(texts, progress=False), np.float32))

    def use_memory(self, memory):
        """Read another memory (or version) from now on, without retraining; returns self.

        The rows' labels must be labels seen in training, unless the model has a
        text encoder. The distances are assumed to be on the training memory's scale.
        """
        self._check_fitted()
        self._bind(self._pin(memory))
        return self

    # -- inputs --------------------------------------------------------------------------
    def _queries(self, X, queries) -> np.ndarray:
        if queries is None:
            queries = self.query_encoder.encode(X) if self.query_encoder is not None else X
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2:
            raise InvalidInputError(f"queries must be (n, dim) vectors of the memory's space, got shape "
                                    f"{q.shape}; pass query_encoder= or queries=")
        if len(q) != len(X):
            raise InvalidInputError(f"{len(q)} queries for {len(X)} inputs")
        return q

    def _neighbours(self, X, queries, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, positions), each (n, k)."""
        return self._searcher.search(self._queries(X, queries), self.k, exclude=exclude)

    def _exclusions(self, memory_ids, n: int) -> np.ndarray | None:
        """Memory positions of the training rows' own rows (-1: not in the memory)."""
        if memory_ids is None:
            return None
        ids = np.asarray(memory_ids, dtype=np.int64).reshape(-1)
        if len(ids) != n:
            raise InvalidInputError(f"memory_ids has {len(ids)} entries for {n} training rows")
        pos, known = self.memory_.samples.positions(ids)
        unknown = ~known & (ids != -1)
        if unknown.any():
            raise InvalidInputError(f"memory_ids {ids[unknown][:5].tolist()} are not rows of the memory at "
                                    f"version {self.memory_version_}; use -1 for rows outside it")
        return np.where(known, pos, -1)

    # -- fitting -------------------------------------------------------------------------
    def _check_param_relations(self) -> None:
        # the transformer splits width evenly across its attention heads
        if self.width % self.heads:
            raise InvalidInputError(f"width {self.width} must be a multiple of heads {self.heads}")

    def _base_module(self, X, n_classes: int) -> nn.Module:
        if self.base_model is not None:
            return copy.deepcopy(self.base_model)  # fit leaves the caller's model untouched
        X0 = np.asarray(X[:1])
        if X0.ndim != 2:
            raise InvalidInputError(f"the default base model is a linear layer on 2-D features, got X of shape "
                                    f"{np.shape(X)}; pass base_model= a torch module for other inputs")
        return nn.Linear(X0.shape[1], n_classes)

    def fit(self, X, y, *, queries=None, memory_ids=None):
        """Train both branches on (X, y), reading the memory's neighbours of each row.

        Parameters
        ----------
        X : inputs of the base model (features, or images for a CNN base).
        y : class labels (any hashable values); ``classes_`` is their sorted set.
        queries : (n, dim) query vectors of X, if computed already.
        memory_ids : (n,) the memory id of each training row (-1: not in the
            memory); each row is left out of its own neighbours.
        """
        self._validate_params()
        for name in ("_vocabulary", "model_"):
            self.__dict__.pop(name, None)
        y = np.asarray(y)
        if len(y) != len(X):
            raise InvalidInputError(f"{len(y)} labels for {len(X)} inputs")
        self.classes_, target = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise InvalidInputError(f"fit needs at least two classes, got {self.classes_.tolist()}")
        self._bind(self._pin(self.memory))
        k = check_k(self.k, len(self.ids_) - (memory_ids is not None))
        exclude = self._exclusions(memory_ids, len(X))
        dist, pos = self._neighbours(X, queries, exclude)
        if memory_ids is None and np.mean(dist[:, 0] <= SELF_MATCH_DISTANCE) > 0.5:
            warnings.warn("most training rows find a memory row at distance 0, most likely their own: pass "
                          "memory_ids= so each is left out, or the retrieval branch learns to copy labels",
                          stacklevel=2)
        self._device = resolve_device(self.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            branch = RetrievalBranch(len(self.vocabulary_), k, len(self.classes_), self.width, self.heads,
                                     self.layers, self._text_table(self.vocabulary_))
            branch.distance_stats = torch.tensor([dist.mean(), dist.std() + 1e-6], dtype=torch.float32)
            self.model_ = RACModel(self._base_module(X, len(self.classes_)), branch, self.scale).to(self._device)
            self._check_base_output(X)
            self.history_ = self._train(X, target, self._row_tokens[pos], dist)
        return self

    def _check_base_output(self, X) -> None:
        with torch.no_grad():
            out = self.model_.base(self._batch(X, np.arange(min(2, len(X)))))
        if out.ndim != 2 or out.shape[1] != len(self.classes_):
            raise InvalidInputError(f"base_model returns shape {tuple(out.shape)}; it must return "
                                    f"(batch, {len(self.classes_)}) logits, one per class of y")

    def _batch(self, X, index: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(X[index]) if not isinstance(X, torch.Tensor) else X[index])
        # numpy's float64 would not meet a float32 model; half-precision inputs stay, for a half model
        return (x.float() if not x.is_floating_point() or x.dtype == torch.float64 else x).to(self._device)

    def _train(self, X, target: np.ndarray, tokens: np.ndarray, dist: np.ndarray) -> list[float]:
        """AdamW with a cosine schedule; returns the mean loss of each epoch."""
        model, n = self.model_, len(target)
        steps = self.epochs * math.ceil(n / self.batch_size)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=self.lr,
                                      weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        prior = np.bincount(target, minlength=len(self.classes_)) / n
        adjust = torch.as_tensor(self.logit_adjustment * np.log(np.maximum(prior, 1e-12)), dtype=torch.float32,
                                 device=self._device)
        y, tok, d = (torch.as_tensor(a).to(self._device) for a in (target, tokens, dist.astype(np.float32)))
        show = sys.stderr.isatty() if self.progress is None else self.progress
        history = []
        model.train()
        for _ in tqdm(range(self.epochs), desc="RAC fit", unit="epoch", disable=not show):
            order = torch.randperm(n).numpy()
            total = 0.0
            for lo in range(0, n, self.batch_size):
                idx = order[lo:lo + self.batch_size]
                logits = model(self._batch(X, idx), tok[idx], d[idx])
                loss = nn.functional.cross_entropy(logits + adjust, y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.detach()) * len(idx)
            history.append(total / n)
        model.eval()
        return history

    # -- predicting ----------------------------------------------------------------------
    def _run(self, X, dist: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(base part, retrieval part) (n, classes) of the model on X with these neighbours."""
        return self._base_part(X, len(pos)), self._retrieval_part(dist, pos)

    @torch.inference_mode()
    def _base_part(self, X, n: int, batch_size: int = 1024) -> np.ndarray:
        return torch.cat([self.model_.base_part(self._batch(X, np.arange(lo, min(lo + batch_size, n)))).cpu()
                          for lo in range(0, n, batch_size)]).numpy()

    @torch.inference_mode()
    def _retrieval_part(self, dist: np.ndarray, pos: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        tokens = torch.as_tensor(self._row_tokens[pos]).to(self._device)
        d = torch.as_tensor(dist.astype(np.float32)).to(self._device)
        return torch.cat([self.model_.retrieval_part(tokens[lo:lo + batch_size], d[lo:lo + batch_size]).cpu()
                          for lo in range(0, len(pos), batch_size)]).numpy()

    def decision_parts(self, X, *, queries=None) -> tuple[np.ndarray, np.ndarray]:
        """The base and retrieval branches' parts of the fused logits, each (n, classes).

        They add up to :meth:`decision_function`; the argmax of each says what
        that branch alone would predict (both are scaled by L/2 on the unit sphere).
        """
        base, ret, _, _ = self._parts(X, queries)
        return base, ret

    def _parts(self, X, queries):
        """(base part, retrieval part) (n, classes), distances and positions (n, k)."""
        self._check_fitted()
        dist, pos = self._neighbours(X, queries)
        base, ret = self._run(X, dist, pos)
        return base, ret, dist, pos

    def decision_function(self, X, *, queries=None) -> np.ndarray:
        """The fused logits f(x), (n, classes)."""
        base, ret = self.decision_parts(X, queries=queries)
        return base + ret

    def predict_proba(self, X, *, queries=None) -> np.ndarray:
        """softmax(f(x)), (n, classes) in the order of ``classes_``."""
        return torch.softmax(torch.from_numpy(self.decision_function(X, queries=queries)), 1).numpy()

    def predict(self, X, *, queries=None) -> np.ndarray:
        self._check_fitted()
        return self.classes_[self.decision_function(X, queries=queries).argmax(1)]

    def score(self, X, y, sample_weight=None, *, queries=None) -> float:
        from sklearn.metrics import accuracy_score

        return accuracy_score(y, self.predict(X, queries=queries), sample_weight=sample_weight)

    def kneighbors(self, X, *, queries=None) -> tuple[np.ndarray, np.ndarray]:
        """(distances, ids) of the k memory rows each input reads, nearest first."""
        self._check_fitted()
        dist, pos = self._neighbours(X, queries)
        return dist, self.ids_[pos]

    def explain(self, X, *, queries=None) -> pa.Table:
        """Which memory rows made each prediction, and how much: one row per (query, neighbour).

        Columns: query, rank, id, label (the row's text as read), distance;
        ``contribution``: how much the predicted class's fused logit would
        drop if the row were gone from the memory, the next nearest row taking
        its place: exactly what ``mem.forget`` of that row would change (NaN
        if the memory holds only k rows). Negative: the row speaks against the
        prediction. Then supports (the row's text names the predicted class),
        predicted, ``base_part`` and ``retrieval_part`` (the predicted class's
        logit from each branch; they add up to it), memory_version. Join with
        ``mem.sql`` on id.

        The transformer reads the k rows together, so a row's effect depends
        on the others: the contributions need not add up to the retrieval part.
        """
        self._check_fitted()
        q = self._queries(X, queries)
        k = self.k
        spare = len(self.ids_) > k  # a (k+1)-th row to take a removed row's place
        dist, pos = self._searcher.search(q, k + spare)
        base, ret = self._run(X, dist[:, :k], pos[:, :k])
        fused = base + ret
        n, rows = len(pos), np.arange(len(pos))
        winner = fused.argmax(1)
        contribution = np.full((n, k), np.nan)  # stays NaN where no row could take the place
        for j in range(k if spare else 0):  # only the retrieval branch sees the change
            keep = np.delete(np.arange(k + 1), j)
            without = base + self._retrieval_part(dist[:, keep], pos[:, keep])
            contribution[:, j] = fused[rows, winner] - without[rows, winner]
        pos = pos[:, :k]
        predicted = self.classes_[winner]
        texts = np.asarray(self.vocabulary_, dtype=object)[self._row_tokens[pos]]
        return pa.table({
            "query": np.repeat(rows, k), "rank": np.tile(np.arange(k), n),
            "id": self.ids_[pos.ravel()], "label": texts.ravel().tolist(), "distance": dist[:, :k].ravel(),
            "contribution": contribution.ravel(),
            "supports": texts.ravel() == np.repeat(predicted.astype(str), k),
            "predicted": np.repeat(predicted, k).tolist(),
            "base_part": np.repeat(base[rows, winner], k), "retrieval_part": np.repeat(ret[rows, winner], k),
            "memory_version": np.full(n * k, self.memory_version_),
        })


__all__ = ["RACClassifier", "RACModel", "RetrievalBranch"]
