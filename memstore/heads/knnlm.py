"""The kNN-LM of Khandelwal et al. 2020, reading its datastore from a memory.

A datastore row is (key, value): the key is the language model's hidden state
at a position of a corpus, the value the token that came next. At test time
the hidden state of the context x is the query, and

    p_kNN(y | x) ∝ Σ_i 1[y = v_i] exp(-d(k_i, f(x)) / T)   over the k nearest rows,
    p(y | x) = λ p_kNN(y | x) + (1 - λ) p_LM(y | x),

computed in log space. With λ = 0 it is the base LM, exactly.

The key is the input to the last feed-forward block (``layer="ffn_input"``,
as in the paper: after the block's layer norm) or the final hidden state
(``layer="final"``, the input to the output embedding). Both are read by
forward hooks, so the same keys come out of a plain forward pass and of
``model.generate`` (see :class:`KNNLogitsProcessor`).

A model is a Hugging Face transformers causal LM, or any torch module whose
``forward(input_ids)`` returns ``(logits, keys)``.

Examples
--------
>>> import numpy as np, tempfile, torch, memstore
>>> from memstore.heads.knnlm import KNNLM, build_datastore
>>> class Toy(torch.nn.Module):  # a bigram "LM": the key is the current token's embedding
...     def __init__(self):
...         super().__init__()
...         torch.manual_seed(0)
...         self.emb, self.out = torch.nn.Embedding(5, 4), torch.nn.Linear(4, 5)
...     def forward(self, ids):
...         h = self.emb(ids)
...         return self.out(h), h
>>> mem = memstore.open(tempfile.mkdtemp() + "/ds.mem")
>>> build_datastore(mem, Toy(), [[0, 1, 2, 3, 4, 0, 1]]).rows
6
>>> lm = KNNLM(Toy(), mem, k=1, lmbda=1.0, temperature=0.01)
>>> lm.log_probs(torch.tensor([[2]]))[0, 0].argmax().item()  # 2 was followed by 3
3
"""

from __future__ import annotations

import math
import sys
import weakref
from numbers import Real

import numpy as np
import pyarrow as pa
import torch

from ..errors import InvalidInputError
from ..search import METRICS, check_k
from .base import INDEXES, POSITIVE, Integers, Interval, StrOptions, validate_params

KEY_LAYERS = ("ffn_input", "final")
#: module names taken for a transformer block's feed-forward part, last one wins
FFN_NAMES = ("mlp", "feed_forward", "ffn", "feedforward")


class KeyedLM:
    """Runs a causal LM and returns its logits with the keys of every position.

    Parameters
    ----------
    model : a transformers causal LM, or a torch module returning (logits, keys).
    layer : ``"ffn_input"`` (default) or ``"final"``; ignored for a module that
        returns its own keys.
    """

    def __init__(self, model: torch.nn.Module, layer: str = "ffn_input"):
        if layer not in KEY_LAYERS:
            raise InvalidInputError(f"layer {layer!r} is not one of {KEY_LAYERS}")
        self.model = model.eval()
        self.layer = layer
        self.hooked = hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None
        self._capture = _capture(model, layer) if self.hooked else None

    @property
    def last_keys(self) -> torch.Tensor | None:
        """(batch, seq, dim) keys of the model's latest forward pass."""
        return None if self._capture is None else self._capture.keys

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """(logits, keys): (batch, seq, vocab) float32 and (batch, seq, dim) float32."""
        input_ids = input_ids.to(self.device)
        if self.hooked:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
            return out.logits.float(), self.last_keys.float()
        logits, keys = self.model(input_ids)
        return logits.float(), keys.float()


class _Capture:
    """A forward pre-hook keeping the input of the module it sits on."""

    def __init__(self):
        self.keys: torch.Tensor | None = None

    def __call__(self, module, args):
        self.keys = args[0].detach()


#: one hook per (model, layer), however many KeyedLM read it: a hook per KNNLM
#: would pile up on the model, each copying keys on every forward pass
_CAPTURES: "weakref.WeakKeyDictionary[torch.nn.Module, dict[str, _Capture]]" = weakref.WeakKeyDictionary()


def _capture(model: torch.nn.Module, layer: str) -> _Capture:
    by_layer = _CAPTURES.setdefault(model, {})
    if layer not in by_layer:
        module = model.get_output_embeddings() if layer == "final" else _last_ffn(model)
        by_layer[layer] = _Capture()
        module.register_forward_pre_hook(by_layer[layer])
    return by_layer[layer]


def _last_ffn(model: torch.nn.Module) -> torch.nn.Module:
    found = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in FFN_NAMES]
    if not found:
        raise InvalidInputError(
            f"found no feed-forward block (a module named one of {FFN_NAMES}) in "
            f"{type(model).__name__}; pass layer='final'")
    return found[-1]


# -- corpus ------------------------------------------------------------------------------
def as_token_lists(corpus, tokenizer=None) -> list[np.ndarray]:
    """Texts (with a tokenizer) or token-id sequences, as int64 arrays."""
    if isinstance(corpus, (str, bytes)) or (isinstance(corpus, np.ndarray) and corpus.ndim == 1) or (
            isinstance(corpus, list) and corpus and isinstance(corpus[0], (int, np.integer))):
        corpus = [corpus]
    out = []
    for i, doc in enumerate(corpus):
        if isinstance(doc, str):
            if tokenizer is None:
                raise InvalidInputError("the corpus holds texts: pass tokenizer= to turn them into token ids")
            doc = tokenizer(doc)["input_ids"]
        ids = np.asarray(doc.cpu() if isinstance(doc, torch.Tensor) else doc, dtype=np.int64).reshape(-1)
        if len(ids) and ids.min() < 0:
            raise InvalidInputError(f"document {i} holds negative token ids")
        out.append(ids)
    return out


def windows(n_tokens: int, context: int, stride: int):
    """(start, end, first) per model input ``ids[start:end]``: its inputs from ``start + first`` on are new.

    Input t predicts token t+1. Every input with a next token is scored exactly
    once, in the first window that holds it, with as much left context as that
    window gives; windows move by ``stride`` (but never past an unscored input).

    >>> list(windows(10, context=4, stride=4))
    [(0, 4, 0), (3, 7, 0), (6, 10, 0)]
    >>> list(windows(10, context=4, stride=2))
    [(0, 4, 0), (2, 6, 1), (4, 8, 1), (6, 10, 1)]
    """
    start, done = 0, 0  # inputs before ``done`` are scored
    while done < n_tokens - 1:
        end = min(n_tokens, start + context)
        yield start, end, done - start
        done = end - 1
        start = min(start + stride, done)


def _check_context(context: int, stride: int | None) -> tuple[int, int]:
    if not isinstance(context, int) or context < 2:
        raise InvalidInputError(f"context must be an integer >= 2, got {context!r}")
    stride = context if stride is None else stride
    if not isinstance(stride, int) or not 1 <= stride <= context:
        raise InvalidInputError(f"stride must be an integer in 1..context ({context}), got {stride!r}")
    return context, stride


def _positions(keyed: KeyedLM, docs: list[np.ndarray], context: int, stride: int, progress):
    """Yield (doc index, positions, keys, logits-or-None, next tokens) per window."""
    from tqdm.auto import tqdm

    total = sum(max(0, len(d) - 1) for d in docs)
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=total, unit="tok", desc="kNN-LM", disable=not show) as bar:
        for d, ids in enumerate(docs):
            for start, end, first in windows(len(ids), context, stride):
                x = torch.from_numpy(ids[start:end])[None]
                logits, keys = keyed(x)
                sl = slice(first, end - start - 1)  # inputs whose next token is new
                yield d, np.arange(start + first, end - 1), keys[0, sl], logits[0, sl], ids[start + first + 1:end]
                bar.update(end - 1 - start - first)


# -- the datastore ---------------------------------------------------------------------------
def build_datastore(mem, model, corpus, *, tokenizer=None, layer: str = "ffn_input", context: int = 512,
                    stride: int | None = None, documents=None, dataset: str | None = None,
                    key_dtype: str | None = None, message: str | None = None, progress: bool | None = None):
    """Run a causal LM over a corpus and add one memory row per predicted token.

    Row: ``vector`` = the key at position t, ``label`` = token t+1 (int64),
    provenance ``document`` (name or index), ``position`` (t) and ``dataset``.
    Every position with a next token is stored once, with up to ``context``
    tokens of left context (windows moved by ``stride``). One memory version.

    Parameters
    ----------
    mem : the memory (empty, or holding keys of the same model and layer).
    model : a transformers causal LM or a module returning (logits, keys).
    corpus : texts (with ``tokenizer``) or token-id sequences.
    documents : optional names, one per document (default: "0", "1", ...).
    key_dtype : ``"float16"`` stores the keys in half the disk (the paper's
        choice for its 103M-entry datastore); default float32, or the
        memory's own type. Searches compute in float32 either way.
    """
    context, stride = _check_context(context, stride)
    docs = as_token_lists(corpus, tokenizer)
    names = [str(i) for i in range(len(docs))] if documents is None else [str(n) for n in documents]
    if len(names) != len(docs):
        raise InvalidInputError(f"{len(names)} document names for {len(docs)} documents")
    if not any(len(d) > 1 for d in docs):
        raise InvalidInputError("the corpus has no document of two or more tokens: nothing to store")
    keyed = KeyedLM(model, layer)
    keys, labels, doc_names, positions = [], [], [], []
    for d, pos, k, _, nxt in _positions(keyed, docs, context, stride, progress):
        keys.append(k.cpu().numpy())
        labels.append(nxt)
        doc_names.append(np.full(len(pos), names[d], dtype=object))
        positions.append(pos)
    return mem.add(np.concatenate(keys), np.concatenate(labels), provenance={
        "document": np.concatenate(doc_names).astype(str), "position": np.concatenate(positions),
        "dataset": dataset}, message=message or f"kNN-LM datastore: {len(docs)} documents, layer {layer}",
        vector_dtype=key_dtype)


# -- the model -----------------------------------------------------------------------------
class KNNLM:
    """A causal LM interpolated with a kNN distribution over a memory's datastore.

    Parameters
    ----------
    model : the LM whose keys fill ``mem`` (build_datastore), same ``layer``.
    mem : a memory (or ``mem.at(version)``) of (key, next token) rows.
    k : neighbours per position.
    lmbda : λ, the weight of p_kNN, in [0, 1].
    temperature : T in exp(-d / T).
    metric : distance of keys, ``"l2"`` (squared euclidean, the paper's), ``"cosine"`` or ``"dot"``.
    index : ``"auto"``, ``"exact"``, ``"ann"`` (the memory's LanceDB index) or
        ``"ivf"`` (an in-RAM IVF with exact distances, tuned to recall@k 0.95:
        the fastest for large datastores, see benchmarks/bench_knnlm.py).
    """

    # not a scikit-learn estimator (it wraps a LM and is ready when built), so the rules the
    # heads declare are checked here at construction, with the same validator and messages
    _parameter_constraints = {
        "k": [Integers(1)],
        "lmbda": [Interval(Real, 0, 1, closed="both")],
        "temperature": [POSITIVE],
        "metric": [StrOptions(set(METRICS))],
        "layer": [StrOptions(set(KEY_LAYERS))],
        "index": [StrOptions(set(INDEXES))],
    }

    def __init__(self, model, mem, k: int = 1024, lmbda: float = 0.25, temperature: float = 1.0,
                 metric: str = "l2", layer: str = "ffn_input", index: str = "auto"):
        validate_params(self._parameter_constraints, {"k": k, "lmbda": lmbda, "temperature": temperature,
                                                      "metric": metric, "layer": layer, "index": index}, "KNNLM")
        self.keyed = KeyedLM(model, layer)
        self.mem, self.k, self.lmbda, self.temperature, self.metric = mem, k, float(lmbda), float(temperature), metric
        samples = mem.samples
        if not pa.types.is_integer(samples.labels.type):
            raise InvalidInputError(f"the memory's labels are {samples.labels.type}, not token ids: "
                                    "build it with memstore.build_datastore")
        check_k(k, len(samples))
        self.values = torch.from_numpy(samples.labels.to_numpy(zero_copy_only=False).astype(np.int64))  # (n,)
        self.ids = samples.ids
        self.searcher = mem.searcher(metric, index, k=k)
        self.memory_version = mem.version

    # -- distributions ----------------------------------------------------------------------
    def neighbours(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distances, positions) of the k nearest rows, each (n, k), nearest first."""
        return self.search(keys, self.k)

    def search(self, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        dist, pos = self.searcher.search(keys.cpu().numpy(), k)
        return torch.from_numpy(dist), torch.from_numpy(pos)

    def knn_log_weights(self, dist: torch.Tensor) -> torch.Tensor:
        """(n, k) log of each neighbour's share of p_kNN: log softmax(-d / T)."""
        return torch.log_softmax(-dist.double() / self.temperature, dim=1)

    def knn_log_probs(self, keys: torch.Tensor, vocab: int) -> torch.Tensor:
        """(n, vocab) log p_kNN; tokens no neighbour carries get -inf."""
        dist, pos = self.neighbours(keys)
        weights = self.knn_log_weights(dist).exp()  # (n, k)
        probs = torch.zeros(len(keys), vocab, dtype=torch.float64)
        probs.scatter_add_(1, self.values[pos], weights)
        return probs.log()

    def interpolate(self, lm_logits: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """(n, vocab) log p = log(λ p_kNN + (1 - λ) p_LM), in log space."""
        lm = torch.log_softmax(lm_logits.double(), dim=-1)
        knn = self.knn_log_probs(keys, lm.shape[-1]) if self.lmbda > 0 else None
        return _mix(knn, lm, self.lmbda).float()

    def log_probs(self, input_ids) -> torch.Tensor:
        """(batch, seq, vocab) interpolated log-probabilities of the next token at every position."""
        ids = torch.as_tensor(input_ids)
        ids = ids[None] if ids.ndim == 1 else ids
        logits, keys = self.keyed(ids)
        b, s, v = logits.shape
        return self.interpolate(logits.reshape(b * s, v), keys.reshape(b * s, -1)).reshape(b, s, v)

    def perplexity(self, corpus, *, tokenizer=None, context: int = 512, stride: int | None = None,
                   progress: bool | None = None) -> float:
        """exp of the mean negative log-likelihood of every next token of the corpus."""
        grid = self.perplexity_grid(corpus, tokenizer=tokenizer, context=context, stride=stride, progress=progress)
        return grid["perplexity"][0].as_py()

    def perplexity_grid(self, corpus, *, k=None, lmbda=None, temperature=None, tokenizer=None, context: int = 512,
                        stride: int | None = None, progress: bool | None = None) -> pa.Table:
        """Perplexity for every combination of k, λ and T, from one pass and one search.

        The LM runs once and the datastore is searched once per position, for
        the largest k; smaller k take the nearest of those. This is how λ, k
        and T are tuned on validation text: a grid of 36 settings costs about
        what one setting costs. Parameters left out take this model's value.

        Returns
        -------
        pyarrow.Table with columns k, lmbda, temperature, perplexity, tokens;
        one row per combination, in the order of the arguments.

        Examples
        --------
        Tune on validation text, then score test text with the best setting
        (``examples/knnlm_text.py`` does this)::

            grid = knnlm.perplexity_grid(val_ids, k=[8, 64, 1024], lmbda=[0.1, 0.25, 0.5])
            best = min(grid.to_pylist(), key=lambda row: row["perplexity"])
        """
        ks = _grid_values("k", [self.k] if k is None else k)
        lambdas = _grid_values("lmbda", [self.lmbda] if lmbda is None else lmbda)
        temps = _grid_values("temperature", [self.temperature] if temperature is None else temperature)
        for value in ks:
            check_k(value, len(self.values))
        for value in lambdas:
            if not 0.0 <= value <= 1.0:
                raise InvalidInputError(f"lmbda must lie in [0, 1], got {value!r}")
        if min(temps) <= 0:
            raise InvalidInputError(f"temperature must be positive, got {min(temps)!r}")
        context, stride = _check_context(context, stride)
        docs = as_token_lists(corpus, tokenizer)
        search = max(lambdas) > 0
        k_max = max(ks)
        lm_parts, knn_parts = [], {(kk, t): [] for kk in ks for t in temps}
        for _, _, keys, logits, nxt in _positions(self.keyed, docs, context, stride, progress):
            target = torch.from_numpy(nxt)
            lm_parts.append(torch.log_softmax(logits.double(), dim=-1).gather(1, target[:, None])[:, 0])
            if not search:
                continue
            dist, pos = self.search(keys, k_max)
            hit = self.values[pos] == target[:, None]  # (n, k_max)
            for (kk, t), parts in knn_parts.items():
                w = torch.log_softmax(-dist[:, :kk].double() / t, dim=1)
                parts.append(torch.logsumexp(w.masked_fill(~hit[:, :kk], -math.inf), dim=1))  # log p_kNN(target)
        if not lm_parts:
            raise InvalidInputError("the corpus has no document of two or more tokens")
        lm = torch.cat(lm_parts)
        rows = []
        for kk in ks:
            for lam in lambdas:
                for t in temps:
                    lp = _mix(torch.cat(knn_parts[kk, t]) if lam > 0 else None, lm, lam)
                    rows.append({"k": kk, "lmbda": lam, "temperature": t,
                                 "perplexity": math.exp(-float(lp.sum()) / len(lm)), "tokens": len(lm)})
        return pa.Table.from_pylist(rows)

    # -- attribution ---------------------------------------------------------------------------
    def explain(self, input_ids, position: int = -1, token: int | None = None, *, tokenizer=None,
                window: int = 8) -> pa.Table:
        """The datastore rows behind p_kNN of ``token`` (default: the predicted one) at ``position``.

        One row per neighbour, nearest first: rank, id, value (its next
        token), distance, share (of p_kNN), supports (value == token),
        document and position of the row in its corpus, memory_version, and
        the text around it, read back from the datastore itself (a row's
        value is the token after it, so a document's rows spell it out):
        ``context_ids``, the ``window`` tokens up to and including the row's
        position (what its key saw last), and ``continuation_ids``, the
        ``window`` tokens from its value on. With ``tokenizer``, also
        ``context`` and ``continuation`` as text. A document's first token is
        no row's value and does not appear. Join with ``mem.sql`` on id.
        """
        if not isinstance(window, int) or window < 1:
            raise InvalidInputError(f"window must be a positive integer, got {window!r}")
        ids = torch.as_tensor(input_ids).reshape(1, -1)
        logits, keys = self.keyed(ids)
        key = keys[0, position][None]
        if token is None:
            token = int(self.interpolate(logits[0, position][None], key)[0].argmax())
        dist, pos = self.neighbours(key)
        share = self.knn_log_weights(dist).exp()[0]
        row_ids = self.ids[pos[0].numpy()]
        values = self.values[pos[0]].numpy()
        out = pa.table({
            "rank": np.arange(self.k), "id": row_ids, "value": values,
            "distance": dist[0].numpy(), "share": share.numpy(), "supports": values == token})
        where = self.mem.sql("SELECT n.rank, s.document, s.position FROM n JOIN samples s USING (id) ORDER BY n.rank",
                             n=out.select(["rank", "id"])).to_arrow_table()
        out = out.append_column("document", where["document"]).append_column("position", where["position"])
        out = out.append_column("memory_version", pa.array(np.full(self.k, self.memory_version)))
        before, after = self._text_around(out.select(["rank", "document", "position"]), window)
        out = out.append_column("context_ids", before).append_column("continuation_ids", after)
        if tokenizer is not None:
            out = out.append_column("context", pa.array([tokenizer.decode(t) for t in before.to_pylist()]))
            out = out.append_column("continuation", pa.array([tokenizer.decode(t) for t in after.to_pylist()]))
        return out

    def _text_around(self, rows: pa.Table, window: int) -> tuple[pa.Array, pa.Array]:
        """Token ids before (up to and including ``position``) and after each row, from the rows' values.

        Token t of a document is the value of its row at position t - 1.
        """
        text = self.mem.sql(f"""
            SELECT n.rank, list(s.label ORDER BY s.position) FILTER (WHERE s.position < n.position) AS before,
                   list(s.label ORDER BY s.position) FILTER (WHERE s.position >= n.position) AS after
            FROM n JOIN samples s ON s.document = n.document
                AND s.position BETWEEN n.position - {window} AND n.position + {window - 1}
            GROUP BY n.rank ORDER BY n.rank""", n=rows).to_arrow_table()
        return (pa.array([b or [] for b in text["before"].to_pylist()], pa.list_(pa.int64())),
                pa.array([a or [] for a in text["after"].to_pylist()], pa.list_(pa.int64())))


def _mix(knn: torch.Tensor | None, lm: torch.Tensor, lmbda: float) -> torch.Tensor:
    """log(λ exp(knn) + (1 - λ) exp(lm)); λ = 0 returns ``lm`` itself, so the base LM is exact."""
    if lmbda == 0.0:
        return lm
    if lmbda == 1.0:
        return knn
    return torch.logaddexp(knn + math.log(lmbda), lm + math.log1p(-lmbda))


def _grid_values(name: str, values) -> list:
    values = [values] if isinstance(values, (int, float)) else list(values)
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise InvalidInputError(f"{name} must be a number or a non-empty list of numbers, got {values!r}")
    return values


class KNNLogitsProcessor:
    """Makes ``model.generate`` sample from the kNN-LM: ``logits_processor=[KNNLogitsProcessor(knnlm)]``.

    It replaces the scores of the last position by the interpolated
    log-probabilities, using the keys the model's own forward pass just
    produced (read by the kNN-LM's hook). Put it first, before temperature or
    top-k processors.
    """

    def __init__(self, knnlm: KNNLM):
        if not knnlm.keyed.hooked:
            raise InvalidInputError("generation needs a transformers model (its keys are read by hooks)")
        self.knnlm = knnlm

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        keys = self.knnlm.keyed.last_keys[:, -1]  # (batch, dim): the position being predicted
        return self.knnlm.interpolate(scores, keys).to(scores.dtype).to(scores.device)


__all__ = ["KEY_LAYERS", "KNNLM", "KNNLogitsProcessor", "KeyedLM", "build_datastore", "windows"]
