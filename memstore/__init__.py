"""memstore: explicit memory for machine-learning models, kept in an embedded database.

>>> import memstore
>>> sorted(n for n in memstore.__all__ if n[0].islower())
['build_datastore', 'open']
>>> memstore.KNNClassifier(k=10).k
10
"""

from .errors import (
    CorruptMemoryError,
    StaleVersionError,
    DiskFullError,
    SQLError,
    QueryLimitError,
    MemoryNotFoundError,
    DimensionMismatchError,
    ForgetError,
    InvalidInputError,
    LockedError,
    MemstoreError,
    NotAMemoryError,
    ReadOnlyError,
    SchemaVersionError,
    SQLResultError,
    UnknownIdsError,
    VersionNotFoundError,
)
from .memory import Memory, WriteResult, open
from .torchvision_compat import install_import_hook as _install_import_hook

# transformers, timm and open_clip import torchvision, whose CUDA wheel fails to import on a CPU
# torch; the hook repairs that import where it fails and touches nothing else (torchvision_compat).
_install_import_hook()

__version__ = "0.1.0"

# The heads import torch and scikit-learn, which take seconds to load: load
# them on first use so that `import memstore` (and every CLI call) stays fast.
_LAZY = {"KNNClassifier": "memstore.heads.knn", "KNNLM": "memstore.heads.knnlm",
         "KNNLogitsProcessor": "memstore.heads.knnlm", "build_datastore": "memstore.heads.knnlm",
         "ResMem": "memstore.heads.resmem", "RACClassifier": "memstore.heads.rac"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'memstore' has no attribute {name!r}")


__all__ = [
    "open",
    "KNNClassifier",
    "KNNLM",
    "KNNLogitsProcessor",
    "ResMem",
    "RACClassifier",
    "build_datastore",
    "Memory",
    "WriteResult",
    "MemstoreError",
    "InvalidInputError",
    "DimensionMismatchError",
    "SQLResultError",
    "UnknownIdsError",
    "VersionNotFoundError",
    "ReadOnlyError",
    "NotAMemoryError",
    "SchemaVersionError",
    "LockedError",
    "ForgetError",
    "CorruptMemoryError",
    "StaleVersionError",
    "DiskFullError",
    "SQLError",
    "QueryLimitError",
    "MemoryNotFoundError",
]
