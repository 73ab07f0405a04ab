"""Reads that lose their files to another process's forget, and how a handle keeps reading.

A handle reads the Lance versions its head names. ``forget`` must remove every
older Lance version (that is what erasing means), so a handle opened before a
forget, in this process or another, finds its files gone: Lance says "Not
found". memstore's versions are logical (see versioning.py), so the version
the handle reads still exists under the new head, minus the forgotten rows.
The handle therefore re-reads *the same version number* from the new head and
retries; it does not jump to a newer version (``refresh()`` does that).

Files that are missing while the head has not moved are damage
(CorruptMemoryError); a read that keeps losing its files to a stream of
forgets gives up after ``RETRIES`` tries with StaleVersionError.
"""

from __future__ import annotations

import functools
import re
import time

from .errors import CorruptMemoryError, MemstoreError, StaleVersionError

#: re-reads after a cleanup removed a handle's files, before StaleVersionError
RETRIES = 5

_MISSING = re.compile(r"Not found: (\S+)|(\S+) was not found|No such file or directory")


def missing_file(exc: BaseException) -> str | None:
    """The path Lance (directly, or through DuckDB or Arrow) reports missing, else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if not isinstance(exc, MemstoreError) or exc.__cause__ is not None:
            match = _MISSING.search(str(exc))
            if match:
                return match.group(1) or match.group(2) or "a file"
        exc = exc.__cause__ or exc.__context__
    return None


def rereads_on_cleanup(method):
    """Run a reading method of Memory; when a forget removed its files, re-read and retry."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        for attempt in range(RETRIES):
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:
                lost = missing_file(exc)
                if lost is None or isinstance(exc, (CorruptMemoryError, StaleVersionError)):
                    raise
                if not self._reread_at_new_head():
                    raise CorruptMemoryError(
                        f"the memory at {str(self.path)!r} is damaged: {lost} is missing, and no "
                        "forget or cleanup removed it since this handle read the head. Run "
                        "mem.check() to list the damage; restore the file from a backup") from exc
                time.sleep(0.01 * attempt)
        raise StaleVersionError(
            f"the files of version {self.version} of {str(self.path)!r} were removed {RETRIES} times "
            "in a row by forgets in another process while this read ran; retry it, or reopen the "
            "memory when the forgets are done")

    return wrapper
