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

import numpy as np
import pyarrow as pa
import torch

from ..errors import InvalidInputError
from ..search import check_k

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
                    message: str | None = None, progress: bool | None = None):
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
        "dataset": dataset}, message=message or f"kNN-LM datastore: {len(docs)} documents, layer {layer}")


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
    index : ``"auto"``, ``"exact"`` or ``"ann"`` (the memory's ANN index).
    """

    def __init__(self, model, mem, k: int = 1024, lmbda: float = 0.25, temperature: float = 1.0,
                 metric: str = "l2", layer: str = "ffn_input", index: str = "auto"):
        if not (isinstance(lmbda, (int, float)) and 0.0 <= lmbda <= 1.0):
            raise InvalidInputError(f"lmbda must lie in [0, 1], got {lmbda!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise InvalidInputError(f"temperature must be positive, got {temperature!r}")
        self.keyed = KeyedLM(model, layer)
        self.mem, self.k, self.lmbda, self.temperature, self.metric = mem, k, float(lmbda), float(temperature), metric
        samples = mem.samples
        if not pa.types.is_integer(samples.labels.type):
            raise InvalidInputError(f"the memory's labels are {samples.labels.type}, not token ids: "
                                    "build it with memstore.build_datastore")
        check_k(k, len(samples))
        self.values = torch.from_numpy(samples.labels.to_numpy(zero_copy_only=False).astype(np.int64))  # (n,)
        self.ids = samples.ids
        self.searcher = mem.searcher(metric, index)
        self.memory_version = mem.version

    # -- distributions ----------------------------------------------------------------------
    def neighbours(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distances, positions) of the k nearest rows, each (n, k)."""
        dist, pos = self.searcher.search(keys.cpu().numpy(), self.k)
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
        if self.lmbda == 0.0:
            return lm.float()
        knn = self.knn_log_probs(keys, lm.shape[-1])
        if self.lmbda == 1.0:
            return knn.float()
        return torch.logaddexp(knn + math.log(self.lmbda), lm + math.log1p(-self.lmbda)).float()

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
        context, stride = _check_context(context, stride)
        docs = as_token_lists(corpus, tokenizer)
        nll, count = 0.0, 0
        for _, _, keys, logits, nxt in _positions(self.keyed, docs, context, stride, progress):
            target = torch.from_numpy(nxt)
            lm = torch.log_softmax(logits.double(), dim=-1).gather(1, target[:, None])[:, 0]  # (n,)
            if self.lmbda > 0:
                dist, pos = self.neighbours(keys)
                w = self.knn_log_weights(dist)
                hit = self.values[pos] == target[:, None]  # (n, k)
                knn = torch.logsumexp(w.masked_fill(~hit, -math.inf), dim=1)  # log p_kNN(target)
                lm = torch.logaddexp(knn + math.log(self.lmbda), lm + math.log1p(-self.lmbda)) \
                    if self.lmbda < 1 else knn
            nll -= float(lm.sum())
            count += len(target)
        if count == 0:
            raise InvalidInputError("the corpus has no document of two or more tokens")
        return math.exp(nll / count)

    # -- attribution ---------------------------------------------------------------------------
    def explain(self, input_ids, position: int = -1, token: int | None = None) -> pa.Table:
        """The datastore rows behind p_kNN of ``token`` (default: the predicted one) at ``position``.

        One row per neighbour: rank, id, value (its next token), distance,
        share (of p_kNN), supports (value == token), document and position of
        the row in its corpus, memory_version. Join with ``mem.sql`` on id.
        """
        ids = torch.as_tensor(input_ids).reshape(1, -1)
        logits, keys = self.keyed(ids)
        key = keys[0, position][None]
        if token is None:
            token = int(self.interpolate(logits[0, position][None], key)[0].argmax())
        dist, pos = self.neighbours(key)
        share = self.knn_log_weights(dist).exp()[0]
        rows = self.mem.sql(f"SELECT id, document, position FROM samples WHERE id IN "
                            f"({','.join(map(str, self.ids[pos[0].numpy()]))})").to_arrow_table()
        where = {i: r for r, i in enumerate(rows["id"].to_pylist())}
        order = [where[i] for i in self.ids[pos[0].numpy()]]
        values = self.values[pos[0]].numpy()
        return pa.table({
            "rank": np.arange(self.k), "id": self.ids[pos[0].numpy()], "value": values,
            "distance": dist[0].numpy(), "share": share.numpy(), "supports": values == token,
            "document": rows["document"].take(pa.array(order)), "position": rows["position"].take(pa.array(order)),
            "memory_version": np.full(self.k, self.memory_version),
        })


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
