"""The memstore error tree.

Every error memstore raises on purpose derives from :class:`MemstoreError` and
also from the built-in a caller would reach for first (``ValueError`` for bad
values, ``LookupError`` for unknown ids or versions, ``PermissionError`` for a
write that is not allowed), so ``except ValueError`` keeps working in code that
does not know memstore. Messages name the offending value and the fix.

Examples
--------
>>> from memstore.errors import MemstoreError, InvalidInputError
>>> issubclass(InvalidInputError, ValueError) and issubclass(InvalidInputError, MemstoreError)
True
"""

from __future__ import annotations


class MemstoreError(Exception):
    """Root of every error memstore raises on purpose."""


class InvalidInputError(MemstoreError, ValueError):
    """Input that cannot be stored: NaN/inf, empty batch, mismatched lengths, bad weights."""


class DimensionMismatchError(InvalidInputError):
    """Vectors whose dimension differs from the memory's."""


class SQLResultError(InvalidInputError):
    """A SELECT given to prune/reweight/relabel returned the wrong columns or values."""


class UnknownIdsError(MemstoreError, LookupError):
    """Ids that are not rows of the memory at its current version."""


class VersionNotFoundError(MemstoreError, LookupError):
    """A version number or tag the memory does not have."""


class ReadOnlyError(MemstoreError, PermissionError):
    """A write on a pinned (read-only) memory, or a SQL statement that would change data."""


class NotAMemoryError(MemstoreError, FileExistsError):
    """A path that holds something other than a memstore memory."""


class SchemaVersionError(MemstoreError, RuntimeError):
    """A memory written by a newer memstore than the one installed."""


class LockedError(MemstoreError, BlockingIOError):
    """Another process is writing to the memory."""


class ForgetError(MemstoreError, RuntimeError):
    """``forget`` erased the rows but found their bytes still in a file of the memory."""
