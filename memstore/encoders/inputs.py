"""What encoders accept, checked up front, and turned into tensors one batch at a time.

Images
    * a numpy array: ``(n, H, W)`` grayscale or ``(n, H, W, 3)`` RGB (``(n, H, W, 1)`` too),
      ``uint8`` (or another integer type with values 0..255) or floats in [0, 1];
    * a list of PIL images and/or image file paths (``str`` or ``pathlib.Path``);
    * anything with an ``images`` attribute holding one of the above (a memstore
      :class:`~memstore.data.ImageDataset`).

Texts
    a list of strings (or one string).

Everything is checked before the first batch is encoded, so bad input fails fast with an
:class:`~memstore.errors.InvalidInputError` naming the value and the fix, instead of after
minutes of work. Files are opened lazily, one batch at a time, so a list of paths to a large
image folder is never held in memory at once.

Examples
--------
>>> import numpy as np
>>> x = check_images(np.zeros((2, 8, 8), np.uint8))   # grayscale gains a channel axis
>>> x.shape
(2, 8, 8, 1)
>>> images_to_tensor(x, "cpu").shape                 # channels first, RGB, floats in [0, 1]
torch.Size([2, 3, 8, 8])
>>> check_images(np.zeros((2, 8, 8, 4), np.uint8))
Traceback (most recent call last):
...
memstore.errors.InvalidInputError: images have 4 channels (shape (2, 8, 8, 4)); pass grayscale (n, H, W) or RGB (n, H, W, 3): drop an alpha channel with images[..., :3]
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError

# ---------------------------------------------------------------------------------- images


def check_images(images) -> np.ndarray | list:
    """Validate image input; return an ``(n, H, W, C)`` array (C = 1 or 3) or a list.

    Parameters
    ----------
    images : array, list of PIL images / paths, or an object with an ``images`` attribute.

    Returns
    -------
    numpy.ndarray or list
        Arrays come back as an ``(n, H, W, C)`` view (no copy); lists as a list of PIL
        images and path strings.

    Raises
    ------
    InvalidInputError
        Empty input, wrong number of axes or channels, NaN/inf, values out of range, a path
        that does not exist, or an element that is not an image.
    """
    if hasattr(images, "images") and not isinstance(images, (np.ndarray, list, tuple)):
        images = images.images  # an ImageDataset or similar
    if isinstance(images, torch.Tensor):
        raise InvalidInputError(
            f"images is a torch tensor of shape {tuple(images.shape)}; pass a numpy array "
            "(n, H, W) or (n, H, W, 3), e.g. tensor.permute(0, 2, 3, 1).cpu().numpy()"
        )
    if isinstance(images, np.ndarray):
        return _check_array(images)
    if isinstance(images, (str, os.PathLike)) or _is_pil(images):
        images = [images]  # one image: a batch of one
    if not isinstance(images, (list, tuple)):
        raise InvalidInputError(
            f"images must be a numpy array or a list of PIL images / file paths, "
            f"got {type(images).__name__}"
        )
    return _check_list(images)


def _is_pil(obj) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow comes with torchvision
        return False
    return isinstance(obj, Image.Image)


def _check_array(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:
        if x.shape[-1] == 3 and x.shape[1] > 3:
            # (H, W, 3) is far more likely one RGB image than n grayscale images 3 pixels wide
            raise InvalidInputError(
                f"images has shape {x.shape}: that looks like one RGB image, not "
                f"{x.shape[0]} grayscale images of width 3; pass a batch: images[None]"
            )
        x = x[..., None]  # (n, H, W, 1)
    elif x.ndim == 4:
        if x.shape[-1] not in (1, 3):
            hint = ("drop an alpha channel with images[..., :3]" if x.shape[-1] == 4 else
                    "channels-first input? use images.transpose(0, 2, 3, 1)"
                    if x.shape[1] in (1, 3) else "")
            raise InvalidInputError(
                f"images have {x.shape[-1]} channels (shape {x.shape}); pass grayscale "
                f"(n, H, W) or RGB (n, H, W, 3)" + (f": {hint}" if hint else "")
            )
    else:
        raise InvalidInputError(
            f"images must be 3-d (n, H, W) or 4-d (n, H, W, 3), got shape {x.shape}"
            + ("; one image? pass images[None]" if x.ndim == 2 else "")
        )
    if x.shape[0] == 0:
        raise InvalidInputError(f"empty batch: images has shape {x.shape}; pass at least one image")
    if 0 in x.shape[1:3]:
        raise InvalidInputError(f"images has shape {x.shape}: an image needs at least one pixel")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise InvalidInputError(
                f"integer images must hold 0..255, got values in [{lo}, {hi}]; rescale them "
                "to 0..255 and cast with .astype(np.uint8)"
            )
        return x
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            first = np.argwhere(bad)[0].tolist()
            raise InvalidInputError(
                f"images hold {int(bad.sum())} NaN/inf value(s) (first at index {first}); "
                "fix or drop those images before encoding"
            )
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise InvalidInputError(
                f"float images must lie in [0, 1], got values in [{lo:g}, {hi:g}]; "
                "divide 0..255 pixels by 255, or pass them as uint8"
            )
        return x
    raise InvalidInputError(f"images must be numbers, got dtype {x.dtype}")


def _check_list(items: Sequence) -> list:
    if len(items) == 0:
        raise InvalidInputError("empty batch: images is an empty list; pass at least one image")
    out = []
    missing = []
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            if not os.path.isfile(path):
                missing.append(path)
            out.append(path)
        elif _is_pil(item):
            out.append(item)
        else:
            raise InvalidInputError(
                f"images[{i}] is a {type(item).__name__}; a list of images must hold PIL "
                "images or file paths (for arrays pass one numpy array (n, H, W[, 3]))"
            )
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InvalidInputError(f"image file not found: {missing[0]!r}{more}; check the paths")
    return out


def load_pil(item):
    """Open one list element (PIL image or path) as an RGB PIL image."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(item, str):
        try:
            with Image.open(item) as im:
                return im.convert("RGB")  # convert() loads the pixels, so the file can close
        except (UnidentifiedImageError, OSError) as exc:
            raise InvalidInputError(f"cannot read image file {item!r}: {exc}") from exc
    return item.convert("RGB") if item.mode != "RGB" else item


def array_to_pil(x: np.ndarray):
    """One checked ``(H, W, C)`` array as a PIL RGB image (floats are scaled by 255 and rounded)."""
    from PIL import Image

    if x.dtype != np.uint8:
        x = np.rint(x * 255.0) if np.issubdtype(x.dtype, np.floating) else x
        x = x.astype(np.uint8)
    return Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).convert("RGB")


def images_to_tensor(chunk, device) -> torch.Tensor | list[torch.Tensor]:
    """A slice of checked images as floats in [0, 1], RGB, channels first, on ``device``.

    Returns a ``(batch, 3, H, W)`` tensor when the images share a size (always for array
    input), else a list of ``(3, H_i, W_i)`` tensors for a resizing preprocess to handle.
    """
    if isinstance(chunk, np.ndarray):
        # Move the compact uint8 pixels to the device first and convert there: 4x less to copy.
        x = torch.from_numpy(np.require(chunk, requirements=["C", "W"])).to(device)
        x = x.permute(0, 3, 1, 2)  # (batch, C, H, W)
        x = x.float() / 255.0 if not torch.is_floating_point(x) else x.float()
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # grayscale -> RGB, a view
    tensors = []
    for item in chunk:
        rgb = np.asarray(load_pil(item))  # (H, W, 3) uint8
        t = torch.from_numpy(rgb.copy()).to(device).permute(2, 0, 1).float() / 255.0
        tensors.append(t)  # (3, H, W)
    if all(t.shape == tensors[0].shape for t in tensors):
        return torch.stack(tensors)  # (batch, 3, H, W)
    return tensors


class ResizeCropNormalize:
    """Batched tensor preprocessing: resize the short side, centre-crop, normalise.

    The tensor counterpart of timm's eval transform with ``crop_pct=1``: the short side goes
    to ``size``, the centre ``size x size`` square is kept, then ``(x - mean) / std``. No crop
    margin is cut, because small centred images (Fashion-MNIST, digits) would lose their
    edges to it. Works on a ``(batch, 3, H, W)`` tensor in one call, or on a list of
    ``(3, H_i, W_i)`` tensors of different sizes one image at a time.

    Parameters
    ----------
    size : output side in pixels.
    mean, std : per-channel normalisation of [0, 1] pixels.
    interpolation : ``"bicubic"`` or ``"bilinear"``.
    channels_last : bool
        Return the batch in NHWC memory order (same values), for models converted with
        ``.to(memory_format=torch.channels_last)``, which then skip a layout conversion.

    Examples
    --------
    >>> pre = ResizeCropNormalize(4, mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> pre(torch.ones(2, 3, 6, 8)).shape  # (batch, 3, size, size), 1.0 -> 1.0
    torch.Size([2, 3, 4, 4])
    """

    def __init__(self, size: int = 224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                 interpolation: str = "bicubic", channels_last: bool = False):
        if interpolation not in ("bicubic", "bilinear"):
            raise InvalidInputError(
                f"interpolation must be 'bicubic' or 'bilinear', got {interpolation!r}")
        self.size = int(size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.interpolation = interpolation
        self.channels_last = bool(channels_last)

    def __repr__(self) -> str:
        return (f"ResizeCropNormalize(size={self.size}, mean={self.mean}, std={self.std}, "
                f"interpolation={self.interpolation!r})")

    def __call__(self, images) -> torch.Tensor:
        if isinstance(images, (list, tuple)):
            return torch.cat([self(t[None]) for t in images])
        x = images  # (batch, 3, H, W) in [0, 1]
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        new_h, new_w = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        if (new_h, new_w) != (h, w):
            # antialias only acts when shrinking: it keeps large photos from aliasing
            x = F.interpolate(x, size=(new_h, new_w), mode=self.interpolation,
                              align_corners=False, antialias=True)
        top, left = (new_h - self.size) // 2, (new_w - self.size) // 2
        x = x[..., top:top + self.size, left:left + self.size]  # (batch, 3, size, size)
        x = x.clamp(0.0, 1.0)  # bicubic overshoots at sharp edges
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return ((x - mean) / std).contiguous(memory_format=fmt)


# ----------------------------------------------------------------------------------- texts


def check_texts(texts) -> list[str]:
    """Validate text input: a non-empty list of strings (one string is a batch of one).

    Examples
    --------
    >>> check_texts("a photo of a cat")
    ['a photo of a cat']
    """
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, np.ndarray) and texts.dtype.kind in "UO":
        texts = texts.tolist()
    if not isinstance(texts, (list, tuple)):
        raise InvalidInputError(f"texts must be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise InvalidInputError("empty batch: texts is empty; pass at least one string")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidInputError(
                f"texts[{i}] is {t!r} ({type(t).__name__}); every text must be a str")
    return list(texts)
