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

After the audit append the writer also replaces ``head.json``, a small
record of the head (its version, the Lance version of every table, and of
the audit table itself). It is a witness, not the commit: a writer killed
between the two leaves ``head.json`` one version behind, and the audit wins.
But an audit table that holds *less* than ``head.json`` has lost a commit
(its newest manifest was deleted, say): that is damage, reported as
CorruptMemoryError, never "healed" by opening at the older version.

Recovery and cleanup obey one rule: no Lance version that the committed head
names is ever removed. Rolling back an interrupted write restores a table by
making a *new* Lance version with the committed content, so "keep only the
latest version" would delete the one the head names; cleanup therefore keeps
the head's versions and the latest, and removes the rest (with the files that
only they used, and files no version uses: what a killed writer left).

Writers take an exclusive lock file; readers take none.
"""

from __future__ import annotations

import errno
import fcntl
import getpass
import json
import logging
import os
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import lance
import lancedb
import pyarrow as pa
import pyarrow.compute as pc

from .errors import CorruptMemoryError, DiskFullError, LockedError, NotAMemoryError
from .schema import AUDIT_TABLE, TAGS_TABLE

log = logging.getLogger(__name__)

MARKER = "memstore.json"
TABLES_DIR = "tables"
LOCK_FILE = ".lock"
HEAD_FILE = "head.json"
#: tables that are the log itself, not part of a memory version's content.
LOG_TABLES = frozenset({AUDIT_TABLE, TAGS_TABLE})
#: seconds a writer waits for another writer's lock before giving up
LOCK_TIMEOUT = 30.0
#: bytes of Lance metadata (manifests, file footers) and index pages the writes' LanceDB
#: connection caches. Lance's defaults (1 GiB and 6 GiB) fill with the metadata of every
#: version a long-lived writer makes: +150 KB a write, 3.7 GB of RSS after 9,000 writes to a
#: 100k-row memory. A write reads only the newest version; Store.dataset has its own session.
WRITE_CACHE_BYTES = 64 << 20
#: bytes of index pages and of metadata that :meth:`Store.dataset` keeps between the datasets it
#: opens. Without a shared session each dataset starts cold: a write's filtered read of the
#: state table took 25 ms on a memory aged by 4,000 writes (its id index in segments, with a
#: fragment-reuse index to load) and 4 ms with one. Bounded for the reason above.
READ_INDEX_CACHE_BYTES = 512 << 20
READ_METADATA_CACHE_BYTES = 128 << 20


@dataclass(frozen=True)
class Head:
    """The newest committed memory version and what it consists of."""

    version: int
    schema_version: int
    rows_total: int
    next_id: int
    lance_versions: dict[str, int] = field(default_factory=dict)
    #: Lance version of the audit table right after this head's audit append
    audit_lance_version: int | None = field(default=None, compare=False)

    def as_json(self) -> str:
        return json.dumps({"format": "memstore-head", "version": self.version,
                           "schema_version": self.schema_version, "rows_total": self.rows_total,
                           "next_id": self.next_id, "lance_versions": self.lance_versions,
                           "audit_lance_version": self.audit_lance_version}, sort_keys=True) + "\n"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` so that a reader or a crash sees the old file or the new, whole."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)



def is_disk_full(exc: BaseException) -> bool:
    """Did ``exc`` (an OSError, or Lance's IO error as text) come from a full disk or quota?"""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text or "os error 28" in text


class Store:
    """A memory's directory: its LanceDB database, write lock and commit log."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.db = lancedb.connect(str(self.path / TABLES_DIR), session=lancedb.Session(
            index_cache_size_bytes=WRITE_CACHE_BYTES, metadata_cache_size_bytes=WRITE_CACHE_BYTES))
        self._session = lance.Session(index_cache_size_bytes=READ_INDEX_CACHE_BYTES,
                                      metadata_cache_size_bytes=READ_METADATA_CACHE_BYTES)
        self._lock_depth = 0

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
        """The tables in the directory: its ``<name>.lance`` folders, as LanceDB lists them.

        A directory listing, where LanceDB's call costs 50x as much; a small
        write asks a dozen times.
        """
        try:
            entries = os.scandir(self.path / TABLES_DIR)
        except FileNotFoundError:
            return set()
        with entries:
            return {e.name[:-len(".lance")] for e in entries if e.name.endswith(".lance") and e.is_dir()}

    def open_table(self, name: str):
        """A LanceDB table handle of ``name``, for writing."""
        return self.db.open_table(name)

    def dataset(self, name: str, version: int | None = None) -> lance.LanceDataset:
        """A Lance dataset of ``name`` pinned at ``version`` (latest if None).

        Opened with Lance directly: one manifest read, where a LanceDB handle
        and its ``to_lance()`` cost four times as much (it reads the version
        again on the way), and a small write opens a dozen of these. All share
        one Lance session, so manifests, file footers and index pages are read
        once per store, not once per dataset. Lance's files never change once
        written, and a table dropped and made again (recovery drops tables an
        uncommitted write created) is read anew: Lance keys its cache by more
        than the manifest's path (tests/test_memory.py checks it).
        """
        return lance.dataset(str(self.path / TABLES_DIR / f"{name}.lance"), version=version,
                             session=self._session)

    def latest_version(self, name: str) -> int:
        """The Lance version of ``name``'s newest manifest."""
        return self.dataset(name).version

    # -- the log -----------------------------------------------------------
    def head(self) -> Head | None:
        """The newest committed memory version, or None for a memory never committed.

        Raises CorruptMemoryError when the tables contradict ``head.json``: a
        missing table or Lance version that the head names, or an audit table
        that lost commits.
        """
        record = self._read_head_record()
        names = self.table_names()
        if AUDIT_TABLE not in names:
            if record is not None:
                raise self._damage(f"{TABLES_DIR}/{AUDIT_TABLE}.lance", "the audit table is missing",
                                   f"{HEAD_FILE} records version {record.version}")
            return None
        audit = self.dataset(AUDIT_TABLE)
        if record is not None and audit.version < (record.audit_lance_version or 0):
            raise self._damage(f"{TABLES_DIR}/{AUDIT_TABLE}.lance/_versions",
                               f"the audit table is at Lance version {audit.version}, older than the "
                               f"{record.audit_lance_version} of version {record.version}'s commit: "
                               "its newest manifest(s) are missing",
                               f"{HEAD_FILE} records version {record.version}")
        if record is not None and audit.version == record.audit_lance_version:
            head = record  # nothing was appended since: no need to read the log
        else:
            head = self._head_from_audit(audit, after=None if record is None else record.version)
            if head is None and record is not None:
                head = record
        if head is None:
            return None
        if record is not None and head.version < record.version:
            raise self._damage(f"{TABLES_DIR}/{AUDIT_TABLE}.lance",
                               f"the audit table ends at version {head.version}",
                               f"{HEAD_FILE} records version {record.version}")
        self._check_tables(head, names)
        return head

    def _head_from_audit(self, audit: lance.LanceDataset, after: int | None) -> Head | None:
        """The newest audit row (after version ``after``, when given) as a Head."""
        columns = ["version", "schema_version", "rows_total", "next_id", "lance_versions"]
        rows = audit.to_table(columns=columns, filter=None if after is None else f"version > {after}")
        if rows.num_rows == 0:
            return None
        row = rows.slice(pc.index(rows["version"], pc.max(rows["version"])).as_py(), 1).to_pylist()[0]
        return Head(version=row["version"], schema_version=row["schema_version"],
                    rows_total=row["rows_total"], next_id=row["next_id"],
                    lance_versions=json.loads(row["lance_versions"]), audit_lance_version=audit.version)

    def _check_tables(self, head: Head, names: set[str]) -> None:
        """Every table the head names exists and still has the Lance version it names."""
        for name, version in head.lance_versions.items():
            where = f"{TABLES_DIR}/{name}.lance"
            if name not in names:
                raise self._damage(where, "the table is missing", f"version {head.version} names it")
            latest = self.latest_version(name)
            if latest < version:
                raise self._damage(f"{where}/_versions",
                                   f"the table is at Lance version {latest}, older than the {version} "
                                   f"that memory version {head.version} names")

    def _read_head_record(self) -> Head | None:
        path = self.path / HEAD_FILE
        try:
            raw = json.loads(path.read_text())
            return Head(version=raw["version"], schema_version=raw["schema_version"],
                        rows_total=raw["rows_total"], next_id=raw["next_id"],
                        lance_versions={k: int(v) for k, v in raw["lance_versions"].items()},
                        audit_lance_version=raw["audit_lance_version"])
        except FileNotFoundError:
            return None  # never committed, or made before memstore kept head.json
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self._damage(HEAD_FILE, f"it cannot be read ({exc})") from None

    def write_head_record(self, head: Head) -> None:
        write_atomically(self.path / HEAD_FILE, head.as_json())

    def _damage(self, where: str, what: str, evidence: str | None = None) -> CorruptMemoryError:
        also = f" ({evidence})" if evidence else ""
        return CorruptMemoryError(
            f"the memory at {str(self.path)!r} is damaged: {where}: {what}{also}. memstore does not "
            "repair damage by dropping data; restore the named file(s) from a backup, or copy out "
            "what still reads with memstore.open(path, read_only=True).at(version)")

    # -- cleanup -------------------------------------------------------------
    def cleanup(self, head: Head | None) -> None:
        """Remove every Lance version that neither ``head`` names nor is a table's latest.

        Files that only the removed versions used go with them, and so do files
        that no version uses (what a killed writer wrote). Run under the lock.
        """
        named = head.lance_versions if head else {}
        for name in self.table_names():
            ds = self.dataset(name)
            keep = {ds.version, named.get(name, ds.version)}
            if keep == {ds.version}:
                ds.cleanup_old_versions(older_than=timedelta(0), delete_unverified=True,
                                        error_if_tagged_old_versions=False)
                continue
            old = [v["version"] for v in ds.versions() if v["version"] not in keep]
            if old:
                ds.cleanup_old_versions(versions=old, delete_unverified=True,
                                        error_if_tagged_old_versions=False)

    # -- writing -------------------------------------------------------------
    @contextmanager
    def lock(self, timeout: float | None = None):
        """Exclusive writer lock; waits up to ``timeout`` (default LOCK_TIMEOUT) seconds.

        Re-entrant within this Store: a write holds it while its SELECT chooses
        the rows and while its transaction changes them, so the rows are chosen
        at the version they are changed in.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
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
            self._lock_depth = 1
            try:
                yield
            except Exception as exc:
                if is_disk_full(exc) and not isinstance(exc, DiskFullError):
                    raise self.disk_full() from exc  # every write path, transactions included
                raise
            finally:
                self._lock_depth = 0
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    @contextmanager
    def transaction(self):
        """Lock, recover, yield a Transaction; roll back whatever it did not commit.

        A full disk raises DiskFullError (``lock`` turns it into one), after the
        rollback if the rollback itself could write; if not, the next
        transaction rolls back.
        """
        with self.lock():
            head = self._prepare()
            tx = Transaction(self, head)
            try:
                yield tx
            except BaseException as exc:
                if not tx.committed:
                    try:
                        self._recover(head)
                    except Exception as again:  # the head is untouched: the next writer recovers
                        log.warning("rollback of an uncommitted write failed (%s); the next write retries it", again)
                raise

    def disk_full(self) -> DiskFullError:
        head = self.head()  # the committed one: a failed write changed nothing readers see
        return DiskFullError(
            errno.ENOSPC, f"the disk holding {str(self.path)!r} is full; nothing was committed, the "
            f"memory is at version {head.version if head else 0}. Free space there and retry")

    def _prepare(self) -> Head | None:
        """Under the lock: the head, with every table brought back to it and unfinished work done."""
        from .check import refuse_writes_if_damaged
        from .forget import finish_pending_forget

        refuse_writes_if_damaged(self)
        head = self._recover(self.head())
        if head is not None:
            record = self._read_head_record()
            if record is None or record.version != head.version:
                self.write_head_record(head)  # a writer died between its audit append and this
            finish_pending_forget(self, head)
        return head

    def finish_interrupted_work(self, head: Head | None = None) -> Head | None:
        """Roll back a killed writer and finish an interrupted forget, if there is any to do.

        ``head`` is the head just read (read again if None); returns the head after.
        """
        from .forget import has_pending_forget

        record = self._read_head_record()
        head = head or self.head()
        if head is None:
            return None
        stale = record is None or record.version != head.version
        moved = any(self.latest_version(n) != v for n, v in head.lance_versions.items())
        if stale or moved or has_pending_forget(self):
            with self.lock():
                return self._prepare()
        return head

    def _recover(self, head: Head | None) -> Head | None:
        """Bring every table back to what ``head`` committed; the head, naming what it now reads.

        Lance commits made after the head by a writer that died (or failed)
        before its audit append are undone: tables created since are dropped,
        tables changed since are restored to the committed Lance version. A
        restore is a new Lance version holding the committed rows, so the head
        record is rewritten to name it: otherwise every later open would find
        the table moved past the head and restore it again.
        """
        committed = head.lance_versions if head else {}
        restored = {}
        for name in self.table_names():
            if name in LOG_TABLES and head is not None:
                continue
            if name not in committed:
                self.db.drop_table(name)
                continue
            if self.latest_version(name) != committed[name]:
                self.open_table(name).restore(committed[name])
                restored[name] = self.latest_version(name)
        if head is None:
            return head
        # An audit row is the commit itself, so one past the head cannot exist;
        # guard anyway against a hand-edited table (without a Lance commit when clean).
        # An audit table still at the head's own Lance version holds nothing past it.
        audit = self.dataset(AUDIT_TABLE)
        if audit.version != head.audit_lance_version and audit.count_rows(f"version > {head.version}"):
            self.open_table(AUDIT_TABLE).delete(f"version > {head.version}")
        if restored:
            head = replace(head, lance_versions={**head.lance_versions, **restored})
            self.write_head_record(head)
        return head


class Transaction:
    """One memory version in the making. Obtain it from ``Store.transaction()``."""

    def __init__(self, store: Store, head: Head | None):
        self.store = store
        self.head = head
        self.version = 0 if head is None else head.version + 1
        self.committed = False
        #: whether the commit may rebuild the state table's id index after a merge moved its rows
        #: (memstore/optimize.py); a forget's commit leaves that to the next write
        self.rebuild_id_index = True
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
        """Append the audit row that makes this transaction the new head.

        First merges the small fragments of tables that have too many, and
        after the commit removes Lance versions the head does not need once
        they pile up (memstore/optimize.py): a memory stays fast by itself.
        """
        from .optimize import cleanup_if_needed, maintain, merge_log_tables

        head = self.head
        maintain(self)
        self._record_checksums()
        lance_versions = {
            name: self.store.latest_version(name)
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
        new = replace(new, audit_lance_version=audit.version)
        try:
            self.store.write_head_record(new)
        except OSError as exc:  # committed all the same: the next head() reads it from the audit
            log.warning("committed version %d but could not update %s (%s)", new.version, HEAD_FILE, exc)
        try:  # tidying after the commit: a failure here must not report a committed write as failed
            new = merge_log_tables(self.store, new)
            cleanup_if_needed(self.store, new)
        except Exception as exc:  # noqa: BLE001 -- the next write tidies up again
            log.warning("committed version %d; merging or cleaning up after it failed (%s)", new.version, exc)
        return new

    def _record_checksums(self) -> None:
        """SHA-256 of every file this transaction's Lance writes made (memstore/check.py)."""
        from .check import new_file_checksums
        from .schema import CHECKSUMS_TABLE

        if CHECKSUMS_TABLE not in self.store.table_names():
            return  # a memory before migration 0004
        rows = new_file_checksums(self.store, self.head, self.version)
        if rows is not None:
            self.table(CHECKSUMS_TABLE).add(rows)


#: who the audit rows of this context's writes name, when not the login (audit_user)
_AUDIT_USER: ContextVar[str | None] = ContextVar("memstore_audit_user", default=None)


@contextmanager
def audit_user(name: str):
    """Writes made inside record ``name`` as their ``user`` (a server names the caller's token)."""
    token = _AUDIT_USER.set(name)
    try:
        yield
    finally:
        _AUDIT_USER.reset(token)


def _user() -> str | None:
    if _AUDIT_USER.get() is not None:
        return _AUDIT_USER.get()
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return None
