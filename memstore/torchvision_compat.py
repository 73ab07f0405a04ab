"""Make ``import torchvision`` work on a CPU torch that was paired with a CUDA torchvision wheel.

The torchvision wheel that matches torch 2.13 on the CPU machines this project runs on is a CUDA
build. Its compiled ops library does not load on a CPU-only torch, so the ``torchvision::nms``
operator is never registered, and ``import torchvision`` then dies in ``_meta_registrations.py``
with ``RuntimeError: operator torchvision::nms does not exist`` when it attaches a fake (meta)
kernel to it. Declaring the two operator *schemas* (no kernels) is enough for the import to
succeed: transforms, models, timm, open_clip and transformers' model classes all work; only the
``torchvision.ops`` calls that need the real kernels (nms, roi_align, ...) do not.

Users do not import torchvision themselves: transformers, timm and open_clip do, deep inside
``from transformers import GPT2LMHeadModel``. So ``import memstore`` installs a small import hook
(:func:`install_import_hook`): it lets the first ``import torchvision`` run unchanged and, only if
that fails with the error above, declares the schemas and runs the import again. Any other
failure is raised unchanged, and a torchvision that imports cleanly is never touched. The hook
imports nothing itself, so ``import memstore`` stays fast.

>>> import memstore
>>> from transformers import GPT2Config  # fine with or without the workaround
>>> import_torchvision().__name__
'torchvision'
"""

from __future__ import annotations

import importlib.abc
import sys
import threading

MISSING_OP = "operator torchvision::nms does not exist"

# The Library object owns the schema registrations: if it is garbage-collected, torch removes
# the operators again, so it lives at module level for the life of the process.
_fragment = None
_lock = threading.Lock()


def _define_missing_ops() -> None:
    """Declare ``torchvision::nms`` and ``torchvision::qnms`` (schemas only, no kernels)."""
    global _fragment
    import torch

    with _lock:
        if _fragment is not None:
            return
        lib = torch.library.Library("torchvision", "FRAGMENT")
        # The schemas torchvision's C++ extension would have registered (torchvision/csrc/ops/nms.cpp).
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _fragment = lib


def _forget_submodules() -> None:
    """Drop the half-initialised ``torchvision.*`` modules a failed import leaves behind."""
    for name in [m for m in sys.modules if m.startswith("torchvision.")]:
        del sys.modules[name]


class _RetryingLoader(importlib.abc.Loader):
    """torchvision's own loader, run once more after declaring the schemas if it fails on them."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        try:
            self._loader.exec_module(module)
        except RuntimeError as exc:
            if MISSING_OP not in str(exc):
                raise
            _forget_submodules()
            _define_missing_ops()
            self._loader.exec_module(module)

    def __getattr__(self, name):  # get_resource_reader, is_package, ...: torchvision's loader's own
        return getattr(self._loader, name)


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    """Finds torchvision with the other finders and wraps its loader; ignores every other name."""

    def find_spec(self, name, path, target=None):
        if name != "torchvision":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RetryingLoader(spec.loader)
                return spec
        return None


def install_import_hook() -> None:
    """Put the torchvision finder first on ``sys.meta_path`` (once per process)."""
    with _lock:
        if not any(isinstance(f, _TorchvisionFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _TorchvisionFinder())


def import_torchvision():
    """Import and return torchvision, with the workaround above where it is needed.

    Returns
    -------
    module
        The ``torchvision`` module.

    Raises
    ------
    ImportError
        torchvision is not installed; the message names the version to install.

    Examples
    --------
    >>> import_torchvision().__name__
    'torchvision'
    """
    install_import_hook()
    try:
        import torchvision
    except ModuleNotFoundError as exc:
        raise ImportError(
            "memstore's image encoders need torchvision (timm and open_clip import it): "
            "pip install torchvision (on the CPU machines of this project: "
            "torchvision==0.28.0, see constraints.txt)"
        ) from exc
    return torchvision
