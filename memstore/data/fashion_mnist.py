"""Fashion-MNIST (Zalando): 70,000 28 x 28 grayscale images of 10 kinds of clothing.

Read from the IDX files of the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``), or from ``$MEMSTORE_FASHION_MNIST``, or ``root``;
gzipped (``*.gz``, as published) or not. Parsing is a header check and one ``np.frombuffer``:
the 60,000 training images load in well under a second.

Examples
--------
>>> ds = load_fashion_mnist("test")         # needs the Debian package (make install fetches it)
>>> print(ds.images.shape, ds.class_names[ds.labels[0]], ds.uris[0])
(10000, 28, 28) Ankle boot fashion-mnist/test/00000
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError
from .base import DatasetNotFoundError, ImageDataset

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "MEMSTORE_FASHION_MNIST"

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

_FILES = {  # split -> (images, labels), the names Zalando published
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MAGIC = {3: 2051, 1: 2049}  # IDX magic numbers: uint8 data, 3-d (images) or 1-d (labels)


def _root(root) -> Path:
    return Path(root if root is not None else os.environ.get(ENV_VAR) or DEFAULT_ROOT)


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def fashion_mnist_available(root=None) -> bool:
    """Whether all four Fashion-MNIST files are under ``root`` (default as in the loader)."""
    r = _root(root)
    return all(_find(r, stem) is not None for pair in _FILES.values() for stem in pair)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """One IDX file as a uint8 array; checks magic number and declared size."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    header = 4 + 4 * ndim
    magic = int(np.frombuffer(raw, ">i4", count=1)[0]) if len(raw) >= 4 else None
    if magic != _MAGIC[ndim] or len(raw) < header:
        raise InvalidInputError(
            f"{path} is not a {ndim}-d uint8 IDX file (magic {magic}, expected {_MAGIC[ndim]}, "
            f"{len(raw)} bytes); reinstall it: sudo apt-get install --reinstall "
            "dataset-fashion-mnist")
    dims = np.frombuffer(raw, ">i4", count=ndim, offset=4).tolist()
    if len(raw) - header != int(np.prod(dims)):
        raise InvalidInputError(
            f"{path} declares shape {tuple(dims)} but holds {len(raw) - header} bytes of data: "
            "the file is truncated; reinstall it")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def load_fashion_mnist(split: str = "train", root=None) -> ImageDataset:
    """Load one Fashion-MNIST split.

    Parameters
    ----------
    split : {"train", "test"}
        60,000 or 10,000 images.
    root : path, optional
        Folder of the IDX files. Default ``$MEMSTORE_FASHION_MNIST``, else
        ``/usr/share/datasets/fashion-mnist``.

    Returns
    -------
    ImageDataset
        ``images`` (n, 28, 28) uint8, ``labels`` (n,) int64 in 0..9, ``class_names`` (10),
        ``uris`` ``"fashion-mnist/<split>/<index, 5 digits>"``.

    Raises
    ------
    DatasetNotFoundError
        The files are not there (the message says how to install them).
    InvalidInputError
        An unknown split, or a corrupt file.
    """
    if split not in _FILES:
        raise InvalidInputError(f"split must be 'train' or 'test', got {split!r}")
    r = _root(root)
    stems = _FILES[split]
    paths = [_find(r, stem) for stem in stems]
    if None in paths:
        missing = [s + ".gz" for s, p in zip(stems, paths) if p is None]
        raise DatasetNotFoundError(
            f"Fashion-MNIST {split} files not found in {r} (missing {', '.join(missing)}); "
            f"install them with `sudo apt-get install dataset-fashion-mnist` (or `make install`, "
            f"which does), or point ${ENV_VAR} (or root=) at a folder holding the four "
            "*-ubyte.gz files")
    images = _read_idx(paths[0], 3)  # (n, 28, 28)
    labels = _read_idx(paths[1], 1).astype(np.int64)  # (n,)
    if len(images) != len(labels):
        raise InvalidInputError(
            f"{paths[0]} holds {len(images)} images but {paths[1]} {len(labels)} labels")
    index = np.char.zfill(np.arange(len(labels)).astype(str), 5)
    uris = np.char.add(f"fashion-mnist/{split}/", index)
    return ImageDataset(images, labels, CLASS_NAMES, name="fashion-mnist", split=split, uris=uris)
