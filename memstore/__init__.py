"""memstore: explicit memory for machine-learning models, kept in an embedded database.

>>> import memstore
>>> sorted(n for n in memstore.__all__ if n[0].islower())
['open']
"""

from .errors import (
    DimensionMismatchError,
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

__version__ = "0.1.0"

__all__ = [
    "open",
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
]
