"""Memory: a model's explicit memory, opened like a database.

Examples
--------
>>> import numpy as np, tempfile, memstore
>>> mem = memstore.open(tempfile.mkdtemp() + "/demo.mem")
>>> res = mem.add(np.eye(3, 4, dtype=np.float32), ["cat", "dog", "cat"],
...               provenance={"split": "train"}, message="first rows")
>>> res.version, res.ids.tolist()
(1, [0, 1, 2])
>>> mem.sql("SELECT label, count(*) AS n FROM samples GROUP BY label ORDER BY label").fetchall()
[('cat', 2), ('dog', 1)]
>>> mem.prune("SELECT id FROM samples WHERE label = 'dog'", message="no dogs").version
2
>>> len(mem), len(mem.at(1))
(2, 3)
"""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from . import ingest, intervals, migrations
from .errors import (
    DimensionMismatchError,
    InvalidInputError,
    MemoryNotFoundError,
    ReadOnlyError,
    SQLResultError,
    UnknownIdsError,
    VersionNotFoundError,
)
from .schema import (
    AUDIT_TABLE,
    DATA_TABLE,
    STATE_TABLE,
    TAGS_TABLE,
    TAXONOMY_TABLE,
    data_schema,
    state_schema,
)
from .snapshot import Samples, Snapshot, valid_at
from .sql import SQLLimits, VersionSQL
from .stale import rereads_on_cleanup
from . import optimize as maintenance
from .versioning import Head, Store, utcnow

#: adds of at least this many rows show a progress bar on a terminal
PROGRESS_MIN_ROWS = 100_000


def _show_progress(progress: bool | None, rows: int) -> bool:
    """A progress bar when asked, or by default on a terminal for long work."""
    return (sys.stderr.isatty() and rows >= PROGRESS_MIN_ROWS) if progress is None else progress


def _extra_field(name: str, arrow_type: pa.DataType) -> pa.Field:
    """The field of an extra column; thumbnails are stored uncompressed, for forget's scan."""
    from .thumbnails import has_thumbnails, thumbnail_field

    field = pa.field(name, arrow_type)
    return thumbnail_field(arrow_type) if has_thumbnails(pa.schema([field])) else field


def _chooses_rows_under_the_lock(method):
    """Writes whose SELECT chooses rows hold the write lock from the SELECT to the commit.

    Otherwise another process could commit (or forget) between the two, and
    the rows would be chosen at a version older than the one they change.
    """

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        self._check_writable()
        with self._store.lock():
            return method(self, *args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class WriteResult:
    """What a write did: the memory version it made, rows it touched, and new ids (add)."""

    version: int
    rows: int
    ids: np.ndarray | None = None


def open(path: str | os.PathLike, *, create: bool = True, read_only: bool = False,  # noqa: A001
         sql_timeout: float = SQLLimits.timeout, sql_memory_limit: str = SQLLimits.memory_limit) -> "Memory":
    """Open the memory at ``path``; create one there if the path is new (or an empty directory).

    Parameters
    ----------
    create : make a new memory where there is none; with False a missing
        memory raises MemoryNotFoundError (the CLI opens this way; ``memstore init``
        creates). A directory that was a memory and lost its tables is damage,
        never a new memory: it raises CorruptMemoryError.
    read_only : refuse every write through this handle (and apply no migration).
    sql_timeout, sql_memory_limit : what one ``mem.sql`` query may take, in
        seconds and as a DuckDB size ("4GB"); past either it raises QueryLimitError.

    Opening a memory written by an older memstore applies the pending schema
    migrations (each recorded in the audit table), unless ``read_only``; a
    forget that was interrupted after its commit is finished first.
    Raises NotAMemoryError for a path holding anything else, and
    SchemaVersionError for a memory written by a newer memstore.
    """
    path = Path(path)
    limits = SQLLimits(float(sql_timeout), str(sql_memory_limit))
    if Store.classify(path) == "empty":
        if read_only or not create:
            raise MemoryNotFoundError(
                f"there is no memory at {str(path)!r}; create one with `memstore init {path}` "
                "or memstore.open(path, create=True)")
        Store.write_marker(path)
    store = Store(path)
    head = store.head()  # read once, and again only where something changed it
    if head is None:
        if read_only or not create:
            raise MemoryNotFoundError(
                f"the memory at {str(path)!r} was never committed (its creation was interrupted); "
                f"create it with `memstore init {path}` or memstore.open(path, create=True)")
        migrations.create(store)
        head = store.head()
    if not read_only:
        head = store.finish_interrupted_work(head)
    head = migrations.check_and_upgrade(store, read_only=read_only, head=head)
    return Memory(store, head, read_only=read_only, sql_limits=limits)


class Memory:
    """A memory at its newest version (writable), or pinned to an older one (read-only).

    Do not construct directly: use :func:`memstore.open` and :meth:`at`.
    """

    def __init__(self, store: Store, head: Head, *, pinned: int | None = None, read_only: bool = False,
                 sql_limits: SQLLimits = SQLLimits()):
        self._store = store
        self._sql_limits = sql_limits
        self._head = head
        self._pinned = pinned
        self._read_only = read_only or pinned is not None
        self._reads_at: int | None = None  # the version kept after a forget removed its files (stale.py)
        self._snapshot_cache: Snapshot | None = None
        self._sql_cache: VersionSQL | None = None
        self._searchers: dict = {}

    # -- what it is ----------------------------------------------------------
    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def version(self) -> int:
        """The memory version this handle reads."""
        if self._pinned is not None:
            return self._pinned
        return self._head.version if self._reads_at is None else self._reads_at

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    @rereads_on_cleanup
    def vector_dtype(self) -> str | None:
        """How the vectors are stored, ``"float32"`` or ``"float16"`` (None before the first add)."""
        return self._snapshot.vector_dtype

    @property
    @rereads_on_cleanup
    def dim(self) -> int | None:
        """Vector dimension, or None before the first add."""
        return self._snapshot.dim

    @property
    @rereads_on_cleanup
    def label_type(self) -> pa.DataType | None:
        return self._snapshot.label_type

    @rereads_on_cleanup
    def __len__(self) -> int:
        if self.version == self._head.version:
            return self._head.rows_total  # the head's count: no read of the state table
        return self._snapshot.state.num_rows

    def __deepcopy__(self, memo) -> "Memory":
        # A memory is a database handle, not a value: copies of an estimator that
        # holds one (scikit-learn's clone deep-copies parameters) share the database.
        return self

    def __repr__(self) -> str:
        pin = f", pinned at {self._pinned}" if self._pinned is not None else ""
        return f"<memstore.Memory {str(self.path)!r} version {self.version}, {len(self)} rows, dim {self.dim}{pin}>"

    @property
    def _snapshot(self) -> Snapshot:
        if self._snapshot_cache is None:
            self._snapshot_cache = Snapshot(self._store, self._head, self.version)
        return self._snapshot_cache

    def refresh(self) -> "Memory":
        """See commits made by other handles or processes since this one was opened."""
        if self._pinned is None:
            self._set_head(self._store.head())
        return self

    def _set_head(self, head: Head) -> None:
        self._reads_at = None
        if head != self._head:
            self._head = head
            self._snapshot_cache = None
            self._sql_cache = None
            self._searchers = {}

    def _reread_at_new_head(self) -> bool:
        """After a forget removed the files this handle read: read the same version from the new head.

        False when the head has not moved (the files are missing for another reason).
        """
        new = self._store.head()
        if new.lance_versions == self._head.lance_versions:
            return False
        version = self.version
        self._set_head(new)
        if self._pinned is None:
            self._reads_at = version
        return True

    # -- reading ---------------------------------------------------------------
    @rereads_on_cleanup
    def sql(self, query: str, **tables):
        """Run a read-only DuckDB query over this version; returns a DuckDB relation.

        Tables: ``samples``, ``taxonomy``, ``audit``, ``tags`` (see memstore.sql),
        and any Arrow table passed by keyword, e.g. the attribution of a head:
        ``mem.sql("SELECT e.query, s.uri FROM e JOIN samples s USING (id)", e=clf.explain(Q))``.
        ``.df()``, ``.fetchall()``, ``.arrow()`` and ``.to_arrow_table()`` work on
        the result. Statements that would change anything raise ReadOnlyError.
        """
        if self._sql_cache is None:
            self._sql_cache = VersionSQL(self._snapshot, self._sql_limits)
        return self._sql_cache.run(query, tables)

    @rereads_on_cleanup
    def versions(self) -> pa.Table:
        """One row per version up to this one: version, time, operation, message, rows."""
        audit = self._snapshot.read_audit(["version", "time", "operation", "message", "rows_total",
                                           "rows_affected"])
        return pa.table({
            "version": audit["version"],
            "time": audit["time"],
            "operation": audit["operation"],
            "message": audit["message"],
            "rows": audit["rows_total"],
            "rows_affected": audit["rows_affected"],
        })

    @rereads_on_cleanup
    def audit(self) -> pa.Table:
        """Who, what, when of every change up to this version (also SQL table ``audit``)."""
        return self._snapshot.audit

    @rereads_on_cleanup
    def tags(self) -> pa.Table:
        """Tag names and the versions they point to."""
        return self._snapshot.tags()

    @rereads_on_cleanup
    def info(self) -> dict:
        """Rows, dimension, labels, versions and size on disk."""
        labels = self.sql("SELECT count(DISTINCT label) FROM samples").fetchall()[0][0]
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return {
            "path": str(self.path),
            "version": self.version,
            "head_version": self._head.version,
            "rows": len(self),
            "dim": self.dim,
            "label_type": str(self.label_type) if self.label_type else None,
            "labels": labels,
            "versions": self._head.version + 1,
            "tags": self.tags()["name"].to_pylist(),
            "schema_version": self._head.schema_version,
            "bytes_on_disk": size,
        }

    def check(self):
        """Verify the memory end to end: checksums of every file, ids, intervals, the commit log.

        Like SQLite's ``PRAGMA integrity_check``; it reads every file once. A
        writable handle first finishes an interrupted forget. Returns a
        :class:`memstore.check.CheckReport`; damage raises CorruptMemoryError
        naming each file and what is wrong, and the memory then refuses writes
        until a check passes (see memstore/check.py).

        Examples
        --------
        >>> import numpy as np, tempfile, memstore
        >>> mem = memstore.open(tempfile.mkdtemp() + "/c.mem")
        >>> _ = mem.add(np.ones((3, 4), np.float32), ["a", "b", "a"])
        >>> report = mem.check()
        >>> report.rows, report.problems
        (3, [])
        """
        from .check import check
        from .errors import CorruptMemoryError
        from .forget import has_pending_forget

        if not self._read_only:
            self._store.finish_interrupted_work()
        elif has_pending_forget(self._store):
            raise CorruptMemoryError(
                f"a forget of {str(self.path)!r} is unfinished (forget.pending): open the memory "
                "without read_only to finish it, then check again")
        return check(self._store, self._store.head())

    # -- search --------------------------------------------------------------------
    @property
    @rereads_on_cleanup
    def samples(self) -> Samples:
        """Ids, vectors, labels and weights of this version, in id order (read once, kept)."""
        return self._snapshot.samples

    @rereads_on_cleanup
    def take(self, ids, columns: list[str] | None = None) -> pa.Table:
        """Rows by id at this version, in the order given: ``id`` and ``columns``.

        ``columns`` are those of ``samples`` (``vector`` included when named;
        default all but the vector). Rows are found by id, not by a scan: a few
        rows of a large memory cost milliseconds, where ``mem.sql(... WHERE id
        IN ...)`` reads every row. Unknown ids raise ``UnknownIdsError``.

        >>> import numpy as np, tempfile, memstore
        >>> mem = memstore.open(tempfile.mkdtemp() + "/t.mem")
        >>> _ = mem.add(np.eye(3, dtype="f4"), ["a", "b", "c"], provenance={"uri": ["x", "y", "z"]})
        >>> mem.take([2, 0], ["uri", "label"]).to_pylist()
        [{'id': 2, 'uri': 'z', 'label': 'c'}, {'id': 0, 'uri': 'x', 'label': 'a'}]
        """
        return self._snapshot.take(ids, columns)

    @rereads_on_cleanup
    def index_info(self) -> dict | None:
        """The ANN index on the vectors, as ``create_index`` measured it; None without one."""
        if not self._snapshot.has_samples or not self._snapshot.data.describe_indices():
            return None
        audit = self._store.dataset(AUDIT_TABLE).to_table(
            columns=["version", "details"],
            filter=f"operation = 'create_index' AND version <= {self._head.version}")
        if not audit.num_rows:
            return None
        last = audit.sort_by("version").slice(audit.num_rows - 1)
        return {"version": last["version"][0].as_py(), **json.loads(last["details"][0].as_py())}

    def searcher(self, metric: str = "cosine", index: str = "auto", *, nprobes: int | None = None,
                 refine_factor: int | None = None, device="auto", k: int = 10):
        """The exact or indexed search over this version, built once per handle and kept.

        ``index="auto"`` takes the ANN index when one exists for ``metric`` and
        the memory holds at least ``memstore.index.ANN_AUTO_ROWS`` rows;
        ``"exact"`` and ``"ann"`` force a choice. ``"ivf"`` builds an in-RAM
        IVF with exact distances (:class:`memstore.ivf_search.IVFSearch`,
        faiss), its ``nprobes`` tuned to recall@``k`` 0.95 unless given: the
        fastest for large batches with large k (the kNN-LM).
        """
        from .index import ANN_AUTO_ROWS
        from .search import ExactSearch, IndexedSearch, check_metric

        check_metric(metric)
        if index not in ("auto", "exact", "ann", "ivf"):
            raise InvalidInputError(f"index must be 'auto', 'exact', 'ann' or 'ivf', got {index!r}")
        if not len(self):
            raise InvalidInputError(f"the memory at version {self.version} holds no rows to search")
        if index == "ivf":
            from .ivf_search import IVFSearch

            key = (metric, "ivf", nprobes, k)
            if key not in self._searchers:
                self._searchers[key] = IVFSearch(self.samples.vectors, metric, nprobes=nprobes, k=k)
            return self._searchers[key]
        info = self.index_info() if index != "exact" else None
        if index == "ann" and (info is None or info["metric"] != metric):
            have = "no index" if info is None else f"an index for metric {info['metric']!r}"
            raise InvalidInputError(
                f"index='ann' with metric {metric!r}, but the memory has {have}; "
                f"run mem.create_index(metric={metric!r}) first")
        use_ann = info is not None and info["metric"] == metric and (
            index == "ann" or len(self) >= ANN_AUTO_ROWS)
        key = (metric, use_ann, nprobes, refine_factor, str(device))
        if key not in self._searchers:
            if use_ann:
                self._searchers[key] = IndexedSearch(
                    self._snapshot.data, self.samples.ids, metric,
                    nprobes=nprobes if nprobes is not None else info["nprobes"],
                    refine_factor=refine_factor if refine_factor is not None else info["refine_factor"])
            else:
                self._searchers[key] = ExactSearch(self.samples.vectors, metric, device=device)
        return self._searchers[key]

    @rereads_on_cleanup
    def search(self, queries, k: int = 10, *, metric: str = "cosine", index: str = "auto",
               nprobes: int | None = None, refine_factor: int | None = None) -> pa.Table:
        """The k nearest rows of each query: a table (query, rank, id, distance, label).

        Distances: cosine 1 - cos, dot 1 - q.x, l2 squared euclidean (as LanceDB).
        """
        searcher = self.searcher(metric, index, nprobes=nprobes, refine_factor=refine_factor, k=k)
        dist, pos = searcher.search(queries, k)
        nq, k = pos.shape
        return pa.table({
            "query": np.repeat(np.arange(nq), k),
            "rank": np.tile(np.arange(k), nq),
            "id": self.samples.ids[pos.ravel()],
            "distance": dist.ravel(),
            "label": self.samples.labels.take(pa.array(pos.ravel())),
        })

    @rereads_on_cleanup
    def neighbors_as_context(self, queries=None, k: int = 4, *, ids=None, exclude_self: bool = True,
                             metric: str = "cosine", index: str = "auto"):
        """The k nearest rows' embeddings per query as a (batch, k, dim) tensor, with their ids.

        For conditioning a generative model by cross-attention; ``ids=`` takes
        rows of this memory as queries and leaves each one's own row out. See
        :mod:`memstore.conditioning` (and its ``NeighbourCollate`` for DataLoaders).
        """
        from .conditioning import neighbors_as_context

        return neighbors_as_context(self, queries, k, ids=ids, exclude_self=exclude_self, metric=metric,
                                    index=index)

    def create_index(self, index_type: str = "IVF_PQ", metric: str = "cosine", *,
                     num_partitions: int | None = None, num_sub_vectors: int | None = None,
                     target_recall: float = 0.95, k: int = 10, sample: int = 200,
                     message: str | None = None):
        """Build an ANN index on the vectors, tune it to ``target_recall``, commit a version.

        Recall@k is measured against exact search on ``sample`` of the memory's
        own rows; the chosen ``nprobes``/``refine_factor`` and the figures go in
        the audit row and the returned :class:`memstore.index.IndexReport`.
        Rows added later are searched exactly by Lance until the next
        ``create_index``.
        """
        from .index import IndexReport, build_index, check_index_request

        self._check_writable()
        self.refresh()
        check_index_request(index_type, metric, len(self), target_recall)
        with self._store.transaction() as tx:
            samples = Snapshot(self._store, tx.head, tx.head.version).samples
            _, measured = build_index(
                tx.table(DATA_TABLE).to_lance(), samples, index_type=index_type, metric=metric,
                num_partitions=num_partitions, num_sub_vectors=num_sub_vectors,
                target_recall=target_recall, k=k, sample=sample)
            head = tx.commit("create_index", message or f"{index_type} index, metric {metric}",
                             rows_affected=0, details=measured)
        self._set_head(head)
        return IndexReport(version=head.version, **measured)

    # -- time travel -------------------------------------------------------------
    def at(self, ref: int | str) -> "Memory":
        """A read-only handle pinned to a version number or tag name."""
        return Memory(self._store, self._head, pinned=self._resolve(ref), read_only=True, sql_limits=self._sql_limits)

    def _resolve(self, ref: int | str) -> int:
        if isinstance(ref, str):
            tags = self._snapshot.tags()
            hit = pc.equal(tags["name"], ref)
            if not pc.any(hit).as_py():
                known = tags["name"].to_pylist()
                raise VersionNotFoundError(f"no tag named {ref!r}; the tags are {known}")
            return int(tags.filter(hit)["version"][0].as_py())
        if isinstance(ref, (bool, np.bool_)) or not isinstance(ref, (int, np.integer)):
            raise InvalidInputError(f"a version is an int or a tag name, got {ref!r}")
        if not 0 <= ref <= self._head.version:
            raise VersionNotFoundError(
                f"version {ref} does not exist; this memory has versions 0..{self._head.version}"
            )
        return int(ref)

    def tag(self, name: str, version: int | str | None = None) -> int:
        """Name a version (default: this handle's); returns the version tagged."""
        self._check_writable()
        if not isinstance(name, str) or not name or name.isdigit():
            raise InvalidInputError(f"a tag name is a non-empty string that is not a number, got {name!r}")
        target = self.version if version is None else self._resolve(version)
        with self._store.lock():
            tags = self._store.dataset(TAGS_TABLE).to_table()
            if name in tags["name"].to_pylist():
                raise InvalidInputError(f"tag {name!r} already exists; choose another name or untag it first")
            table = self._store.open_table(TAGS_TABLE)
            table.add(pa.table({"name": [name], "version": [target], "time": [utcnow()]},
                               schema=table.schema))
        self._sql_cache = None  # its SQL's tags table was read before the tag
        return target

    def untag(self, name: str) -> None:
        """Remove a tag (the version it named stays)."""
        self._check_writable()
        self._resolve(name)
        with self._store.lock():
            escaped = name.replace("'", "''")
            self._store.open_table(TAGS_TABLE).delete(f"name = '{escaped}'")
        self._sql_cache = None

    def restore(self, ref: int | str, message: str | None = None) -> WriteResult:
        """Make a new version whose rows, labels, weights and taxonomy equal those of ``ref``."""
        self._check_writable()
        target = self._resolve(ref)
        with self._store.transaction() as tx:
            snap = Snapshot(self._store, tx.head, tx.head.version)
            changed = 0
            for name, key in ((STATE_TABLE, "id"), (TAXONOMY_TABLE, "node")):
                if name not in tx.head.lance_versions:
                    continue
                history = snap._dataset(name)
                # rows open now that began after the target: they end here
                later = history.to_table(filter=f"valid_to IS NULL AND valid_from > {target}")
                # rows of the target that have ended since: they begin again here
                ended = history.to_table(filter=f"{valid_at(target)} AND valid_to IS NOT NULL")
                intervals.close(tx.table(name), later, tx.version, key)
                intervals.reopen(tx.table(name), ended, tx.version)
                if name == STATE_TABLE:
                    touched = pa.concat_arrays([later["id"].combine_chunks(), ended["id"].combine_chunks()])
                    changed = len(pc.unique(touched))
            rows = Snapshot(self._store, tx.head, target).state.num_rows
            head = tx.commit("restore", message or f"restore version {target}", rows_affected=changed,
                             rows_total=rows, details={"restored": target, "ref": str(ref)})
        self._set_head(head)
        return WriteResult(head.version, changed)

    # -- writing -------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._pinned is not None:
            raise ReadOnlyError(
                f"this handle is pinned to version {self._pinned} and is read-only; write through "
                f"the memory itself (memstore.open(...)), or mem.restore({self._pinned}) to go back"
            )
        if self._read_only:
            raise ReadOnlyError("this memory was opened with read_only=True; reopen it without")

    def add(self, vectors, labels=None, provenance: dict | None = None, weights=None,
            message: str | None = None, *, batch_size: int = 32768,
            progress: bool | None = None, vector_dtype: str | None = None) -> WriteResult:
        """Append samples in one new version; returns the version and the new ids.

        Parameters
        ----------
        vectors : (n, dim) numpy array, torch tensor, Arrow fixed-size-list array,
            or an Arrow table with a ``vector`` column (and ``label``, ``weight``,
            provenance columns).
        labels : n class names (str) or integer ids (int64), or one for all.
        provenance : {column: value or n values}: ``uri``, ``dataset``, ``split``,
            ``content_hash`` (default: SHA-256/128 of the vector) and your own columns.
        weights : quality weights in [0, inf), default 1.0.
        batch_size : rows converted and written at a time (bounds extra memory).
        progress : show a progress bar; default on a terminal for large adds.
        vector_dtype : how the vectors are stored, ``"float32"`` or ``"float16"``
            (half the disk; values are rounded, searches compute in float32).
            The first add decides for the memory; later adds may only repeat it.
        """
        self._check_writable()
        with self._store.transaction() as tx:
            snap = Snapshot(self._store, tx.head, tx.head.version)
            dtype = ingest.check_vector_dtype(vector_dtype, snap.vector_dtype)
            batch = ingest.prepare(vectors, labels, provenance, weights,
                                   dim=snap.dim, label_type=snap.label_type,
                                   existing=snap.provenance_columns)
            if dtype == "float16":
                ingest.check_float16_range(batch.vectors)
            n = len(batch)
            ids = np.arange(tx.head.next_id, tx.head.next_id + n, dtype=np.int64)
            data, state = self._sample_tables(tx, batch, dtype)
            show = _show_progress(progress, n)
            with tqdm(total=n, unit="rows", desc="add", disable=not show) as bar:
                def stream():
                    for rb in ingest.batches(batch, ids, tx.version, utcnow(), data.schema, batch_size):
                        yield rb
                        bar.update(rb.num_rows)
                # Lance directly, for its file size bound: a forget rewrites the fragments it touches
                data.to_lance().insert(pa.RecordBatchReader.from_batches(data.schema, stream()),
                                       max_rows_per_file=maintenance.FRAGMENT_ROWS)
            state.to_lance().insert(pa.table({
                "id": ids,
                "label": batch.labels,
                "weight": batch.weights,
                "wrong_count": pa.nulls(n, pa.int32()),
                "valid_from": np.full(n, tx.version, dtype=np.int64),
                "valid_to": pa.nulls(n, pa.int64()),
            }, schema=state.schema), max_rows_per_file=maintenance.FRAGMENT_ROWS)
            head = tx.commit("add", message, rows_affected=n, rows_total=tx.head.rows_total + n,
                             next_id=int(ids[-1]) + 1,
                             details={"first_id": int(ids[0]), "last_id": int(ids[-1])})
        self._set_head(head)
        return WriteResult(head.version, n, ids)

    def add_images(self, images, labels=None, encoder=None, provenance: dict | None = None,
                   weights=None, message: str | None = None, *, batch_size: int = 64,
                   progress: bool | None = None, thumbnails: int | None = 64) -> WriteResult:
        """Encode images with a frozen encoder and add them in one version.

        Parameters
        ----------
        images : an ImageDataset (``memstore.data``: labels, uris, dataset and
            split come with it), a uint8 array (n, H, W[, 3]), or a list of PIL
            images or file paths.
        labels : one per image (default: the dataset's class names).
        encoder : a ``memstore.encoders.Encoder`` (default: EfficientNet-Lite0
            with its ImageNet weights).
        provenance : as in :meth:`add`; ``content_hash`` defaults to the
            SHA-256/128 of the image, ``encoder`` to the encoder's name and
            ``uri`` to the file path or dataset uri.
        thumbnails : pixels on the longer side of the preview kept per row in
            the ``thumbnail`` column (``memstore.thumbnails``; ``memstore serve``
            shows them, ``forget`` erases them with the row), or None for none.
        """
        from . import images as image_input
        from .thumbnails import check_size

        self._check_writable()
        thumbnails = check_size(thumbnails)
        if encoder is None:
            from .encoders import efficientnet_lite0

            encoder = efficientnet_lite0()
        if self.dim is not None and encoder.dim != self.dim:
            raise DimensionMismatchError(
                f"encoder {encoder.name!r} gives {encoder.dim}-d vectors but this memory holds "
                f"{self.dim}-d ones; use the encoder that filled it, or another memory")
        vectors, labels, provenance = image_input.prepare(
            images, labels, encoder, provenance, batch_size=batch_size, progress=progress,
            thumbnails=thumbnails)
        return self.add(vectors, labels, provenance=provenance, weights=weights,
                        message=message or f"{len(vectors)} images encoded by {encoder.name}")

    def _sample_tables(self, tx, batch: ingest.Batch, vector_dtype: str):
        """The data and state tables, created by the first add, widened for new extra columns."""
        if not tx.has_table(DATA_TABLE):
            extras = [_extra_field(k, v.type) for k, v in batch.extras.items()]
            return (tx.create_table(DATA_TABLE, data_schema(batch.vectors.shape[1], extras, vector_dtype)),
                    tx.create_table(STATE_TABLE, state_schema(batch.labels.type)))
        data = tx.table(DATA_TABLE)
        new = [_extra_field(k, v.type) for k, v in batch.extras.items() if k not in data.schema.names]
        if new:
            data.add_columns(new)  # all-null for earlier rows; metadata only, no rewrite
        for name, arr in batch.extras.items():
            want = data.schema.field(name).type
            if arr.type != want:
                try:
                    batch.extras[name] = arr.cast(want)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    raise InvalidInputError(
                        f"extra column {name!r} holds {want} in this memory, got {arr.type}; "
                        "convert it or use another column name"
                    ) from None
        return data, tx.table(STATE_TABLE)

    @_chooses_rows_under_the_lock
    def prune(self, select: str | np.ndarray, message: str | None = None, *,
              tables: dict | None = None) -> WriteResult:
        """Delete the rows whose ids a SELECT returns (one ``id`` column), or given ids.

        Pruned rows leave this and later versions; earlier versions keep them,
        and ``restore`` can bring them back. Use ``forget`` to erase for real.
        ``tables`` are Arrow tables the SELECT may join, by name (as in :meth:`sql`).
        """
        ids, sql = self._selected_ids(select, tables)
        return self._change_state("prune", ids, message, sql, delete=True)

    @_chooses_rows_under_the_lock
    def forget(self, select: str | np.ndarray, message: str | None = None, *,
               rebuild_index: bool = False, tables: dict | None = None):
        """Erase rows for real: from every version, tag, index and file of the memory.

        Parameters
        ----------
        select : a SELECT returning one ``id`` column (run at the newest
            version), or ids, which may include rows pruned earlier.
        message : why, for the audit row (which keeps the count, the time and
            a SHA-256 of each forgotten vector, never the vector).
        rebuild_index : train the ANN index again without the rows (its
            centroids and codebooks saw them); by default Lance only drops
            their entries from it.

        Returns
        -------
        memstore.forget.ForgetReport : the new version, rows erased, and the
        final check: no file under the memory's directory holds the raw bytes
        of a forgotten vector (else ForgetError is raised).

        Earlier versions stay readable, without the forgotten rows; ``restore``
        cannot bring them back. ``versions()`` and ``audit()`` keep the row
        counts each version had when it was written. Handles opened before the
        forget (``mem.at``, other processes) must be opened again.

        Examples
        --------
        >>> import numpy as np, tempfile, memstore
        >>> mem = memstore.open(tempfile.mkdtemp() + "/f.mem")
        >>> _ = mem.add(np.random.default_rng(0).random((4, 8), np.float32), ["a", "b", "a", "b"])
        >>> report = mem.forget("SELECT id FROM samples WHERE label = 'b'", message="consent withdrawn")
        >>> report.rows, len(mem), len(mem.at(1))
        (2, 2, 2)
        """
        from .forget import forget_rows

        ids, sql = self._selected_ids(select, tables)
        info = self.index_info() if rebuild_index else None

        def rebuild():
            self.refresh()
            self.create_index(info["index_type"], info["metric"], num_partitions=info["num_partitions"],
                              num_sub_vectors=info["num_sub_vectors"], target_recall=info["target_recall"],
                              k=info["k"], sample=min(info["sample"], len(self)),
                              message="index trained again after forget")

        try:
            return forget_rows(self._store, ids, message, sql, rebuild_index=rebuild if info else None)
        finally:
            # the old Lance versions this handle read are gone, also when the check failed
            self._set_head(self._store.head())

    def optimize(self, message: str | None = None):
        """Merge every table's small fragments and remove the Lance versions no memory version needs.

        Writes do this by themselves once a table passes the thresholds of
        memstore/optimize.py, so a memory never needs it to stay fast; call it
        to shrink a memory on disk now (after a bulk of small writes, before a
        backup). One version of its own, operation ``optimize``, no rows
        changed: every earlier version, tag, ``at()`` and ``restore`` reads
        exactly as before.

        Returns
        -------
        memstore.optimize.OptimizeReport : the new version; per table, fragments
        and Lance versions before and after; files and bytes on disk before and after.

        Examples
        --------
        >>> import numpy as np, tempfile, memstore
        >>> mem = memstore.open(tempfile.mkdtemp() + "/o.mem")
        >>> for i in range(5):
        ...     _ = mem.add(np.full((2, 4), i, np.float32), ["a", "b"])
        >>> report = mem.optimize()
        >>> report.tables["sample_data"]["fragments_before"], report.tables["sample_data"]["fragments_after"]
        (5, 1)
        >>> len(mem), len(mem.at(2)), report.files_after < report.files_before
        (10, 4, True)
        """
        from .optimize import optimize

        self._check_writable()
        try:
            return optimize(self._store, message)
        finally:
            self._set_head(self._store.head())

    @_chooses_rows_under_the_lock
    def reweight(self, select: str | pa.Table, message: str | None = None, *,
                 tables: dict | None = None) -> WriteResult:
        """Set the quality weights a SELECT returns as (id, weight); weights in [0, inf).

        E.g. SoftRankVoting's weights: ``mem.reweight(memstore.quality.SOFT_RANK_SQL)``.
        """
        table, sql = self._selection(select, ("id", "weight"), tables)
        kind = table["weight"].type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
                or pa.types.is_boolean(kind) or pa.types.is_null(kind)):
            raise SQLResultError(f"weights must be numbers, got {kind} values "
                                 f"{table['weight'].slice(0, 3).to_pylist()}; CAST them (x::DOUBLE AS weight)")
        if table["weight"].null_count:
            raise SQLResultError("the SELECT returned NULL weights; use coalesce(...) or filter them out")
        weights = table["weight"].to_numpy(zero_copy_only=False).astype(np.float64)
        ingest.check_weights(weights)
        return self._change_state("reweight", self._unique_ids(table), message, sql, weights=weights)

    @_chooses_rows_under_the_lock
    def relabel(self, select: str | pa.Table, message: str | None = None, *,
                tables: dict | None = None) -> WriteResult:
        """Set the labels a SELECT returns as (id, label), in the memory's label type.

        E.g. refine coarse labels from a table of finer ones:
        ``mem.relabel("SELECT s.id, f.label FROM samples s JOIN fine f USING (uri)", tables={"fine": t})``.
        """
        table, sql = self._selection(select, ("id", "label"), tables)
        labels = ingest.as_labels(table["label"], table.num_rows, self._snapshot.label_type)
        return self._change_state("relabel", self._unique_ids(table), message, sql, labels=labels)

    def estimate_quality(self, k: int = 100, *, metric: str = "cosine", index: str = "exact",
                         message: str | None = None, progress: bool | None = None) -> WriteResult:
        """Count how often each row is a wrong-label neighbour; store it as ``wrong_count``.

        Leave-one-out kNN over this version (see memstore.quality): every row's
        k nearest other rows are found; each that carries another label gets
        one count. One new version sets ``samples.wrong_count`` for every row;
        prune or reweight with SQL over it afterwards.
        """
        from .quality import wrong_neighbour_counts

        self._check_writable()
        self.refresh()
        samples = self.samples
        if len(samples) < 2:
            raise InvalidInputError(f"estimate_quality needs at least 2 rows, the memory has {len(samples)}")
        if samples.labels.null_count:
            raise InvalidInputError(f"{samples.labels.null_count} rows have no label; relabel or prune them")
        show = _show_progress(progress, len(samples))
        with tqdm(total=len(samples), unit="rows", desc="wrong neighbours", disable=not show) as bar:
            counts = wrong_neighbour_counts(samples.vectors, samples.labels, k,
                                            searcher=self.searcher(metric, index), progress=bar.update)
        return self._change_state("estimate_quality", samples.ids, message or f"wrong-neighbour counts, k={k}",
                                  None, wrong_counts=counts,
                                  details={"k": k, "metric": metric, "index": index,
                                           "max_wrong_count": int(counts.max()),
                                           "rows_never_wrong": int((counts == 0).sum())})

    # -- label hierarchy --------------------------------------------------------------
    @rereads_on_cleanup
    def taxonomy(self) -> pa.Table:
        """The label hierarchy at this version: node, parent, name, level (empty if none)."""
        from .schema import TAXONOMY_SCHEMA

        table = self._snapshot.taxonomy
        if table is None:
            return TAXONOMY_SCHEMA.empty_table().select(["node", "parent", "name", "level"])
        return table.sort_by([("level", "ascending"), ("node", "ascending")])

    def set_taxonomy(self, parents, names: dict | None = None, message: str | None = None) -> WriteResult:
        """Replace the label hierarchy in one new version.

        Parameters
        ----------
        parents : {node: parent or None} or a table with node, parent[, name]
            columns (see memstore.taxonomy). Every label of the memory must be
            a node.
        names : optional display names {node: name}.
        """
        from .taxonomy import taxonomy_table

        self._check_writable()
        self.refresh()
        table = taxonomy_table(parents, names)
        labels = pc.unique(pc.cast(self.samples.labels, pa.string())).to_pylist() if len(self) else []
        missing = sorted(set(labels) - set(table["node"].to_pylist()), key=str)
        if missing:
            raise InvalidInputError(
                f"label(s) {missing[:5]} of the memory are not nodes of the taxonomy; add them "
                "(e.g. {label: coarse_class}) or relabel those rows first")
        with self._store.transaction() as tx:
            history = tx.table(TAXONOMY_TABLE)
            open_rows = history.to_lance().to_table(filter="valid_to IS NULL")
            intervals.close(history, open_rows, tx.version, "node")
            intervals.reopen(history, table, tx.version)
            head = tx.commit("set_taxonomy", message or f"taxonomy of {table.num_rows} nodes",
                             rows_affected=table.num_rows,
                             details={"nodes": table.num_rows, "levels": sorted(set(table["level"].to_pylist()))})
        self._set_head(head)
        return WriteResult(head.version, table.num_rows)

    def _selected_ids(self, select, tables: dict | None) -> tuple[np.ndarray, str | None]:
        """The distinct ids a SELECT (one ``id`` column) or an id array chooses, and the SQL."""
        table, sql = self._selection(select, ("id",), tables)
        return np.unique(table["id"].to_numpy(zero_copy_only=False)), sql

    def _selection(self, select, columns: tuple[str, ...], tables: dict | None = None
                   ) -> tuple[pa.Table, str | None]:
        """Rows chosen by a SELECT (run at the head) or given as a table/array."""
        self._check_writable()
        self.refresh()
        sql = None
        if isinstance(select, str):
            sql = select
            table = self.sql(select, **(tables or {})).to_arrow_table()
        elif isinstance(select, (pa.Table, pa.RecordBatch, dict)):
            try:
                table = pa.table(select)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
                raise InvalidInputError(f"the selection is no table of columns {list(columns)}: {exc}") from None
        elif columns == ("id",):
            table = pa.table({"id": ingest.id_array(select)})
        else:
            raise InvalidInputError(
                f"pass a SELECT returning {columns} or an Arrow table with those columns, "
                f"got {type(select).__name__}"
            )
        got = [c.lower() for c in table.column_names]
        if got != list(columns):
            raise SQLResultError(
                f"expected columns {list(columns)}, got {table.column_names}; e.g. "
                f"SELECT {', '.join(columns)} FROM samples WHERE ..."
            )
        table = table.rename_columns(list(columns))
        if table.num_rows == 0:
            raise SQLResultError(f"the selection chose no rows: nothing to change. Selection: {select!r}")
        # ids of any integer type (UBIGINT, HUGEINT, uint64 arrays) whose values fit int64
        table = table.set_column(0, "id", ingest.int64_ids(table["id"], from_sql=sql is not None))
        return table, sql

    @staticmethod
    def _unique_ids(table: pa.Table) -> np.ndarray:
        ids = table["id"].to_numpy(zero_copy_only=False).astype(np.int64)
        uniq, counts = np.unique(ids, return_counts=True)
        if len(uniq) != len(ids):
            raise SQLResultError(
                f"ids {uniq[counts > 1][:5].tolist()} appear more than once; "
                "return one row per id (e.g. GROUP BY id)"
            )
        return ids

    def _change_state(self, operation: str, ids: np.ndarray, message: str | None, sql: str | None,
                      details: dict | None = None, **change) -> WriteResult:
        with self._store.transaction() as tx:
            current = Snapshot(self._store, tx.head, tx.head.version).state_of(ids)
            known = pc.is_in(pa.array(ids, pa.int64()), current["id"]).to_numpy(zero_copy_only=False)
            if not known.all():
                missing = ids[~known]
                raise UnknownIdsError(
                    f"{len(missing)} id(s) are not rows of the memory at version "
                    f"{tx.head.version}, e.g. {missing[:5].tolist()}; select ids FROM samples"
                )
            n = intervals.change_state(tx.table(STATE_TABLE), tx.version, current, ids, **change)
            rows = tx.head.rows_total - (n if change.get("delete") else 0)
            head = tx.commit(operation, message, rows_affected=n, rows_total=rows, sql=sql, details=details)
        self._set_head(head)
        return WriteResult(head.version, n)


__all__ = ["Memory", "WriteResult", "open"]
