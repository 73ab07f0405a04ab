"""Neighbours as context for generative models (retrieval-augmented diffusion, Blattmann et al. 2022).

A retrieval-augmented generative model is conditioned on the embeddings of
the k nearest rows of a memory, through cross-attention. During training the
query is itself a row of the memory: its own row must be left out, or the
model learns to copy its input from the context. :func:`neighbors_as_context`
returns the context as a (batch, k, dim) tensor with the ids of the rows that
make it (for attribution), and :class:`NeighbourCollate` attaches it to the
batches of a torch ``DataLoader``: one batched search per batch.

Examples
--------
>>> import numpy as np, tempfile, memstore
>>> mem = memstore.open(tempfile.mkdtemp() + "/toy.mem")
>>> _ = mem.add(np.eye(4, dtype=np.float32), ["a", "b", "c", "d"])
>>> ctx = neighbors_as_context(mem, ids=[0, 1], k=2)
>>> tuple(ctx.context.shape), bool((ctx.ids != np.array([[0], [1]])).all())
((2, 2, 4), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import InvalidInputError


@dataclass
class NeighbourContext:
    """The k nearest rows of each query: ``context`` (batch, k, dim) float32, ``ids`` and ``distances`` (batch, k)."""

    context: torch.Tensor
    ids: np.ndarray
    distances: np.ndarray


def neighbors_as_context(mem, queries=None, k: int = 4, *, ids=None, exclude_self: bool = True,
                         metric: str = "cosine", index: str = "auto") -> NeighbourContext:
    """The embeddings of each query's k nearest memory rows, nearest first, ready for cross-attention.

    Parameters
    ----------
    mem : a memory (or ``mem.at(version)``).
    queries : (batch, dim) new vectors; or leave out and pass ``ids``.
    ids : (batch,) ids of memory rows used as queries (training samples): each
        is searched with its own vector, and with ``exclude_self`` its own row
        is left out of its context.
    """
    if (queries is None) == (ids is None):
        raise InvalidInputError("pass either queries (new vectors) or ids (rows of the memory), not both")
    samples = mem.samples
    exclude = None
    if ids is not None:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        pos, known = samples.positions(ids)
        if not known.all():
            raise InvalidInputError(f"ids {ids[~known][:5].tolist()} are not rows of the memory at version "
                                    f"{mem.version}; pass vectors as queries for samples outside it")
        queries = samples.vectors[pos]
        exclude = pos if exclude_self else None
    dist, found = mem.searcher(metric, index, k=k).search(queries, k, exclude=exclude)
    return NeighbourContext(torch.from_numpy(np.ascontiguousarray(samples.vectors[found])),
                            samples.ids[found], dist)


class NeighbourCollate:
    """A ``collate_fn`` that adds each batch's neighbour context, found with one search.

    Items are dicts holding the memory row ``id`` of the sample (its own row
    is left out of its context) besides whatever the model reads; the batch
    gets ``context`` (batch, k, dim) and ``context_ids`` (batch, k)::

        loader = torch.utils.data.DataLoader(dataset, batch_size=64, collate_fn=NeighbourCollate(mem, k=4))
    """

    def __init__(self, mem, k: int = 4, *, id_key: str = "id", metric: str = "cosine", index: str = "auto"):
        self.mem, self.k, self.id_key, self.metric, self.index = mem, k, id_key, metric, index

    def __call__(self, items: list[dict]) -> dict:
        if not items or not all(isinstance(item, dict) and self.id_key in item for item in items):
            raise InvalidInputError(f"NeighbourCollate needs dict items with the memory row id under "
                                    f"{self.id_key!r}")
        batch = torch.utils.data.default_collate(items)
        ctx = neighbors_as_context(self.mem, ids=np.asarray(batch[self.id_key]), k=self.k,
                                   metric=self.metric, index=self.index)
        batch["context"], batch["context_ids"] = ctx.context, torch.from_numpy(ctx.ids)
        return batch


__all__ = ["NeighbourCollate", "NeighbourContext", "neighbors_as_context"]
