"""A labelled image dataset held in memory, and the error for one that is not installed.

Examples
--------
>>> import numpy as np
>>> ds = ImageDataset(np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 1, 0]), ["cat", "dog"],
...                   name="toy", split="train", uris=[f"toy/train/{i}" for i in range(4)])
>>> len(ds), ds.label_names.tolist()
(4, ['cat', 'dog', 'dog', 'cat'])
>>> ds.subset(ds.labels == 1).uris.tolist()
['toy/train/1', 'toy/train/2']
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import InvalidInputError, MemstoreError


class DatasetNotFoundError(MemstoreError, FileNotFoundError):
    """A dataset whose files are not on this machine; the message says how to install them."""


@dataclass(frozen=True)
class ImageDataset:
    """Images with integer labels, class names and a URI per image (for provenance).

    Attributes
    ----------
    images : numpy.ndarray
        ``(n, H, W)`` grayscale or ``(n, H, W, 3)`` RGB, uint8.
    labels : numpy.ndarray
        ``(n,)`` int64 class ids, indexes into ``class_names``.
    class_names : list of str
        Name of class id i at position i.
    name : str
        Dataset name, e.g. ``"fashion-mnist"`` (for the ``dataset`` provenance column).
    split : str
        ``"train"``, ``"test"``, ``"all"``, ... (for the ``split`` provenance column).
    uris : numpy.ndarray
        ``(n,)`` str, a stable id per image, e.g. ``"fashion-mnist/train/00123"``: subsets keep
        the uris of the original images, so a memory row can always be traced back.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    name: str
    split: str
    uris: np.ndarray = field(default=None)

    def __post_init__(self):
        images = np.asarray(self.images)
        labels = np.asarray(self.labels).astype(np.int64, copy=False)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or \
                (images.ndim == 4 and images.shape[-1] != 3):
            raise InvalidInputError(
                f"images must be uint8 (n, H, W) or (n, H, W, 3), got {images.dtype} "
                f"{images.shape}")
        n = len(images)
        if labels.shape != (n,):
            raise InvalidInputError(f"got {n} images but labels of shape {labels.shape}")
        if n and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise InvalidInputError(
                f"labels must lie in 0..{len(self.class_names) - 1} (one per class name), got "
                f"{labels.min()}..{labels.max()}")
        uris = self.uris
        if uris is None:  # default: name/split/index
            uris = np.char.add(f"{self.name}/{self.split}/", np.arange(n).astype(str))
        uris = np.asarray(uris, dtype=str)
        if uris.shape != (n,):
            raise InvalidInputError(f"got {n} images but uris of shape {uris.shape}")
        # frozen dataclass: set the normalised fields through object.__setattr__
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "class_names", list(self.class_names))
        object.__setattr__(self, "uris", uris)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image_shape={self.images.shape[1:]}, classes={len(self.class_names)})")

    @property
    def label_names(self) -> np.ndarray:
        """``(n,)`` str: the class name of every image (labels for ``mem.add``)."""
        return np.asarray(self.class_names, dtype=str)[self.labels]

    def subset(self, indices) -> ImageDataset:
        """The images at ``indices`` (int array, slice or boolean mask), uris kept.

        Raises InvalidInputError for a mask of the wrong length or an index out of range.
        """
        if not isinstance(indices, slice):
            idx = np.asarray(indices)
            if idx.dtype == np.bool_:
                if idx.shape != (len(self),):
                    raise InvalidInputError(
                        f"boolean mask of shape {idx.shape} for a dataset of {len(self)} images")
            elif idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise InvalidInputError(f"indices must be integers or a boolean mask, got {idx.dtype}")
            elif idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
                raise InvalidInputError(
                    f"indices must lie in 0..{len(self) - 1}, got {idx.min()}..{idx.max()}")
            indices = idx.astype(np.int64) if idx.dtype != np.bool_ else idx
        return replace(self, images=self.images[indices], labels=self.labels[indices],
                       uris=self.uris[indices])
