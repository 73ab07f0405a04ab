"""Memory versions: one commit log over several Lance tables.

Why not Lance's own versions alone: ``forget`` must erase rows physically, which
means compacting files and cleaning up old Lance versions, and cleanup drops
whole versions. Time travel would not survive it. So memstore keeps its own
*logical* versions: every state row carries the interval of memory versions in
which it held (see schema.py), and reading version ``v`` means reading the
*latest committed* Lance tables with the filter ``valid_from <= v < valid_to``.
Old Lance versions are then needed for nothing but crash recovery, and
``forget`` may drop them all.

Lance still gives us atomicity. A write (``Transaction``) appends to and
updates the data tables, each change a Lance commit of its own, and then
appends one row to the ``audit`` table. That append is *the* commit: the audit
row records the Lance version of every table, and readers only ever open
tables at the Lance versions the newest audit row names. A writer killed
before the audit append leaves Lance commits nobody reads; the next writer
rolls them back (``_recover``) before it starts.

Writers take an exclusive lock file; readers take none.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import lance
import lancedb
import pyarrow as pa
import pyarrow.compute as pc

from .errors import LockedError, NotAMemoryError
from .schema import AUDIT_TABLE, TAGS_TABLE

MARKER = "memstore.json"
TABLES_DIR = "tables"
LOCK_FILE = ".lock"
#: tables that are the log itself, not part of a memory version's content.
LOG_TABLES = frozenset({AUDIT_TABLE, TAGS_TABLE})
#: seconds a writer waits for another writer's lock before giving up
LOCK_TIMEOUT = 30.0


@dataclass(frozen=True)
class Head:
    """The newest committed memory version and what it consists of."""

    version: int
    schema_version: int
    rows_total: int
    next_id: int
    lance_versions: dict[str, int] = field(default_factory=dict)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Store:
    """A memory's directory: its LanceDB database, write lock and commit log."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.db = lancedb.connect(str(self.path / TABLES_DIR))

    # -- the directory -------------------------------------------------
    @staticmethod
    def classify(path: Path) -> str:
        """'memory', 'empty' (safe to create one in) or raise NotAMemoryError."""
        if not path.exists():
            return "empty"
        if not path.is_dir():
            raise NotAMemoryError(
                f"{str(path)!r} is a file, not a memory. Pass a directory path that does "
                "not exist yet (it will be created) or one made by memstore.open."
            )
        if (path / MARKER).is_file():
            return "memory"
        if any(path.iterdir()):
            raise NotAMemoryError(
                f"{str(path)!r} is a directory that holds other files and no {MARKER}: "
                "it is not a memory. Choose a new or empty directory."
            )
        return "empty"

    @staticmethod
    def write_marker(path: Path) -> None:
        """Claim an empty directory as a memory (before any table exists in it)."""
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / (MARKER + ".tmp")
        tmp.write_text(json.dumps({"format": "memstore", "created": utcnow().isoformat()}) + "\n")
        os.replace(tmp, path / MARKER)

    # -- tables ----------------------------------------------------------
    def table_names(self) -> set[str]:
        return set(self.db.list_tables().tables)

    def open_table(self, name: str):
        return self.db.open_table(name)

    def dataset(self, name: str, version: int | None = None) -> lance.LanceDataset:
        """A Lance dataset of ``name`` pinned at ``version`` (latest if None)."""
        ds = self.open_table(name).to_lance()
        return ds if version is None else ds.checkout_version(version)

    # -- the log -----------------------------------------------------------
    def head(self) -> Head | None:
        """The newest committed memory version, or None for a memory never committed."""
        if AUDIT_TABLE not in self.table_names():
            return None
        audit = self.dataset(AUDIT_TABLE)
        if audit.count_rows() == 0:
            return None
        rows = audit.to_table(
            columns=["version", "schema_version", "rows_total", "next_id", "lance_versions"]
        )
        last = rows.slice(pc.index(rows["version"], pc.max(rows["version"])).as_py(), 1)
        row = last.to_pylist()[0]
        return Head(
            version=row["version"],
            schema_version=row["schema_version"],
            rows_total=row["rows_total"],
            next_id=row["next_id"],
            lance_versions=json.loads(row["lance_versions"]),
        )

    # -- writing -------------------------------------------------------------
    @contextmanager
    def lock(self, timeout: float | None = None):
        """Exclusive writer lock; waits up to ``timeout`` (default LOCK_TIMEOUT) seconds."""
        timeout = LOCK_TIMEOUT if timeout is None else timeout
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LockedError(
                            f"another process has been writing to {str(self.path)!r} for "
                            f"more than {timeout:.0f}s; retry when it has finished"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    @contextmanager
    def transaction(self):
        """Lock, recover, yield a Transaction; roll back whatever it did not commit."""
        with self.lock():
            head = self.head()
            self._recover(head)
            tx = Transaction(self, head)
            try:
                yield tx
            except BaseException:
                if not tx.committed:
                    self._recover(head)
                raise

    def _recover(self, head: Head | None) -> None:
        """Bring every table back to what ``head`` committed.

        Lance commits made after the head by a writer that died (or failed)
        before its audit append are undone: tables created since are dropped,
        tables changed since are restored to the committed Lance version.
        """
        committed = head.lance_versions if head else {}
        for name in self.table_names():
            if name in LOG_TABLES and head is not None:
                continue
            if name not in committed:
                self.db.drop_table(name)
                continue
            table = self.open_table(name)
            if table.version != committed[name]:
                table.restore(committed[name])
        if head is None:
            return
        audit = self.open_table(AUDIT_TABLE)
        # An audit row is the commit itself, so one past the head cannot exist;
        # guard anyway against a hand-edited table (without a Lance commit when clean)
        if audit.count_rows(f"version > {head.version}"):
            audit.delete(f"version > {head.version}")


class Transaction:
    """One memory version in the making. Obtain it from ``Store.transaction()``."""

    def __init__(self, store: Store, head: Head | None):
        self.store = store
        self.head = head
        self.version = 0 if head is None else head.version + 1
        self.committed = False
        self._tables: dict[str, object] = {}

    def table(self, name: str):
        if name not in self._tables:
            self._tables[name] = self.store.open_table(name)
        return self._tables[name]

    def create_table(self, name: str, schema: pa.Schema):
        self._tables[name] = self.store.db.create_table(name, schema=schema)
        return self._tables[name]

    def has_table(self, name: str) -> bool:
        return name in self._tables or name in self.store.table_names()

    def commit(
        self,
        operation: str,
        message: str | None,
        rows_affected: int,
        rows_total: int | None = None,
        sql: str | None = None,
        details: dict | None = None,
        schema_version: int | None = None,
        next_id: int | None = None,
    ) -> Head:
        """Append the audit row that makes this transaction the new head."""
        head = self.head
        lance_versions = {
            name: self.store.open_table(name).version
            for name in self.store.table_names()
            if name not in LOG_TABLES
        }
        new = Head(
            version=self.version,
            schema_version=schema_version if schema_version is not None else head.schema_version,
            rows_total=rows_total if rows_total is not None else (head.rows_total if head else 0),
            next_id=next_id if next_id is not None else (head.next_id if head else 0),
            lance_versions=lance_versions,
        )
        row = {
            "version": new.version,
            "time": utcnow(),
            "operation": operation,
            "message": message,
            "rows_affected": int(rows_affected),
            "rows_total": new.rows_total,
            "sql": sql,
            "details": json.dumps(details, sort_keys=True) if details else None,
            "schema_version": new.schema_version,
            "user": _user(),
            "next_id": new.next_id,
            "lance_versions": json.dumps(lance_versions, sort_keys=True),
        }
        audit = self.table(AUDIT_TABLE)
        schema = audit.schema
        audit.add(pa.Table.from_pylist([{k: row.get(k) for k in schema.names}], schema=schema))
        self.committed = True
        return new


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return None
