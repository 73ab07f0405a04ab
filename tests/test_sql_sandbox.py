"""mem.sql is a sandbox: the memory's tables and the caller's, nothing of the host (issue 13, defects 4 and 8)."""

import time

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

import memstore
from memstore.cli import main
from memstore.sql import sandbox

ROWS = "SELECT id, label, weight FROM samples ORDER BY id"
# runs for minutes unless stopped (the join is not a cross product the planner can skip)
SLOW = "SELECT count(*) FROM range(100000000) a, range(100000) b WHERE a.range + b.range = -1"
# a hash table of 1M distinct keys: more than 10MB
BIG = "SELECT count(DISTINCT range) FROM range(1000000)"


def _disk(path):
    """Every file of the memory and its bytes."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A memory like conftest's ``filled``, made once: most tests here only read (and must not write).

    At the end, it must reopen with the rows it had.
    """
    rng = np.random.default_rng(0)
    mem = memstore.open(tmp_path_factory.mktemp("sandbox") / "test.mem")
    mem.add(rng.standard_normal((100, 8)).astype(np.float32), np.array(list("abcd"))[np.arange(100) % 4],
            provenance={"uri": [f"img/{i}.png" for i in range(100)]})
    rows = mem.sql(ROWS).fetchall()
    yield mem
    reopened = memstore.open(mem.path, create=False)
    assert (reopened.version, reopened.sql(ROWS).fetchall()) == (1, rows)


@pytest.fixture
def guarded(shared):
    """The shared memory; afterwards checks that no file of it changed, and that its SQL still sees its rows."""
    before = _disk(shared.path)
    yield shared
    assert _disk(shared.path) == before
    assert shared.sql("SELECT count(*) FROM samples").fetchall() == [(100,)]  # the cached connections too


# -- reading the host ------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM query('SELECT * FROM read_text(''/etc/hostname'')')",
    "SELECT * FROM query_table('/etc/passwd')",
    "SELECT * FROM sql_auto_complete('SEL')",  # would install and load the autocomplete extension
    "SELECT getenv('HOME')",
    "SELECT * FROM duckdb_extensions()",  # lists the extension directory
], ids=["read_csv", "file_path", "read_text", "read_blob", "glob", "query", "query_table",
        "sql_auto_complete", "getenv", "duckdb_extensions"])
def test_the_host_cannot_be_read(guarded, query):
    with pytest.raises(memstore.SQLError) as info:
        guarded.sql(query)
    assert "Query: " + query in str(info.value)


def test_the_data_files_of_the_memory_cannot_be_read(guarded):
    data = next(p for p in guarded.path.rglob("*.lance") if p.is_file())
    with pytest.raises(memstore.SQLError, match="reads no files"):
        guarded.sql(f"SELECT * FROM read_blob('{data}')")


# -- writing the host, or the memory's connection ---------------------------------------------------------

@pytest.mark.parametrize("statement", [
    "COPY (SELECT 1 AS x) TO '{out}'",
    "EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{out}'",
    "EXPLAIN (ANALYZE, FORMAT json) COPY (SELECT 1 AS x) TO '{out}'",
    "/* hi */ EXPLAIN -- there\n ANALYZE /* again */ COPY (SELECT 1 AS x) TO '{out}'",
    "WITH t AS (COPY (SELECT 1 AS x) TO '{out}') SELECT 1",
    "EXPLAIN ANALYZE WITH t AS (COPY (SELECT 1 AS x) TO '{out}') SELECT 1",
    "ATTACH '{out}' AS x",
    "EXPORT DATABASE '{out}'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "LOAD '{out}'",
    "CALL enable_logging(storage_path='{out}')",
], ids=["copy", "explain_analyze_copy", "explain_options_copy", "explain_comments_copy", "cte_copy",
        "explain_cte_copy", "attach", "export", "install", "load", "load_file", "call"])
def test_nothing_is_written_to_the_host(guarded, tmp_path, statement):
    out = tmp_path / "out.file"
    with pytest.raises(memstore.ReadOnlyError, match="read-only and refused"):
        guarded.sql(statement.format(out=out))
    assert not out.exists()


def test_a_data_file_of_the_memory_cannot_be_overwritten(guarded):
    data = next(p for p in guarded.path.rglob("*.lance") if p.is_file())
    with pytest.raises(memstore.ReadOnlyError, match="refused a COPY statement inside EXPLAIN"):
        guarded.sql(f"EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{data}' (FORMAT csv)")


def test_the_sandbox_connection_itself_writes_no_file(tmp_path):
    """Behind the statement check: the connection refuses COPY and ATTACH itself."""
    con = sandbox("1GB")
    for statement in (f"COPY (SELECT 1) TO '{tmp_path / 'a.csv'}'", f"ATTACH '{tmp_path / 'b.db'}' AS b"):
        with pytest.raises(duckdb.PermissionException):
            con.execute(statement)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("statement", [
    "EXPLAIN ANALYZE CREATE TABLE t AS SELECT * FROM samples",
    "EXPLAIN ANALYZE INSERT INTO samples SELECT * FROM samples",
    "EXPLAIN ANALYZE DELETE FROM samples",
    "EXPLAIN CREATE TABLE t AS SELECT 1",
    "WITH t AS (DELETE FROM samples RETURNING *) SELECT * FROM t",
    "SELECT * FROM (WITH t AS (INSERT INTO samples SELECT * FROM samples RETURNING *) FROM t)",
    "CREATE MACRO m() AS 1",
    "SET VARIABLE x = 1",
], ids=["explain_create", "explain_insert", "explain_delete", "explain_plain", "cte_delete", "nested_cte_insert",
        "macro", "variable"])
def test_no_statement_changes_the_catalog(guarded, statement):
    with pytest.raises(memstore.ReadOnlyError, match="read-only and refused"):
        guarded.sql(statement)
    with pytest.raises(memstore.SQLError, match="does not exist"):
        guarded.sql("SELECT * FROM t")


def test_explain_analyze_cannot_redefine_samples_for_a_later_prune(guarded):
    for statement in ("EXPLAIN ANALYZE CREATE OR REPLACE VIEW samples AS SELECT 0 AS id",
                      "SELECT * FROM query('CREATE OR REPLACE VIEW samples AS SELECT 0 AS id')"):
        with pytest.raises(memstore.MemstoreError):
            guarded.sql(statement)
    assert guarded.sql("SELECT count(*) FROM samples").fetchall() == [(100,)]


def test_the_returned_relation_cannot_reach_the_sandbox(filled):
    rel = filled.sql("SELECT 0 AS id")
    rel.create_view("samples")  # on the results database, not the memory's connection
    assert filled.sql("SELECT count(*) FROM samples").fetchall() == [(100,)]
    assert filled.prune("SELECT id FROM samples WHERE id < 3").rows == 3
    with pytest.raises(duckdb.Error):  # the results database is sandboxed too
        rel.query("r", "SELECT * FROM read_csv('/etc/passwd')").fetchall()


# -- settings ----------------------------------------------------------------------------------------------

IN_FORCE = {  # what memstore.sql.SANDBOX_SETTINGS must hold, written out so that a setting dropped there fails
    "enable_external_access": False, "autoload_known_extensions": False, "autoinstall_known_extensions": False,
    "allow_community_extensions": False, "allow_unsigned_extensions": False,
    "allow_extension_repositories": "forbidden", "allow_persistent_secrets": False,
    "python_enable_replacements": False, "python_scan_all_frames": False, "temp_directory": "",
    "enable_progress_bar": False, "lock_configuration": True,
}


def test_the_sandbox_settings_are_in_force(guarded):
    for name, value in IN_FORCE.items():
        assert guarded.sql(f"SELECT current_setting('{name}')").fetchall() == [(value,)], name
    limited = memstore.open(guarded.path, sql_memory_limit="123MB")
    assert limited.sql("SELECT current_setting('memory_limit')").fetchall() == [("117.3 MiB",)]


UNSAFE = {  # a value that would undo each locked setting
    "enable_external_access": "true", "autoload_known_extensions": "true", "autoinstall_known_extensions": "true",
    "allow_community_extensions": "true", "allow_unsigned_extensions": "true",
    "allow_extension_repositories": "'allowed'", "allow_persistent_secrets": "true",
    "python_enable_replacements": "true", "temp_directory": "'/tmp'", "memory_limit": "'1TB'",
    "lock_configuration": "false", "disabled_filesystems": "''", "max_execution_time": "0",
}


@pytest.mark.parametrize("name", sorted(UNSAFE))
def test_locked_settings_cannot_be_set_or_reset(guarded, name):
    value = UNSAFE[name]
    statements = [f"SET {name} = {value}", f"SET GLOBAL {name} = {value}", f"RESET {name}",
                  f"PRAGMA {name} = {value}", f"CALL {name}({value})"]
    before = guarded.sql(f"SELECT current_setting('{name}')").fetchall()
    for statement in statements:
        with pytest.raises(memstore.ReadOnlyError, match="read-only and refused"):
            guarded.sql(statement)
    assert guarded.sql(f"SELECT current_setting('{name}')").fetchall() == before
    con = sandbox("1GB")  # and were the statement let through, the connection's lock holds
    for statement in statements[:3]:
        with pytest.raises(duckdb.Error, match="configuration has been locked"):
            con.execute(statement)


@pytest.mark.parametrize("statement", ["PRAGMA enable_profiling", "PRAGMA memory_limit = '1TB'",
                                       "CALL pragma_version()", "RESET memory_limit", "USE system"])
def test_pragma_call_reset_and_use_are_refused(guarded, statement):
    with pytest.raises(memstore.ReadOnlyError, match="read-only and refused"):
        guarded.sql(statement)


# -- what is allowed --------------------------------------------------------------------------------------

def test_explain_of_a_select_is_allowed(guarded):
    for query in ("EXPLAIN SELECT count(*) FROM samples", "EXPLAIN ANALYZE SELECT count(*) FROM samples",
                  "EXPLAIN (FORMAT json) SELECT label FROM samples", "-- why\nEXPLAIN ANALYZE FROM samples"):
        assert guarded.sql(query).columns == ["explain_key", "explain_value"], query
    with pytest.raises(memstore.SQLError, match="does not exist"):
        guarded.sql("EXPLAIN SELECT * FROM nope")


def test_the_callers_tables_join_and_do_not_leak(filled):
    notes = pa.table({"id": [3, 1], "note": ["three", "one"]})
    got = filled.sql("SELECT e.id, e.note, s.label FROM e JOIN samples s USING (id) ORDER BY id", e=notes)
    assert got.fetchall() == [(1, "one", "b"), (3, "three", "d")]
    for query in ("SELECT e.id FROM e", "SELECT * FROM e"):  # on either connection (state only; with data)
        with pytest.raises(memstore.SQLError, match="e does not exist"):
            filled.sql(query)
    with pytest.raises(memstore.SQLError):  # a failing query unregisters them too
        filled.sql("SELECT f.nope FROM f", f=notes)
    with pytest.raises(memstore.SQLError, match="f does not exist"):
        filled.sql("SELECT f.id FROM f")
    assert filled.prune("SELECT id FROM e", tables={"e": notes}).rows == 2


def test_the_result_is_a_relation(guarded):
    rel = guarded.sql("SELECT id, label FROM samples WHERE id < 3 ORDER BY id")
    assert rel.columns == ["id", "label"]
    assert rel.fetchall() == [(0, "a"), (1, "b"), (2, "c")]
    assert rel.fetchnumpy()["id"].tolist() == [0, 1, 2]
    reader = rel.arrow()  # a half-read result blocks neither this relation's next call nor other queries
    assert guarded.sql("SELECT count(*) FROM samples").fetchall() == [(100,)]
    assert reader.read_all().num_rows == 3 and rel.to_arrow_table().num_rows == 3


# -- errors ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query, says", [
    ("SELEC 1", "syntax error"),
    ("SELECT nope FROM samples", 'column "nope" not found'),
    ("SELECT * FROM nope", "nope does not exist"),
    ("SELECT CAST('x' AS INTEGER)", "Conversion Error"),
    ("SELECT error('boom')", "boom"),
])
def test_duckdb_errors_become_sql_errors(guarded, query, says):
    with pytest.raises(memstore.SQLError, match=says) as info:
        guarded.sql(query)
    assert isinstance(info.value, ValueError) and not isinstance(info.value, duckdb.Error)
    assert str(info.value).endswith("Query: " + query) and "\n" not in str(info.value)
    with pytest.raises(memstore.SQLError, match=says):  # the SELECT of a write too
        guarded.prune(query)
    assert guarded.version == 1


# -- limits ---------------------------------------------------------------------------------------------

def test_a_query_past_the_timeout_is_stopped(guarded):
    mem = memstore.open(guarded.path, sql_timeout=0.2)
    start = time.perf_counter()
    with pytest.raises(memstore.QueryLimitError, match=r"sql_timeout=0.2s .*memstore sql --timeout"):
        mem.sql(SLOW)
    assert time.perf_counter() - start < 5
    assert mem.sql("SELECT count(*) FROM samples").fetchall() == [(100,)]  # the connection still works
    with pytest.raises(memstore.QueryLimitError):  # prune's SELECT is bounded too
        mem.prune(f"SELECT id FROM samples WHERE id IN ({SLOW})")
    assert mem.version == 1


def test_a_query_past_the_memory_limit_is_stopped(guarded):
    mem = memstore.open(guarded.path, sql_memory_limit="10MB")
    with pytest.raises(memstore.QueryLimitError, match=r"sql_memory_limit='10MB' .*--memory-limit"):
        mem.sql(BIG)
    assert mem.sql("SELECT count(*) FROM samples").fetchall() == [(100,)]
    assert memstore.open(guarded.path).sql(BIG).fetchall() == [(1000000,)]  # the default allows it


def test_bad_limits_are_named(guarded):
    with pytest.raises(memstore.InvalidInputError, match="sql_timeout"):
        memstore.open(guarded.path, sql_timeout=0)
    with pytest.raises(memstore.InvalidInputError, match="sql_memory_limit='lots'"):
        memstore.open(guarded.path, sql_memory_limit="lots").sql("SELECT 1")


# -- the CLI -------------------------------------------------------------------------------------------

from test_cli import _one_line_error  # noqa: E402  (the CLI's one-line error check)


@pytest.mark.parametrize("query, says", [
    ("SELECT * FROM read_csv('/etc/passwd')", "reads no files"),
    ("EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1", "refused a CREATE statement inside EXPLAIN"),
    ("SELEC 1", "syntax error"),
])
def test_cli_sql_errors_are_one_line(guarded, query, says):
    _one_line_error(CliRunner().invoke(main, ["sql", str(guarded.path), query]), says)


def test_cli_sql_limits(guarded):
    runner = CliRunner()
    _one_line_error(runner.invoke(main, ["sql", str(guarded.path), SLOW, "--timeout", "0.2"]), "sql_timeout=0.2s")
    _one_line_error(runner.invoke(main, ["sql", str(guarded.path), BIG, "--memory-limit", "10MB"]),
                    "sql_memory_limit='10MB'")
    ok = runner.invoke(main, ["sql", str(guarded.path), "SELECT count(*) AS n FROM samples", "--timeout", "5",
                              "--memory-limit", "100MB", "--format", "csv"])
    assert ok.exit_code == 0 and ok.output.splitlines() == ["n", "100"], ok.output
