"""Images into a memory: encode with a frozen encoder, keep where each vector came from.

``Memory.add_images`` calls :func:`prepare`, which checks everything it can
before the (slow) encoding starts, encodes, and builds the provenance:

- ``uri``: the file path, the dataset's own uri (``fashion-mnist/train/00123``),
  or given by the caller;
- ``dataset`` and ``split``: from an ImageDataset, or given;
- ``content_hash``: SHA-256/128 of the image itself (its pixels, or the file's
  bytes), so duplicate images can be found with SQL whatever the encoder;
- ``encoder``: the encoder's name, so a memory never mixes feature spaces
  unknowingly;
- ``thumbnail``: a small preview of the image (``memstore.thumbnails``), unless
  ``thumbnails=None``.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from .errors import InvalidInputError


def image_hashes(images) -> list[str]:
    """SHA-256/128 (hex) of each image: its pixel bytes, or its file's bytes for a path.

    >>> image_hashes(np.zeros((2, 2, 2), np.uint8))[0] == image_hashes(np.zeros((1, 2, 2), np.uint8))[0]
    True
    """
    out = []
    for image in images:
        if isinstance(image, (str, os.PathLike)):
            with open(image, "rb") as f:
                data = f.read()
        elif hasattr(image, "tobytes"):  # numpy array or PIL image
            data = np.ascontiguousarray(image).tobytes() if isinstance(image, np.ndarray) else image.tobytes()
        else:
            raise InvalidInputError(f"cannot hash an image of type {type(image).__name__}")
        out.append(hashlib.sha256(data).hexdigest()[:32])
    return out


def prepare(images, labels, encoder, provenance: dict | None, *, batch_size: int, progress,
            thumbnails: int | None = None):
    """(vectors, labels, provenance) ready for ``Memory.add``."""
    provenance = dict(provenance or {})
    dataset = images if hasattr(images, "images") and hasattr(images, "labels") else None
    if dataset is not None:
        if labels is None:
            names = np.asarray(dataset.class_names, dtype=object)
            labels = names[dataset.labels].astype(str) if len(names) else dataset.labels
        provenance.setdefault("uri", list(dataset.uris))
        provenance.setdefault("dataset", dataset.name)
        provenance.setdefault("split", dataset.split)
        items = dataset.images
    else:
        items = images
    checked = encoder.check_inputs(items)  # fails now, not after an hour of encoding
    n = len(checked)
    if labels is None:
        raise InvalidInputError("add_images needs labels: one per image, or an ImageDataset")
    if not isinstance(labels, str) and len(labels) != n:
        raise InvalidInputError(f"got {n} images but {len(labels)} labels; pass one label per image")
    if "uri" not in provenance and isinstance(checked, list) and all(
            isinstance(i, (str, os.PathLike)) for i in checked):
        provenance["uri"] = [str(i) for i in checked]
    provenance.setdefault("content_hash", image_hashes(checked))
    provenance.setdefault("encoder", encoder.name)
    if thumbnails is not None:
        from .thumbnails import THUMBNAIL_COLUMN, make_thumbnails

        provenance.setdefault(THUMBNAIL_COLUMN, make_thumbnails(checked, thumbnails))
    vectors = encoder.encode(items, batch_size=batch_size, progress=progress)
    return vectors, labels, provenance


__all__ = ["image_hashes", "prepare"]
