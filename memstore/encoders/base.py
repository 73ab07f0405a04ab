"""The encoder contract: frozen models that turn images or texts into float32 vectors.

An :class:`Encoder` has a ``name`` (recorded in provenance, e.g. ``"timm/tf_efficientnet_lite0"``),
a ``dim``, a ``device`` and one method, :meth:`Encoder.encode`, which checks all of its input
first, then runs the model batch by batch under ``torch.inference_mode()`` and returns an
``(n, dim)`` float32 numpy array ready for ``mem.add``. :class:`TorchEncoder` makes any
``torch.nn.Module`` an encoder.

Examples
--------
>>> import numpy as np, torch
>>> enc = TorchEncoder(torch.nn.Flatten(), name="pixels", device="cpu")  # dim from a test pass
>>> enc.dim                                                  # 3 x 224 x 224 default probe
150528
>>> enc = TorchEncoder(torch.nn.Flatten(), dim=3 * 8 * 8, name="pixels", device="cpu")
>>> v = enc.encode(np.full((5, 8, 8), 255, np.uint8), batch_size=2)
>>> v.shape, v.dtype, float(v.max())
((5, 192), dtype('float32'), 1.0)
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..device import resolve_device
from ..errors import InvalidInputError
from .inputs import check_images, check_texts, images_to_tensor

#: encodes of at least this many inputs show a progress bar on a terminal
PROGRESS_MIN_ITEMS = 1_000


class Encoder:
    """A frozen model that maps images (or texts) to fixed-length float32 vectors.

    Subclasses set ``name``, ``dim``, ``device`` and ``modality`` and implement
    :meth:`_encode_batch`; :meth:`encode` does the checking, batching, progress and
    conversion, so every encoder accepts the same inputs and fails the same way.

    Attributes
    ----------
    name : str
        Identifies the model and its weights in provenance, e.g. ``"timm/tf_efficientnet_lite0"``.
    dim : int
        Length of the vectors.
    device : torch.device
        Where the model runs.
    modality : {"image", "text"}
        What :meth:`encode` accepts (see :mod:`memstore.encoders.inputs`).
    """

    name: str = "encoder"
    dim: int
    device: torch.device
    modality: str = "image"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, "
                f"device='{self.device}')")

    def check_inputs(self, inputs):
        """Validate ``inputs`` for this encoder's modality (raises InvalidInputError)."""
        return check_texts(inputs) if self.modality == "text" else check_images(inputs)

    def encode(self, inputs, batch_size: int = 64, progress: bool | None = None) -> np.ndarray:
        """Encode ``inputs`` into an ``(n, dim)`` float32 array.

        Parameters
        ----------
        inputs
            Images: a uint8 array ``(n, H, W)`` or ``(n, H, W, 3)``, a float array in [0, 1],
            a list of PIL images or file paths, or an ImageDataset. Texts: a list of str.
        batch_size : int
            Inputs per forward pass; bounds memory, and larger batches run faster up to a point.
        progress : bool, optional
            Show a progress bar. Default: on a terminal, for at least 1,000 inputs.

        Returns
        -------
        numpy.ndarray
            ``(n, dim)`` float32, row i the vector of input i.

        Raises
        ------
        InvalidInputError
            Empty input, wrong shape, NaN/inf, missing files, a bad batch size; raised before
            any batch is encoded.
        """
        items = self.check_inputs(inputs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise InvalidInputError(f"batch_size must be a positive int, got {batch_size!r}")
        n = len(items)
        show = (sys.stderr.isatty() and n >= PROGRESS_MIN_ITEMS) if progress is None else progress
        out = np.empty((n, self.dim), np.float32)
        unit = "text" if self.modality == "text" else "img"
        with torch.inference_mode(), \
                tqdm(total=n, unit=unit, desc=f"encode {self.name}", disable=not show) as bar:
            for start in range(0, n, batch_size):
                chunk = items[start:start + batch_size]
                y = _as_vectors(self._encode_batch(chunk), len(chunk), self.dim, self.name)
                out[start:start + len(chunk)] = y.float().cpu().numpy()  # (batch, dim)
                bar.update(len(chunk))
        return out

    def _encode_batch(self, chunk) -> torch.Tensor:
        """Encode one slice of checked inputs into a ``(batch, dim)`` tensor."""
        raise NotImplementedError(f"{type(self).__name__} must implement _encode_batch")


def _as_vectors(y, batch: int, dim: int | None, name: str) -> torch.Tensor:
    """The module output as ``(batch, dim)``: feature maps are flattened, the rest refused."""
    if not isinstance(y, torch.Tensor):
        raise InvalidInputError(
            f"encoder {name!r} returned a {type(y).__name__}, not a tensor; wrap the module so "
            "its forward returns the (batch, dim) features")
    if y.ndim < 2 or y.shape[0] != batch:
        raise InvalidInputError(
            f"encoder {name!r} returned shape {tuple(y.shape)} for a batch of {batch}; "
            "its forward must return (batch, dim)")
    y = y.flatten(1)  # (batch, C, 1, 1) pooled maps -> (batch, C)
    if dim is not None and y.shape[1] != dim:
        raise InvalidInputError(
            f"encoder {name!r} returned {y.shape[1]}-d vectors but dim={dim}; pass the right "
            "dim (or leave it out to infer it)")
    return y


class TorchEncoder(Encoder):
    """Any ``torch.nn.Module`` as an image encoder.

    Images reach ``preprocess`` (or the module, without one) as a float tensor
    ``(batch, 3, H, W)`` in [0, 1], RGB (grayscale repeated), on ``device``; when the images
    of a batch differ in size (a list of PIL images or files) ``preprocess`` gets a list of
    ``(3, H_i, W_i)`` tensors instead and must return one batch tensor, as
    :class:`~memstore.encoders.inputs.ResizeCropNormalize` does.

    Parameters
    ----------
    module : torch.nn.Module
        Maps the preprocessed batch to ``(batch, dim)`` (or ``(batch, C, 1, 1)``). It is put in
        eval mode and moved to ``device`` (in place, as ``module.eval().to(device)`` does), so
        dropout and batch-norm statistics stay fixed.
    preprocess : callable, optional
        Tensor -> tensor transform run on each batch before the module.
    dim : int, optional
        Vector length; inferred by a forward pass on ``example`` when not given.
    name : str, optional
        For provenance; default ``"torch/<ModuleClass>"``.
    device : "auto", "cpu", "cuda", or torch.device
        ``"auto"`` uses the GPU when torch sees one.
    example : images, optional
        Input used to infer ``dim`` (its first image); default a mid-grey 224 x 224 RGB image.
    """

    def __init__(self, module: torch.nn.Module, preprocess: Callable | None = None,
                 dim: int | None = None, name: str | None = None, device="auto", example=None):
        if not isinstance(module, torch.nn.Module):
            raise InvalidInputError(
                f"module must be a torch.nn.Module, got {type(module).__name__}")
        if preprocess is not None and not callable(preprocess):
            raise InvalidInputError(
                f"preprocess must be callable (tensor -> tensor), got {type(preprocess).__name__}")
        self.device = resolve_device(device)
        self.module = module.eval().to(self.device)
        self.preprocess = preprocess
        self.name = name or f"torch/{type(module).__name__}"
        if dim is not None:
            if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
                raise InvalidInputError(f"dim must be a positive int, got {dim!r}")
            self.dim = int(dim)
        else:
            self.dim = self._infer_dim(example)

    def _infer_dim(self, example) -> int:
        if example is None:
            example = np.full((1, 224, 224, 3), 128, np.uint8)  # (1, H, W, 3) mid-grey probe
        items = check_images(example)[:1]
        try:
            with torch.inference_mode():
                y = _as_vectors(self._encode_batch(items), 1, None, self.name)
        except InvalidInputError:
            raise
        except Exception as exc:  # the module rejected the probe's size or shape
            raise InvalidInputError(
                f"could not infer dim of {self.name!r} by running it on one "
                f"{'224 x 224 probe image' if example is None else 'example image'} "
                f"({type(exc).__name__}: {exc}); pass dim=... or example=images[:1]") from exc
        return int(y.shape[1])

    def _encode_batch(self, chunk) -> torch.Tensor:
        x = images_to_tensor(chunk, self.device)  # (batch, 3, H, W) in [0, 1], or a list
        if self.preprocess is not None:
            x = self.preprocess(x)
        elif isinstance(x, list):
            sizes = sorted({tuple(t.shape[1:]) for t in x})
            raise InvalidInputError(
                f"images in one batch differ in size ({sizes[0]} and {sizes[1]}, H x W) and "
                "there is no preprocess to resize them; pass preprocess="
                "memstore.encoders.inputs.ResizeCropNormalize(224), or resize the images")
        return self.module(x)
