"""scikit-learn's handwritten digits: 1,797 8 x 8 grayscale images of 0..9 (UCI optdigits).

Shipped inside scikit-learn, so always available offline. Pixel values 0..16 are scaled to
uint8 0..255 (``round(v * 255 / 16)``) so the images look like any other ImageDataset.

Examples
--------
>>> ds = load_digits()
>>> ds.images.shape, ds.images.dtype, int(ds.images.max()), str(ds.uris[0])
((1797, 8, 8), dtype('uint8'), 255, 'digits/0000')
>>> train, test = load_digits("train"), load_digits("test")
>>> len(train) + len(test), len(set(train.uris) & set(test.uris))
(1797, 0)
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from .base import ImageDataset

CLASS_NAMES = [str(d) for d in range(10)]


def load_digits(split: str = "all", test_size: float = 0.25, seed: int = 0) -> ImageDataset:
    """Load the digits, whole or as a stratified train/test split.

    Parameters
    ----------
    split : {"all", "train", "test"}
    test_size : float
        Fraction of the images in the test split, in (0, 1).
    seed : int
        Seed of the split; the same seed gives the same, disjoint train and test.

    Returns
    -------
    ImageDataset
        ``images`` (n, 8, 8) uint8, ``labels`` (n,) int64, ``class_names`` "0".."9",
        ``uris`` ``"digits/<index in the full set, 4 digits>"`` (the same image keeps its uri in
        every split).
    """
    if split not in ("all", "train", "test"):
        raise InvalidInputError(f"split must be 'all', 'train' or 'test', got {split!r}")
    if not 0.0 < float(test_size) < 1.0:
        raise InvalidInputError(f"test_size must lie in (0, 1), got {test_size!r}")
    try:
        from sklearn.datasets import load_digits as sk_load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError("load_digits needs scikit-learn: pip install scikit-learn") from exc

    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    labels = bunch.target.astype(np.int64)
    uris = np.char.add("digits/", np.char.zfill(np.arange(len(labels)).astype(str), 4))
    ds = ImageDataset(images, labels, CLASS_NAMES, name="digits", split="all", uris=uris)
    if split == "all":
        return ds
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_size, random_state=seed, stratify=labels)
    idx = np.sort(train_idx if split == "train" else test_idx)  # keep the original order
    part = ds.subset(idx)
    return ImageDataset(part.images, part.labels, CLASS_NAMES, name="digits", split=split,
                        uris=part.uris)
