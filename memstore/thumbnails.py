"""Small previews of the images a memory holds, so that a person can see its rows.

``Memory.add_images(..., thumbnails=64)`` (the default) keeps each image as a
WebP of at most 64 pixels on its longer side in the ``thumbnail`` column of
``sample_data``, beside its vector: a 28 x 28 Fashion-MNIST image takes
about 300 bytes, a 224 x 224 photo about 2 KB. ``thumbnails=None`` keeps none.
``memstore serve`` shows them; in SQL the column is a BLOB of ``samples``.

A thumbnail is the image itself, so ``forget`` treats it as it treats the
vector: the row's fragment is rewritten without it, and the proof scans the
files for each forgotten thumbnail's bytes as well as its vector's. The column
is stored without general compression (``lance-encoding:compression = none``),
so those bytes are what the files hold and the scan can find them (a test
checks that it does, before the forget).
"""

from __future__ import annotations

import io
import os

import numpy as np
import pyarrow as pa

from .errors import InvalidInputError

#: the column of sample_data that holds them
THUMBNAIL_COLUMN = "thumbnail"
#: pixels on the longer side, by default
DEFAULT_SIZE = 64
#: the image format: small, lossy, shown by every browser
FORMAT, MIME_TYPE = "WEBP", "image/webp"
#: WebP quality (0-100): at 64 px, 80 is indistinguishable from the original by eye
QUALITY = 80
#: what Lance must not do to the column: compress it, so that forget's scan finds the bytes
FIELD_METADATA = {"lance-encoding:compression": "none"}


def has_thumbnails(schema: pa.Schema) -> bool:
    """Whether a table's ``thumbnail`` column holds thumbnails: bytes (a user's column of another type
    by that name, say of URLs, is not one)."""
    return THUMBNAIL_COLUMN in schema.names and (pa.types.is_binary(schema.field(THUMBNAIL_COLUMN).type)
                                                 or pa.types.is_large_binary(schema.field(THUMBNAIL_COLUMN).type))


def thumbnail_field(arrow_type: pa.DataType = pa.binary()) -> pa.Field:
    return pa.field(THUMBNAIL_COLUMN, arrow_type, metadata=FIELD_METADATA)


def check_size(size) -> int | None:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 8 <= size <= 512:
        raise InvalidInputError(f"thumbnails must be a size in pixels from 8 to 512, or None for none; "
                                f"got {size!r}")
    return int(size)


def make_thumbnails(images, size: int) -> pa.Array:
    """One encoded thumbnail per image (binary), at most ``size`` pixels on the longer side.

    ``images``: a checked batch (``encoders.inputs.check_images``): an
    ``(n, H, W, C)`` array or a list of PIL images and paths.

    >>> t = make_thumbnails(np.zeros((2, 28, 28, 1), np.uint8), 64)
    >>> len(t), t.type, bytes(t[0].as_py()[:4]), bytes(t[0].as_py()[8:12])
    (2, DataType(binary), b'RIFF', b'WEBP')
    """
    return pa.array([encode(_as_pil(image), size) for image in images], pa.binary())


def encode(image, size: int) -> bytes:
    """One PIL image as a thumbnail's bytes (never enlarged)."""
    image = image.copy()
    image.thumbnail((size, size))  # keeps the aspect ratio
    out = io.BytesIO()
    image.save(out, format=FORMAT, quality=QUALITY, method=4)
    return out.getvalue()


def _as_pil(image):
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as im:
            return im.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:  # checked input: floats in [0, 1] or integers in 0..255
            image = np.rint(image * 255.0) if np.issubdtype(image.dtype, np.floating) else image
            image = image.astype(np.uint8)
        return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)  # grayscale stays L
    return image if image.mode in ("L", "RGB") else image.convert("RGB")


__all__ = ["DEFAULT_SIZE", "MIME_TYPE", "THUMBNAIL_COLUMN", "has_thumbnails", "make_thumbnails", "thumbnail_field"]
