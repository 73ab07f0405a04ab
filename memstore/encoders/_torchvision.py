"""Import torchvision on a CPU torch that was paired with a CUDA torchvision wheel.

The torchvision wheel that matches torch 2.13 on this kind of machine is a CUDA build. Its
compiled ops library does not load on a CPU-only torch, so the ``torchvision::nms`` operator is
never registered, and ``import torchvision`` then dies in ``_meta_registrations.py`` with
``RuntimeError: operator torchvision::nms does not exist`` when it tries to attach a fake
(meta) kernel to it. Declaring the two operator *schemas* (no kernels) is enough for the import
to succeed: transforms, models, timm and open_clip all work; only ``torchvision.ops`` calls that
need the real kernels (nms, roi_align, ...) do not.

timm and open_clip import torchvision themselves, so :func:`import_torchvision` must run before
either of them is imported; every memstore function that needs them calls it first.
"""

from __future__ import annotations

import sys
import threading

_MISSING_OP = "operator torchvision::nms does not exist"

# The Library object owns the schema registrations: if it is garbage-collected, torch removes
# the operators again, so it lives at module level for the life of the process.
_fragment = None
_lock = threading.Lock()


def _define_missing_ops() -> None:
    """Declare ``torchvision::nms`` and ``torchvision::qnms`` (schemas only, no kernels)."""
    global _fragment
    import torch

    if _fragment is not None:
        return
    lib = torch.library.Library("torchvision", "FRAGMENT")
    # The schemas torchvision's C++ extension would have registered (torchvision/csrc/ops/nms.cpp).
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _fragment = lib


def _forget_torchvision() -> None:
    """Drop the half-initialised torchvision modules a failed import leaves in sys.modules."""
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def import_torchvision():
    """Import and return torchvision, working around a CUDA wheel on a CPU torch.

    Tries a plain ``import torchvision`` first. Only if that fails with "operator
    torchvision::nms does not exist" does it declare the missing operator schemas, clear the
    half-imported modules and import again; any other failure is raised unchanged.

    Returns
    -------
    module
        The ``torchvision`` module.

    Raises
    ------
    ImportError
        torchvision is not installed.

    Examples
    --------
    >>> tv = import_torchvision()
    >>> tv.__name__
    'torchvision'
    """
    with _lock:
        try:
            import torchvision
        except ModuleNotFoundError as exc:
            raise ImportError(
                "memstore's image encoders need torchvision (timm and open_clip import it): "
                "pip install torchvision (on the CPU machines of this project: "
                "torchvision==0.28.0, see constraints.txt)"
            ) from exc
        except RuntimeError as exc:
            if _MISSING_OP not in str(exc):
                raise
            _forget_torchvision()
            _define_missing_ops()
            import torchvision
        return torchvision
