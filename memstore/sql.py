"""Read-only DuckDB SQL over one memory version, in a sandbox.

Tables
------
samples   id, label, weight, wrong_count (memstore.quality), provenance
          (uri, dataset, split, content_hash, added_at, the user's extra
          columns) and vector: the rows alive at the version.
taxonomy  node, parent, name, level: the label hierarchy at the version.
audit     version, time, operation, message, rows_affected, rows_total, sql,
          details, schema_version, user: every change up to the version.
tags      name, version, time.
history   id, label, weight, wrong_count, valid_from, valid_to: every
          (label, weight) a row held up to the version, from version
          ``valid_from`` until ``valid_to`` (null: still held at the version).

``samples`` joins the narrow state (kept in memory by the snapshot) with the
Lance data table, which DuckDB scans with projection and filter push-down, so
the vectors are never copied into Python to answer a query. A query that names
no data column (``SELECT label, count(*) ... GROUP BY label``) is answered from
the state alone, without the join: the planner cannot drop an unused join by
itself, and the join would cost ten times the aggregate.

The sandbox
-----------
``mem.sql`` runs SQL that may come from anyone (the CLI, a notebook, a web
form), so a query sees the memory's tables (also the internal ``_state``,
``_data`` and ``_vectors``) and the Arrow tables the caller passes, and nothing
else:

* One statement, a SELECT or an ``EXPLAIN [ANALYZE]`` of a SELECT. Anything
  else (INSERT, CREATE, COPY, SET, PRAGMA, ATTACH, INSTALL, CALL, ...) and a
  SELECT whose WITH clause holds an INSERT/UPDATE/DELETE/COPY raise
  :class:`~memstore.errors.ReadOnlyError`: changes go through ``mem.prune``,
  ``mem.reweight`` and ``mem.relabel``, which keep the audit and the versions.
  (``EXPLAIN ANALYZE`` runs its statement, so it gets the same check.)
* Every connection is made with no access to files or the network
  (``enable_external_access=false`` and the local file system disabled:
  ``read_csv``, ``read_text``, ``glob``, ``COPY``, ``ATTACH`` fail), no
  extension loading or installing, no reading of the caller's Python variables
  by name (``python_enable_replacements=false``), no spilling to a temporary
  directory, and a memory limit; then its configuration is locked, so ``SET``,
  ``RESET`` and ``PRAGMA`` cannot turn any of it back.
* A query runs to completion inside :meth:`VersionSQL.run` (DuckDB relations
  are lazy: bounding ``con.sql`` alone would bound nothing), watched by a
  thread that interrupts it past ``SQLLimits.timeout``. The caller gets a
  relation over the result on another DuckDB database, so nothing done with
  it (``rel.query``, ``rel.create_view``) reaches the sandbox, and the tables
  the caller passed are unregistered before it returns.
* A query past the time or memory limit raises
  :class:`~memstore.errors.QueryLimitError`, naming the setting to raise; any
  other DuckDB error raises :class:`~memstore.errors.SQLError` with DuckDB's
  message and the query.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import threading
import time

import duckdb
import pyarrow as pa

from .errors import InvalidInputError, QueryLimitError, ReadOnlyError, SQLError
from .snapshot import Snapshot
from .sql_limits import SQLLimits  # noqa: F401  (memstore.sql.SQLLimits, as before)

#: ``samples`` and the internal tables it is a view over, registered together
SAMPLES_TABLES = frozenset({"samples", "_state", "_data", "_vectors"})
#: the memory's tables a query can name; the caller's tables cannot shadow them
MEMORY_TABLES = SAMPLES_TABLES | {"audit", "tags", "taxonomy", "history"}
#: what the views above read; a caller's table by one of these names would replace it inside a view
INTERNAL_TABLES = {"_state", "_data", "_vectors", "_history"}

#: the DuckDB settings of every connection memstore makes for SQL (then ``disabled_filesystems``
#: and ``lock_configuration`` are set, see :func:`sandbox`)
SANDBOX_SETTINGS = {
    "enable_external_access": False,  # no files, network, ATTACH, COPY, INSTALL/LOAD
    "autoload_known_extensions": False,  # sql_auto_complete & co. would fetch an extension
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "allow_extension_repositories": "forbidden",
    "allow_persistent_secrets": False,
    "python_enable_replacements": False,  # FROM x would read a Python variable x of the calling frame
    "temp_directory": "",  # no spill files: the memory limit is the limit, and nothing is written
}

# query nodes that write (DuckDB 2.0 takes INSERT/UPDATE/DELETE/COPY in a WITH clause of a SELECT)
_WRITING_NODES = {"INSERT_QUERY_NODE", "UPDATE_QUERY_NODE", "DELETE_QUERY_NODE", "COPY_QUERY_NODE",
                  "MERGE_QUERY_NODE", "EXECUTE_QUERY_NODE"}

_POINTER = ("To change the memory, select the rows with SQL and pass the SELECT to mem.prune (delete), "
            "mem.reweight (set weights) or mem.relabel (set labels).")


class VersionSQL:
    """The DuckDB side of one snapshot: a sandboxed connection per ``samples`` view.

    Parameters
    ----------
    snapshot : Snapshot
        The version the queries read.
    limits : SQLLimits
        The time and memory one query may take.
    """

    def __init__(self, snapshot: Snapshot, limits: SQLLimits = SQLLimits()):
        self.snapshot = snapshot
        self.limits = limits
        # per samples view: the connection, and the memory's tables registered on it so far
        self._connections: dict[int, tuple[duckdb.DuckDBPyConnection, set[str]]] = {}
        # one query at a time: the caller's tables are registered on a shared connection,
        # and an interrupt stops whatever that connection runs
        self._lock = threading.Lock()

    def run(self, query: str, tables: dict | None = None) -> duckdb.DuckDBPyRelation:
        """Run one read-only statement in the sandbox; refuse anything that would change data.

        Parameters
        ----------
        query : str
            One SELECT, or ``EXPLAIN [ANALYZE]`` of one.
        tables : dict, optional
            Arrow tables (or pandas frames) the query may join, by name, e.g.
            ``{"explained": clf.explain(Q)}``; they are seen by this query only.

        Returns
        -------
        duckdb.DuckDBPyRelation
            A relation over the (already computed) result, on a DuckDB database
            apart from the sandbox.

        Raises
        ------
        ReadOnlyError
            For anything but a SELECT.
        QueryLimitError
            Past ``limits.timeout`` or ``limits.memory_limit``.
        SQLError
            For any other error DuckDB raises (syntax, unknown column, ...).
        """
        with self._lock:
            tree = check_read_only(query, self._connection(0))
            con = self._connection(self._view_level(tree), _tables_named(tree))
            names = []
            try:
                for name, table in (tables or {}).items():
                    _register(con, name, table)
                    names.append(name)
                result = self._execute(con, query)
            finally:
                for name in names:  # a later query must not see them
                    con.unregister(name)
        return _results(self.limits.memory_limit).cursor().from_arrow(result)

    def _execute(self, con: duckdb.DuckDBPyConnection, query: str) -> pa.Table:
        """Run ``query`` to the end, into Arrow, under the time limit; DuckDB errors become memstore's."""
        try:
            with _WATCHDOG.watch(con, self.limits.timeout) as watch:
                return con.sql(query).to_arrow_table()
        except duckdb.InterruptException as exc:
            if watch.expired:
                raise QueryLimitError(
                    f"the query ran past sql_timeout={self.limits.timeout:g}s and was stopped; open the "
                    "memory with memstore.open(path, sql_timeout=...) (CLI: memstore sql --timeout) "
                    f"to allow more. Query: {_one_line(query)}") from exc
            raise SQLError(_with_query(_one_line(str(exc)), query)) from exc
        except duckdb.OutOfMemoryException as exc:
            raise QueryLimitError(
                f"the query needed more than sql_memory_limit={self.limits.memory_limit!r} and was stopped; "
                "open the memory with memstore.open(path, sql_memory_limit=...) (CLI: memstore sql "
                f"--memory-limit) to allow more. Query: {_one_line(query)}") from exc
        except duckdb.Error as exc:
            raise _sql_error(exc, query) from exc

    def _view_level(self, tree: dict | None) -> int:
        """The ``samples`` view a query needs: 0 state, 1 with provenance, 2 with vectors too."""
        if not _needs_data(tree, _data_only_columns(self.snapshot)):
            return 0
        if self.snapshot.vector_dtype == "float32":
            return 2  # float32 vectors come with the data table at no extra cost
        # float16 vectors are read (widened) only by queries that name them
        return 2 if _needs_data(tree, {"vector", "samples"}) else 1

    def _connection(self, full: int, names: set[str] | None = frozenset()) -> duckdb.DuckDBPyConnection:
        """The sandbox for ``samples`` view ``full``, with the memory's tables in ``names`` registered.

        A table is read when a query first names it, not before: a ``count(*)``
        over ``samples`` must not read a commit log of 100,000 versions.
        ``names=None`` (a query whose tables cannot be told) registers them all.
        """
        if full not in self._connections:
            self._connections[full] = (sandbox(self.limits.memory_limit), set())
        con, registered = self._connections[full]
        for name in MEMORY_TABLES if names is None else MEMORY_TABLES & names:
            name = "samples" if name in SAMPLES_TABLES else name
            if name not in registered:
                register(con, self.snapshot, name, full)
                registered.add(name)
        return con


class _Watch:
    """One running query: its deadline, its connection, and whether the watchdog stopped it."""

    def __init__(self, con: duckdb.DuckDBPyConnection, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.con = con
        self.expired = False


class _Watchdog:
    """One daemon thread that interrupts the queries that run past their deadline.

    A thread of its own per query (``threading.Timer``) would cost more to start
    than a small query takes to run.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._watches: list[_Watch] = []
        self._thread: threading.Thread | None = None
        self._wake_at = math.inf  # when the thread looks next

    @contextlib.contextmanager
    def watch(self, con: duckdb.DuckDBPyConnection, seconds: float):
        """Interrupt ``con`` if the block runs past ``seconds``; yields the watch (``expired``)."""
        watch = _Watch(con, seconds)
        with self._cond:
            if math.isfinite(seconds):
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="memstore-sql-watchdog", daemon=True)
                    self._thread.start()
                self._watches.append(watch)
                if watch.deadline < self._wake_at:  # else the thread looks in time anyway: no wake-up to pay
                    self._cond.notify()
        try:
            yield watch
        finally:
            with self._cond:  # once the block is left no interrupt may come: it would hit the next query
                if watch in self._watches:
                    self._watches.remove(watch)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                self._expire(now)
                self._wake_at = min((w.deadline for w in self._watches), default=math.inf)
                self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)

    def _expire(self, now: float) -> None:
        # a method of its own, so that the thread's frame keeps no stopped connection alive
        for watch in [w for w in self._watches if w.deadline <= now]:
            watch.expired = True
            watch.con.interrupt()
            self._watches.remove(watch)


_WATCHDOG = _Watchdog()


def sandbox(memory_limit: str) -> duckdb.DuckDBPyConnection:
    """An empty in-memory DuckDB connection with :data:`SANDBOX_SETTINGS` and ``memory_limit``, locked.

    Registering Arrow tables and Lance datasets and creating views still work
    after the lock (they are not settings); reading files does not.
    """
    try:
        con = duckdb.connect(":memory:", config={**SANDBOX_SETTINGS, "memory_limit": memory_limit})
    except duckdb.Error as exc:
        raise InvalidInputError(f"sql_memory_limit={memory_limit!r} is not a DuckDB memory size "
                                f"({_one_line(str(exc))}); use e.g. '4GB' or '500MB'") from exc
    # a second wall against file access; DuckDB takes it only once the database runs
    con.execute("SET disabled_filesystems = 'LocalFileSystem'")
    con.execute("SET enable_progress_bar = false")  # a long query draws nothing on the caller's terminal
    con.execute("SET lock_configuration = true")
    return con


@functools.lru_cache(maxsize=None)
def _results(memory_limit: str) -> duckdb.DuckDBPyConnection:
    """Where the relations ``run`` returns live: a database apart from every sandbox.

    Each result gets a cursor of its own, so a result left half-read (``rel.arrow()``)
    does not block the others.
    """
    return sandbox(memory_limit)




def register(con: duckdb.DuckDBPyConnection, snapshot: Snapshot, name: str, full: int = 2) -> None:
    """Make the memory's table ``name`` (one of MEMORY_TABLES) of ``snapshot`` readable on ``con``."""
    if name in SAMPLES_TABLES:
        _register_samples(con, snapshot, full)
    elif name == "audit":
        con.register("audit", snapshot.audit)
    elif name == "tags":
        con.register("tags", snapshot.tags())
    elif name == "history":
        _register_history(con, snapshot)
    elif snapshot.taxonomy is None:
        con.execute("CREATE VIEW taxonomy AS SELECT NULL::VARCHAR AS node, NULL::VARCHAR AS parent, "
                    "NULL::VARCHAR AS name, NULL::INTEGER AS level WHERE false")
    else:
        con.register("taxonomy", snapshot.taxonomy)


def _register_samples(con: duckdb.DuckDBPyConnection, snapshot: Snapshot, full: int) -> None:
    """``_state``, ``_data`` (and ``_vectors``) and the ``samples`` view over them."""
    con.register("_state", snapshot.state)
    if snapshot.vector_dtype == "float16":
        # DuckDB reads no float16 Arrow columns: provenance without the vectors, and the
        # vectors apart, widened to float32 by Lance
        columns = [c for c in snapshot.data.schema.names if c != "vector"]
        con.register("_data", snapshot.data.scanner(columns=columns))
        con.register("_vectors", snapshot.data.scanner(columns={
            "id": "id", "vector": f"arrow_cast(vector, 'FixedSizeList({snapshot.dim}, Float32)')"}))
    elif snapshot.has_samples:
        con.register("_data", snapshot.data)
    con.execute(f"CREATE VIEW samples AS {_samples_view(snapshot, full)}")


def _register_history(con: duckdb.DuckDBPyConnection, snapshot: Snapshot) -> None:
    """``history``: a view over the state table's Lance dataset, as ``Snapshot.history`` reads it.

    DuckDB pushes a query's filters into the Lance scan, so one row's history
    (``WHERE id = 42``) reads that row's intervals, not every interval ever
    written (4 ms instead of 150 ms at a million rows).
    """
    if not snapshot.has_samples:
        con.register("history", snapshot.history())
        return
    con.register("_history", snapshot.state_dataset)
    v = int(snapshot.version)
    con.execute(f"CREATE VIEW history AS SELECT * REPLACE (CASE WHEN valid_to > {v} THEN NULL ELSE valid_to END "
                f"AS valid_to) FROM _history WHERE valid_from <= {v}")


def _tables_named(tree: dict | None) -> set[str] | None:
    """The tables a query (its DuckDB parse tree) names, lower case; None when it cannot be told."""
    if tree is None:
        return None
    names = set()
    for node in _nodes(tree):
        if node.get("type") == "TABLE_FUNCTION":
            return None  # query_table('audit') names a table in a string
        if node.get("type") == "BASE_TABLE":
            names.add(node["table_name"].lower())
    return names


def _register(con: duckdb.DuckDBPyConnection, name: str, table) -> None:
    if name.lower() in MEMORY_TABLES | INTERNAL_TABLES:
        raise InvalidInputError(
            f"a table passed to mem.sql cannot be named {name!r}: the memory's own "
            f"tables are {sorted(MEMORY_TABLES)}; pick another name")
    try:
        con.register(name, table)
    except duckdb.Error as exc:
        raise InvalidInputError(f"the table {name!r} passed to mem.sql cannot be read by DuckDB "
                                f"({_one_line(str(exc))}); pass an Arrow table or a pandas frame") from exc


def check_read_only(query: str, con: duckdb.DuckDBPyConnection) -> dict | None:
    """Refuse anything but one SELECT or ``EXPLAIN [ANALYZE]`` of one; return the SELECT's parse tree.

    Parameters
    ----------
    query : str
        The statement.
    con : duckdb.DuckDBPyConnection
        A connection to parse with (nothing is run).

    Returns
    -------
    dict or None
        DuckDB's JSON parse tree of the SELECT, or None where DuckDB gives none.

    Raises
    ------
    ReadOnlyError
        For more than one statement, or one that is not a SELECT.
    SQLError
        For a syntax error.
    """
    try:
        statements = con.extract_statements(query)
        if len(statements) != 1:
            raise ReadOnlyError(f"mem.sql runs exactly one statement, got {len(statements)}; split the query")
        kind, select, where = statements[0].type, statements[0].query, ""
        if kind == duckdb.StatementType.EXPLAIN:
            # EXPLAIN ANALYZE runs the statement it explains: check that one
            select, where = _explained(select), " inside EXPLAIN"
            inner = con.extract_statements(select)
            kind = inner[0].type if len(inner) == 1 else kind
    except duckdb.Error as exc:
        raise _sql_error(exc, query) from exc
    if kind != duckdb.StatementType.SELECT:
        raise ReadOnlyError(f"mem.sql is read-only and refused a {kind.name} statement{where}. {_POINTER}")
    tree = _parse_tree(con, select)
    for node in _nodes(tree):
        if node.get("type") in _WRITING_NODES:
            writes = node["type"].removesuffix("_QUERY_NODE")
            raise ReadOnlyError(f"mem.sql is read-only and refused a {writes} inside a SELECT. {_POINTER}")
    return tree


def _explained(text: str) -> str:
    """The statement of ``EXPLAIN [ANALYZE | (options)] statement``, comments and all skipped."""
    tokens = duckdb.tokenize(text)
    starts = [start for start, kind in tokens]
    words = [(text[start:end].strip(), kind) for (start, kind), end in zip(tokens, starts[1:] + [len(text)])]
    code = [i for i, (_, kind) in enumerate(words) if kind != duckdb.token_type.comment]
    k = 1  # code[0] is EXPLAIN
    if k < len(code) and words[code[k]][0].upper() in ("ANALYZE", "ANALYSE"):
        k += 1
    elif k < len(code) and words[code[k]][0].startswith("("):
        depth = 0
        while k < len(code):  # skip the options, to the matching parenthesis
            word, kind = words[code[k]]
            if kind == duckdb.token_type.operator:
                depth += word.count("(") - word.count(")")
            k += 1
            if depth <= 0:
                break
    return text[starts[code[k]]:] if k < len(code) else ""


def _parse_tree(con: duckdb.DuckDBPyConnection, select: str) -> dict | None:
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?::VARCHAR)", [select]).fetchall()[0][0])
    except duckdb.Error:
        return None
    return None if tree.get("error") else tree


def _nodes(tree):
    """Every dict in a JSON tree."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _sql_error(exc: duckdb.Error, query: str) -> SQLError:
    reason = _one_line(str(exc))
    if isinstance(exc, duckdb.PermissionException):
        reason += (" (mem.sql sees only the memory's tables and the tables passed to it: "
                   "it reads no files, attaches no databases and loads no extensions)")
    return SQLError(_with_query(reason, query))


def _with_query(reason: str, query: str) -> str:
    return f"{reason}{'' if reason.endswith(('.', '!', '?')) else '.'} Query: {_one_line(query)}"


def _one_line(text: str) -> str:
    """DuckDB's message (or a query) on one line, without the ``LINE 1: ... ^`` pointer."""
    lines = [line.strip() for line in text.splitlines()]
    return " ".join(line for line in lines if line and not line.startswith("LINE ") and set(line) != {"^"})


def _data_only_columns(snapshot: Snapshot) -> set[str]:
    return {c.lower() for c in snapshot.provenance_columns} | {"vector", "samples"}


def _needs_data(tree: dict | None, data_columns: set[str]) -> bool:
    """Does a query (its DuckDB parse tree) reference a column that only the data table holds?

    A column can be named, or reached through a star (``*``, ``COLUMNS(...)``)
    or the table used as a struct. Without a tree, assume it does.
    """
    if tree is None:
        return True
    for node in _nodes(tree):
        kind = node.get("class")
        if kind == "STAR":
            return True
        if kind == "COLUMN_REF" and node["column_names"][-1].lower() in data_columns:
            return True
        if any(str(c).lower() in data_columns for c in node.get("using_columns") or ()):
            return True  # JOIN ... USING (uri)
    return False


def _samples_view(snapshot: Snapshot, full: int) -> str:
    """0: the state only; 1: with provenance; 2: with provenance and vectors."""
    state_cols = ", ".join(f"s.{c}" for c in snapshot.state.column_names if c != "valid_from")
    if not full or not snapshot.has_samples:
        return f"SELECT {state_cols} FROM _state s"
    provenance = ", ".join(f'd."{c}"' for c in snapshot.provenance_columns)
    if snapshot.vector_dtype == "float32":
        return f"SELECT {state_cols}, {provenance}, d.vector FROM _state s JOIN _data d ON s.id = d.id"
    if full == 1:
        return f"SELECT {state_cols}, {provenance} FROM _state s JOIN _data d ON s.id = d.id"
    return (f"SELECT {state_cols}, {provenance}, v.vector "
            "FROM _state s JOIN _data d ON s.id = d.id JOIN _vectors v ON s.id = v.id")
