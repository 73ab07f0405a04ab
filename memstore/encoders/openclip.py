"""open_clip image and text towers as encoders, from a local checkpoint, a hub tag, or random.

Where the weights come from:

* ``checkpoint="model.safetensors"`` (or ``.pt`` / ``.pth`` / ``.bin``): a local file, loaded by
  open_clip's own loader (``create_model_and_transforms(model_name, pretrained=path)``), which
  also converts OpenAI / timm / older open_clip layouts; it must fit ``model_name`` exactly.
* ``pretrained="laion2b_s34b_b79k"``: a tag open_clip downloads from its hub (see
  ``open_clip.list_pretrained()``); needs network access or a warm hub cache.
* ``model_name="local-dir:/path"`` or ``"hf-hub:org/repo"``: open_clip's own config + weights
  bundles; ``pretrained`` is then ignored, as in open_clip.
* neither: random weights (tests, or a tower you will train).

Images go through the model's own eval transform (PIL resize, centre crop, normalise), so a
uint8 array and the same pixels as a PIL image or file give the same vector. Texts go through
``open_clip.get_tokenizer(model_name)``; the default CLIP BPE vocabulary ships inside the
open_clip wheel, so CLIP-tokenised models work offline (Hugging Face tokenizers do not).
Vectors are L2-normalised (``encode_image/encode_text(normalize=True)``), as CLIP's contrastive
loss compares them: dot product = cosine similarity.

Examples
--------
A tiny random tower (``**model_kwargs`` override the named config):

>>> import numpy as np
>>> tiny = dict(embed_dim=16, vision_cfg=dict(image_size=32, layers=1, width=32, patch_size=16,
...             head_width=16), text_cfg=dict(context_length=16, width=32, heads=2, layers=1))
>>> img = open_clip_image("ViT-S-32-alt", device="cpu", **tiny)
>>> img.encode(np.zeros((2, 40, 40, 3), np.uint8)).shape
(2, 16)
>>> txt = open_clip_text("ViT-S-32-alt", device="cpu", **tiny)
>>> np.linalg.norm(txt.encode(["a cat", "a dog"]), axis=1).round(4)
array([1., 1.], dtype=float32)
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import torch

from ..errors import InvalidInputError
from ..torchvision_compat import import_torchvision
from .base import Encoder, _as_vectors, resolve_device
from .inputs import array_to_pil, load_pil

_SCHEMAS = ("hf-hub:", "local-dir:")


def _import_open_clip():
    import_torchvision()  # open_clip (and the timm it imports) need torchvision first
    import open_clip

    return open_clip


def _weights_label(model_name: str, pretrained, checkpoint) -> str:
    if checkpoint is not None:
        return f"file={Path(checkpoint).name}"
    if pretrained:
        return str(pretrained)
    return "bundle" if model_name.startswith(_SCHEMAS) else "random-init"


def load_open_clip(model_name: str, pretrained: str | None = None,
                   checkpoint: str | os.PathLike | None = None, device="auto", **model_kwargs):
    """Build an open_clip model in eval mode; return ``(model, eval_transform, name)``.

    Parameters are those of :func:`open_clip_image`. Raises InvalidInputError for an unknown
    model name, a missing checkpoint, both ``pretrained`` and ``checkpoint``, or a checkpoint
    that does not fit the architecture.
    """
    if pretrained is not None and checkpoint is not None:
        raise InvalidInputError(
            f"pass pretrained (a hub tag, got {pretrained!r}) or checkpoint (a local file, got "
            f"{str(checkpoint)!r}), not both")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise InvalidInputError(
            f"checkpoint file not found: {str(checkpoint)!r}; pass the path of a .pt, .pth or "
            ".safetensors state dict saved from this architecture")
    open_clip = _import_open_clip()
    known = open_clip.list_models()
    if not model_name.startswith(_SCHEMAS) and model_name.replace("/", "-") not in known:
        close = difflib.get_close_matches(model_name, known, n=3)
        raise InvalidInputError(
            f"open_clip has no model config {model_name!r}"
            + (f"; did you mean {', '.join(map(repr, close))}?" if close else "")
            + " (open_clip.list_models() lists all)")
    dev = resolve_device(device)
    weights = str(checkpoint) if checkpoint is not None else pretrained
    try:
        model, _, transform = open_clip.create_model_and_transforms(
            model_name, pretrained=weights, device=dev,
            # with no CLIP weights asked for, do not fetch Hugging Face text-tower weights either
            pretrained_text=weights is not None, **model_kwargs)
    except Exception as exc:
        if checkpoint is None:
            raise
        # open_clip reports a misfit as RuntimeError (load_state_dict), AssertionError
        # (position-embedding resize) or KeyError (layout conversion): one clear error instead
        first = (str(exc).splitlines() or [""])[0][:300]
        raise InvalidInputError(
            f"checkpoint {str(checkpoint)!r} does not fit open_clip model {model_name!r} "
            f"({type(exc).__name__}: {first}); pass the model_name (and config overrides) it "
            "was saved from") from exc
    name = f"open_clip/{model_name}/{_weights_label(model_name, pretrained, checkpoint)}"
    return model.eval(), transform, name


class OpenCLIPImageEncoder(Encoder):
    """The image tower of an open_clip model; L2-normalised vectors.

    Attributes
    ----------
    model : the whole open_clip model (eval mode); ``transform`` : its eval image transform.
    """

    modality = "image"

    def __init__(self, model, transform, name: str, device):
        self.model, self.transform, self.name = model, transform, name
        self.device = resolve_device(device)
        from PIL import Image

        probe = Image.new("RGB", (64, 64), (128, 128, 128))
        with torch.inference_mode():
            self.dim = int(self._forward([probe]).shape[1])

    def _forward(self, pil_images) -> torch.Tensor:
        x = torch.stack([self.transform(im) for im in pil_images])  # (batch, 3, S, S)
        return self.model.encode_image(x.to(self.device), normalize=True)  # (batch, dim)

    def _encode_batch(self, chunk) -> torch.Tensor:
        # The transform is PIL-based: arrays become PIL images so every input type is
        # preprocessed exactly as the model was trained.
        pil = [array_to_pil(im) for im in chunk] if not isinstance(chunk, list) \
            else [load_pil(im) for im in chunk]
        return self._forward(pil)


class OpenCLIPTextEncoder(Encoder):
    """The text tower of an open_clip model; L2-normalised vectors.

    Texts longer than the model's context (77 tokens for CLIP) are truncated by the tokenizer.
    """

    modality = "text"

    def __init__(self, model, tokenizer, name: str, device):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.device = resolve_device(device)
        with torch.inference_mode():
            self.dim = int(_as_vectors(self._encode_batch([""]), 1, None, name).shape[1])

    def _encode_batch(self, chunk) -> torch.Tensor:
        tokens = self.tokenizer(list(chunk)).to(self.device)  # (batch, context_length) int64
        return self.model.encode_text(tokens, normalize=True)  # (batch, dim)


def open_clip_image(model_name: str, pretrained: str | None = None,
                    checkpoint: str | os.PathLike | None = None, device="auto",
                    name: str | None = None, **model_kwargs) -> OpenCLIPImageEncoder:
    """An open_clip image tower as an encoder.

    Parameters
    ----------
    model_name : str
        An open_clip architecture (``open_clip.list_models()``), or ``"local-dir:PATH"`` /
        ``"hf-hub:ORG/REPO"``.
    pretrained : str, optional
        A hub tag (``open_clip.list_pretrained()``); downloads, so it needs a hub.
    checkpoint : path, optional
        A local ``.pt`` / ``.pth`` / ``.safetensors`` checkpoint of this architecture.
    device : "auto", "cpu", "cuda", or torch.device
    name : str, optional
        For provenance; default ``"open_clip/<model_name>/<tag | file=NAME | random-init>"``.
    **model_kwargs
        Overrides of the architecture config (e.g. ``embed_dim``, ``vision_cfg``), passed to
        ``open_clip.create_model_and_transforms``.

    Returns
    -------
    OpenCLIPImageEncoder
        ``encode(images)`` gives ``(n, dim)`` float32 rows of unit L2 norm.
    """
    model, transform, default = load_open_clip(model_name, pretrained, checkpoint, device,
                                               **model_kwargs)
    return OpenCLIPImageEncoder(model, transform, name or default, device)


def open_clip_text(model_name: str, pretrained: str | None = None,
                   checkpoint: str | os.PathLike | None = None, device="auto",
                   name: str | None = None, **model_kwargs) -> OpenCLIPTextEncoder:
    """An open_clip text tower as an encoder; parameters as :func:`open_clip_image`.

    The tokenizer is ``open_clip.get_tokenizer(model_name)`` at the model's context length.

    Returns
    -------
    OpenCLIPTextEncoder
        ``encode(texts)`` gives ``(n, dim)`` float32 rows of unit L2 norm.
    """
    model, _, default = load_open_clip(model_name, pretrained, checkpoint, device, **model_kwargs)
    open_clip = _import_open_clip()
    context = getattr(model, "context_length", None)
    try:
        tokenizer = open_clip.get_tokenizer(model_name, context_length=context)
    except OSError as exc:  # a Hugging Face tokenizer that is neither cached nor reachable
        raise RuntimeError(
            f"cannot load the tokenizer of {model_name!r} ({exc}); Hugging Face tokenizers need "
            "the hub or a warm cache - CLIP-BPE models (e.g. ViT-B-32) tokenise offline") from exc
    return OpenCLIPTextEncoder(model, tokenizer, name or default, device)
