"""Where torch work runs: one rule for the search and the encoders."""

from __future__ import annotations

import torch

from .errors import InvalidInputError


def resolve_device(device="auto") -> torch.device:
    """``"auto"``: the GPU when torch sees one, else the CPU; anything else as given.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(
            f"device={device!r} is not a torch device; pass 'auto', 'cpu' or 'cuda'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            f"device={device!r} but torch sees no CUDA GPU; pass device='auto' or 'cpu'")
    return dev
