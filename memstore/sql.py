"""Read-only DuckDB SQL over one memory version.

Tables
------
samples   id, label, weight, wrong_count (memstore.quality), provenance
          (uri, dataset, split, content_hash, added_at, the user's extra
          columns) and vector: the rows alive at the version.
taxonomy  node, parent, name, level: the label hierarchy at the version.
audit     version, time, operation, message, rows_affected, rows_total, sql,
          details, schema_version, user: every change up to the version.
tags      name, version, time.

``samples`` joins the narrow state (kept in memory by the snapshot) with the
Lance data table, which DuckDB scans with projection and filter push-down, so
the vectors are never copied into Python to answer a query. A query that names
no data column (``SELECT label, count(*) ... GROUP BY label``) is answered from
the state alone, without the join: the planner cannot drop an unused join by
itself, and the join would cost ten times the aggregate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb

from .errors import InvalidInputError, ReadOnlyError
from .snapshot import Snapshot

#: names of the tables every query sees; user tables cannot shadow them
RESERVED_NAMES = {"samples", "taxonomy", "audit", "tags", "_state", "_data", "_vectors"}

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


@dataclass(frozen=True)
class SQLLimits:
    """What one query of ``mem.sql`` may take: wall-clock seconds and DuckDB memory.

    Set them with ``memstore.open(path, sql_timeout=..., sql_memory_limit=...)``
    (CLI: ``memstore sql --timeout --memory-limit``).
    """

    timeout: float = 60.0
    memory_limit: str = "4GB"


class VersionSQL:
    """The DuckDB side of one snapshot: a connection per ``samples`` view (state; with provenance; and vectors)."""

    def __init__(self, snapshot: Snapshot, limits: SQLLimits = SQLLimits()):
        self.snapshot = snapshot
        self.limits = limits
        self._connections: dict[int, duckdb.DuckDBPyConnection] = {}
        self._parser = duckdb.connect(":memory:")  # only parses; holds no data

    def run(self, query: str, tables: dict | None = None) -> duckdb.DuckDBPyRelation:
        """Run one read-only statement; refuse anything that would change data.

        ``tables`` names Arrow tables (or pandas frames) the query may join,
        e.g. ``{"explained": clf.explain(Q)}``.
        """
        check_read_only(query)
        con = self._connection(self._view_level(query))
        for name, table in (tables or {}).items():
            if name.lower() in RESERVED_NAMES:
                raise InvalidInputError(
                    f"a table passed to mem.sql cannot be named {name!r}: the memory's own "
                    f"tables are {sorted(RESERVED_NAMES)}; pick another name")
            con.register(name, table)
        return con.sql(query)

    def _view_level(self, query: str) -> int:
        """The ``samples`` view a query needs: 0 state, 1 with provenance, 2 with vectors too."""
        if not _needs_data(self._parser, query, _data_only_columns(self.snapshot)):
            return 0
        if self.snapshot.vector_dtype == "float32":
            return 2  # float32 vectors come with the data table at no extra cost
        # float16 vectors are read (widened) only by queries that name them
        return 2 if _needs_data(self._parser, query, {"vector", "samples"}) else 1

    def _connection(self, full: int) -> duckdb.DuckDBPyConnection:
        if full not in self._connections:
            con = connect(self.snapshot)
            con.execute(f"CREATE VIEW samples AS {_samples_view(self.snapshot, full)}")
            self._connections[full] = con
        return self._connections[full]


def connect(snapshot: Snapshot) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the version's tables registered (all but ``samples``)."""
    con = duckdb.connect(":memory:")
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
    con.register("audit", snapshot.audit)
    con.register("tags", snapshot.tags())
    taxonomy = snapshot.taxonomy
    if taxonomy is None:
        con.execute("CREATE VIEW taxonomy AS SELECT NULL::VARCHAR AS node, NULL::VARCHAR AS parent, "
                    "NULL::VARCHAR AS name, NULL::INTEGER AS level WHERE false")
    else:
        con.register("taxonomy", taxonomy)
    return con


def check_read_only(query: str) -> None:
    statements = duckdb.extract_statements(query)  # a syntax error raises duckdb.ParserException
    if len(statements) != 1:
        raise ReadOnlyError(
            f"mem.sql runs exactly one statement, got {len(statements)}; split the query"
        )
    kind = statements[0].type
    if kind not in _ALLOWED:
        raise ReadOnlyError(
            f"mem.sql is read-only and refused a {kind.name} statement. To change the memory, "
            "select the rows with SQL and pass the SELECT to mem.prune (delete), "
            "mem.reweight (set weights) or mem.relabel (set labels)."
        )


def _data_only_columns(snapshot: Snapshot) -> set[str]:
    return {c.lower() for c in snapshot.provenance_columns} | {"vector", "samples"}


def _needs_data(con, query: str, data_columns: set[str]) -> bool:
    """Does ``query`` reference a column that only the data table holds?

    Reads DuckDB's own parse tree: a column can be named, or reached through a
    star (``*``, ``COLUMNS(...)``) or the table used as a struct. When the tree
    cannot be had, assume it does.
    """
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?::VARCHAR)", [query]).fetchall()[0][0])
    except duckdb.Error:
        return True
    if tree.get("error"):
        return True
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            kind = node.get("class")
            if kind == "STAR":
                return True
            if kind == "COLUMN_REF" and node["column_names"][-1].lower() in data_columns:
                return True
            if any(str(c).lower() in data_columns for c in node.get("using_columns") or ()):
                return True  # JOIN ... USING (uri)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
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
