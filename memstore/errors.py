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


class CorruptMemoryError(MemstoreError, RuntimeError):
    """A memory whose files are damaged or missing; the message names the file and what is wrong.

    memstore never repairs damage by dropping data: restore the named files
    from a backup (or copy the memory elsewhere and forget/prune around them).
    """


class StaleVersionError(MemstoreError, RuntimeError):
    """A handle read Lance files that a later ``forget`` (or cleanup) removed; refresh or reopen it."""


class DiskFullError(MemstoreError, OSError):
    """A write ran out of disk space; the memory stays at its last committed version."""


class SQLError(MemstoreError, ValueError):
    """A SQL statement DuckDB could not run (syntax, unknown column, type error, ...)."""


class QueryLimitError(SQLError):
    """A SQL query went past the time or memory limit of the memory's SQL sandbox."""


class MemoryNotFoundError(MemstoreError, FileNotFoundError):
    """No memory at the path, and the caller did not ask to create one."""
