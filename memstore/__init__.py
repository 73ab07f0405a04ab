"""memstore: explicit memory for machine-learning models, kept in an embedded database.

>>> import memstore
>>> sorted(n for n in memstore.__all__ if n[0].islower())
['build_datastore', 'connect', 'open']
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
from .torchvision_compat import install_import_hook as _install_import_hook

# transformers, timm and open_clip import torchvision, whose CUDA wheel fails to import on a CPU
# torch; the hook repairs that import where it fails and touches nothing else (torchvision_compat).
_install_import_hook()

__version__ = "0.1.0"

# The memory imports lancedb, lance, duckdb and pyarrow (about 2 s), the heads torch and
# scikit-learn (seconds more): load each on first use, so that `import memstore` and every
# `memstore --help` stay fast (benchmarks/bench_startup.py).
_LAZY = {"open": "memstore.memory", "Memory": "memstore.memory", "WriteResult": "memstore.memory",
         "KNNClassifier": "memstore.heads.knn", "KNNLM": "memstore.heads.knnlm",
         "KNNLogitsProcessor": "memstore.heads.knnlm", "build_datastore": "memstore.heads.knnlm",
         "ResMem": "memstore.heads.resmem", "RACClassifier": "memstore.heads.rac",
         "connect": "memstore.client", "RemoteMemory": "memstore.client"}


def __getattr__(name):
    import importlib.util

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    # `import memstore; memstore.versioning.X` worked while `import memstore` imported the whole
    # package as a side effect; a sub-module is now imported when it is first named.
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'memstore' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "open",
    "connect",
    "RemoteMemory",
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
