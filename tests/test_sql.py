"""mem.sql: read-only DuckDB over one version."""

import pytest

import memstore


def test_relation_methods(filled):
    rel = filled.sql("SELECT label, count(*) AS n FROM samples GROUP BY label ORDER BY label")
    assert rel.fetchall() == [("a", 25), ("b", 25), ("c", 25), ("d", 25)]
    assert rel.to_arrow_table().column_names == ["label", "n"]
    assert rel.arrow().read_all().num_rows == 4  # duckdb 2.0: a RecordBatchReader
    pd = pytest.importorskip("pandas")
    assert isinstance(rel.df(), pd.DataFrame)


def test_narrow_and_full_views_agree(filled):
    """The join-free path (state only) and the joined path give the same rows."""
    filled.reweight("SELECT id, (id % 5) / 4.0 AS weight FROM samples")
    narrow = filled.sql("SELECT label, count(*), sum(weight) FROM samples GROUP BY 1 ORDER BY 1").fetchall()
    full = filled.sql("SELECT label, count(*), sum(weight) FROM samples WHERE uri IS NOT NULL "
                      "GROUP BY 1 ORDER BY 1").fetchall()
    assert narrow == full
    star = filled.sql("SELECT * FROM samples ORDER BY id LIMIT 1").to_arrow_table()
    assert star.column_names[:5] == ["id", "label", "weight", "wrong_count", "uri"] and "vector" in star.column_names


def test_taxonomy_audit_and_tags_tables(filled):
    filled.tag("v1")
    assert filled.sql("SELECT count(*) FROM taxonomy").fetchall()[0] == (0,)
    assert filled.sql("SELECT operation FROM audit ORDER BY version").fetchall() == [("init",), ("add",)]
    assert filled.sql("SELECT name, version FROM tags").fetchall() == [("v1", 1)]
    assert "lance_versions" not in filled.sql("SELECT * FROM audit").columns


def test_a_query_reads_only_the_tables_it_names(filled, monkeypatch):
    """A count over samples must not read the commit log (100,000 rows for an old memory)."""
    from memstore.snapshot import Snapshot

    def no_audit(self, columns=None):
        raise AssertionError("the audit table was read")

    mem = memstore.open(filled.path)
    with monkeypatch.context() as patch:
        patch.setattr(Snapshot, "read_audit", no_audit)
        patch.setattr(Snapshot, "tags", lambda self: no_audit(self))
        assert mem.sql("SELECT count(*) FROM samples").fetchall() == [(100,)]
        assert mem.sql("SELECT count(*) FROM samples WHERE uri IS NOT NULL").fetchall() == [(100,)]
        assert mem.sql("SELECT count(*) FROM taxonomy").fetchall() == [(0,)]
    # then named, in a CTE, a subquery, a table function or as _state: each is there
    assert mem.sql("WITH a AS (SELECT * FROM Audit) SELECT count(*) FROM a").fetchall() == [(2,)]
    assert mem.sql("SELECT count(*) FROM samples WHERE weight IN (SELECT 1.0 FROM tags)").fetchall() == [(0,)]
    assert mem.sql("SELECT count(*) FROM query_table('audit')").fetchall() == [(2,)]
    assert memstore.open(filled.path).sql("SELECT count(*) FROM _state").fetchall() == [(100,)]
    assert memstore.open(filled.path).sql("SELECT count(*) FROM query_table('samples')").fetchall() == [(100,)]


def test_join_with_audit(filled):
    filled.prune("SELECT id FROM samples WHERE id < 3", message="bad rows")
    got = filled.sql("SELECT a.message, count(*) FROM samples s, audit a "
                     "WHERE a.operation = 'prune' GROUP BY 1").fetchall()
    assert got == [("bad rows", 97)]


@pytest.mark.parametrize("statement", [
    "UPDATE samples SET weight = 0",
    "DELETE FROM samples",
    "CREATE TABLE t AS SELECT * FROM samples",
    "INSERT INTO samples SELECT * FROM samples",
    "DROP VIEW samples",
    "COPY (SELECT * FROM samples) TO '/tmp/x.csv'",
    "SELECT 1; SELECT 2",
])
def test_writes_are_refused_with_a_pointer_to_prune_and_reweight(filled, statement):
    with pytest.raises(memstore.ReadOnlyError, match="prune|exactly one"):
        filled.sql(statement)
    assert len(filled) == 100 and filled.version == 1


def test_sql_at_a_pinned_version_sees_its_audit_only(filled):
    filled.prune("SELECT id FROM samples WHERE id = 0")
    assert filled.at(1).sql("SELECT max(version) FROM audit").fetchall()[0] == (1,)
