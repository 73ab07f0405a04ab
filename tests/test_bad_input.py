"""Every bad input raises a MemstoreError that is also the matching built-in,
names the value and the fix, and leaves the memory at its previous version."""

import numpy as np
import pyarrow as pa
import pytest

import memstore
from memstore import errors


@pytest.fixture
def unchanged(filled):
    """Yields the memory; afterwards checks that nothing changed on disk."""
    before = (filled.version, filled.sql("SELECT id, label, weight FROM samples ORDER BY id").fetchall())
    yield filled
    reopened = memstore.open(filled.path)
    after = (reopened.version, reopened.sql("SELECT id, label, weight FROM samples ORDER BY id").fetchall())
    assert after == before


def test_error_tree():
    assert issubclass(errors.InvalidInputError, ValueError)
    assert issubclass(errors.DimensionMismatchError, errors.InvalidInputError)
    assert issubclass(errors.UnknownIdsError, LookupError)
    assert issubclass(errors.ReadOnlyError, PermissionError)
    assert issubclass(errors.NotAMemoryError, FileExistsError)
    assert issubclass(errors.SchemaVersionError, RuntimeError)
    for name in ("InvalidInputError", "UnknownIdsError", "ReadOnlyError", "NotAMemoryError"):
        assert issubclass(getattr(errors, name), memstore.MemstoreError)


def test_wrong_dimension(unchanged, rng):
    with pytest.raises(memstore.DimensionMismatchError, match=r"dimension 9 .* 8-d"):
        unchanged.add(rng.standard_normal((2, 9)), ["a", "b"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_vectors(unchanged, rng, bad):
    x = rng.standard_normal((5, 8)).astype(np.float32)
    x[3, 2] = bad
    with pytest.raises(ValueError, match=r"NaN or inf.*\[3\]"):
        unchanged.add(x, ["a"] * 5)


def test_empty_batch(unchanged):
    with pytest.raises(memstore.InvalidInputError, match="empty batch"):
        unchanged.add(np.zeros((0, 8), np.float32), [])


def test_mismatched_lengths(unchanged, rng):
    with pytest.raises(ValueError, match="3 vectors but 2 labels"):
        unchanged.add(rng.standard_normal((3, 8)), ["a", "b"])
    with pytest.raises(ValueError, match="weights of shape"):
        unchanged.add(rng.standard_normal((3, 8)), ["a"] * 3, weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="'uri' has 1 values for 3"):
        unchanged.add(rng.standard_normal((3, 8)), ["a"] * 3, provenance={"uri": ["x"]})


def test_labels_of_the_wrong_type(unchanged, rng):
    with pytest.raises(ValueError, match="class names"):
        unchanged.add(rng.standard_normal((2, 8)), [1, 2])
    with pytest.raises(ValueError, match="null"):
        unchanged.add(rng.standard_normal((2, 8)), pa.array(["a", None]))


@pytest.mark.parametrize("w", [-0.1, np.nan, np.inf])
def test_weights_outside_zero_to_inf(unchanged, rng, w):
    with pytest.raises(ValueError, match="finite and >= 0"):
        unchanged.add(rng.standard_normal((2, 8)), ["a", "b"], weights=[1.0, w])
    with pytest.raises(ValueError, match="finite and >= 0"):
        unchanged.reweight(f"SELECT id, {w if np.isfinite(w) else repr(str(w))}::DOUBLE AS weight "
                           "FROM samples WHERE id = 1")


def test_reserved_provenance_column(unchanged, rng):
    with pytest.raises(ValueError, match="'added_at' is set by memstore"):
        unchanged.add(rng.standard_normal((1, 8)), ["a"], provenance={"added_at": "2020"})


def test_unknown_ids_in_prune_and_reweight(unchanged):
    with pytest.raises(memstore.UnknownIdsError, match=r"1 id\(s\).*\[12345\]"):
        unchanged.prune("SELECT 12345 AS id UNION ALL SELECT 1")
    with pytest.raises(LookupError):
        unchanged.reweight(pa.table({"id": [5, 999], "weight": [1.0, 1.0]}))


def test_pruned_ids_are_unknown_afterwards(filled):
    filled.prune("SELECT id FROM samples WHERE id = 7")
    with pytest.raises(memstore.UnknownIdsError):
        filled.reweight("SELECT 7 AS id, 0.5 AS weight")


@pytest.mark.parametrize("method,query", [
    ("prune", "SELECT id, label FROM samples"),
    ("prune", "SELECT label FROM samples"),
    ("reweight", "SELECT id FROM samples"),
    ("reweight", "SELECT id, weight, label FROM samples"),
    ("relabel", "SELECT label, id FROM samples"),
])
def test_select_with_the_wrong_columns(unchanged, method, query):
    with pytest.raises(memstore.SQLResultError, match="expected columns"):
        getattr(unchanged, method)(query)


def test_select_choosing_nothing_or_duplicates(unchanged):
    with pytest.raises(ValueError, match="chose no rows"):
        unchanged.prune("SELECT id FROM samples WHERE false")
    with pytest.raises(ValueError, match="more than once"):
        unchanged.reweight("SELECT 1 AS id, 0.5 AS weight UNION ALL SELECT 1, 0.7")


def test_write_on_a_pinned_version(unchanged, rng):
    old = unchanged.at(1)
    for call in (lambda: old.add(rng.standard_normal((1, 8)), ["a"]),
                 lambda: old.prune("SELECT id FROM samples"),
                 lambda: old.reweight("SELECT id, 1.0 AS weight FROM samples"),
                 lambda: old.restore(0),
                 lambda: old.tag("x")):
        with pytest.raises(memstore.ReadOnlyError, match="pinned to version 1"):
            call()


def test_unknown_version_or_tag(filled):
    with pytest.raises(memstore.VersionNotFoundError, match="versions 0..1"):
        filled.at(7)
    with pytest.raises(LookupError, match="no tag named 'nope'"):
        filled.restore("nope")


def test_path_that_is_not_a_memory(tmp_path):
    (tmp_path / "file.txt").write_text("hello")
    with pytest.raises(memstore.NotAMemoryError, match="is a file"):
        memstore.open(tmp_path / "file.txt")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "notes.md").write_text("mine")
    with pytest.raises(FileExistsError, match="not a memory"):
        memstore.open(tmp_path / "dir")
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["notes.md"]


def test_an_error_midway_rolls_back_lance_commits(filled, rng, monkeypatch):
    """A failure after the data table was written leaves no trace once reopened."""
    from memstore import versioning

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(versioning.Transaction, "commit", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        filled.add(rng.standard_normal((5, 8)), ["a"] * 5)
    monkeypatch.undo()
    again = memstore.open(filled.path)
    assert again.version == 1 and len(again) == 100
    assert again.sql("SELECT count(*) FROM _data").fetchall()[0][0] == 100
    assert again.add(rng.standard_normal((1, 8)), ["a"]).ids.tolist() == [100]


def test_a_second_writer_waits_then_gives_up(unchanged, rng, monkeypatch):
    from memstore import versioning

    monkeypatch.setattr(versioning, "LOCK_TIMEOUT", 0.2)
    from memstore.versioning import Store

    with Store(unchanged.path).lock():  # another writer (its own Store, as another process) holds it
        with pytest.raises(memstore.LockedError, match="another process"):
            unchanged.add(rng.standard_normal((1, 8)), ["a"])
        with pytest.raises(BlockingIOError):
            unchanged.prune("SELECT id FROM samples WHERE id = 0")


# -- issue 13, defect 7: bad values that passed silently, raw errors instead of memstore's ----------

@pytest.mark.parametrize("w", [1e39, 3.5e38, np.finfo(np.float64).max])
def test_weights_beyond_float32_are_refused(unchanged, rng, w):
    """float32 holds weights up to 3.4e38: larger ones would be stored as inf (and predictions NaN)."""
    with pytest.raises(memstore.InvalidInputError, match=r"float32.*\[1\]") as info:
        unchanged.add(rng.standard_normal((2, 8)), ["a", "b"], weights=np.array([1.0, w]))
    assert f"{w:g}" in str(info.value)
    with pytest.raises(memstore.InvalidInputError, match="float32") as info:
        unchanged.reweight(f"SELECT id, {float(w)!r}::DOUBLE AS weight FROM samples WHERE id = 1")
    assert f"{w:g}" in str(info.value)


def test_float32_max_itself_is_a_weight(filled, rng):
    big = float(np.finfo(np.float32).max)
    filled.add(rng.standard_normal((1, 8)), ["a"], weights=[big])
    filled.reweight(f"SELECT id, {big!r}::DOUBLE AS weight FROM samples WHERE id = 1")
    assert filled.sql("SELECT weight FROM samples WHERE id IN (1, 100)").fetchall() == [(big,), (big,)]


@pytest.mark.parametrize("name", ["ID", "Vector", "Label", "URI", "Weight", "Added_At", "VALID_FROM",
                                  "Content_Hash", "Wrong_Count", "Added_In"])
def test_case_variants_of_reserved_columns_are_refused(unchanged, rng, name):
    """DuckDB names are case-insensitive: 'URI' would be stored but unreachable next to 'uri'."""
    with pytest.raises(memstore.InvalidInputError, match=rf"{name!r}.*{name.lower()!r}.*case"):
        unchanged.add(rng.standard_normal((1, 8)), ["a"], provenance={name: ["x"]})
    table = pa.table({"vector": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(8, np.float32)), 8),
                      "label": ["a"], name: ["x"]})
    with pytest.raises(memstore.InvalidInputError, match=rf"{name!r}"):
        unchanged.add(table)


def test_columns_differing_only_by_case_are_refused(unchanged, rng):
    with pytest.raises(memstore.InvalidInputError, match=r"'source'.*'Source'.*case"):
        unchanged.add(rng.standard_normal((1, 8)), ["a"], provenance={"source": ["x"], "Source": ["y"]})


def test_a_column_in_another_case_than_the_memorys_is_ingest_refused(rng):
    from memstore import ingest

    with pytest.raises(memstore.InvalidInputError, match=r"'Source'.*'source'.*case"):
        ingest.prepare(rng.standard_normal((1, 8)), ["a"], {"Source": ["x"]}, existing=["uri", "source"])
    assert list(ingest.prepare(rng.standard_normal((1, 8)), ["a"], {"source": ["x"]},
                               existing=["source"]).extras) == ["source"]


def test_a_column_in_another_case_than_the_memorys_is_refused(filled, rng):
    filled.add(rng.standard_normal((1, 8)), ["a"], provenance={"source": ["x"]})
    version = filled.version
    with pytest.raises(memstore.InvalidInputError, match=r"'Source'.*'source'.*case"):
        filled.add(rng.standard_normal((1, 8)), ["a"], provenance={"Source": ["y"]})
    assert memstore.open(filled.path).version == version


def test_a_nul_inside_a_label_is_kept(filled, rng):
    """numpy's U dtype cut 'a\\x00b' to 'a': labels are converted by pyarrow, keeping every character."""
    ids = filled.add(rng.standard_normal((2, 8)), ["a\x00b", "c"]).ids
    assert filled.sql(f"SELECT label FROM samples WHERE id >= {ids[0]} ORDER BY id").fetchall() == [
        ("a\x00b",), ("c",)]
    ids = filled.add(rng.standard_normal((2, 8)), np.array(["d\x00e", "f"])).ids
    assert filled.sql(f"SELECT label FROM samples WHERE id >= {ids[0]} ORDER BY id").fetchall() == [
        ("d\x00e",), ("f",)]


@pytest.mark.parametrize("labels", [[1, "a"], ["a", 1], ("b", 2)])
def test_labels_mixing_ints_and_strings_are_refused(unchanged, rng, labels):
    with pytest.raises(memstore.InvalidInputError, match="labels mix integers and strings"):
        unchanged.add(rng.standard_normal((2, 8)), labels)


def test_labels_mixing_ints_and_strings_are_refused_in_a_new_memory(mem, rng):
    with pytest.raises(memstore.InvalidInputError, match=r"labels mix integers and strings.*1.*'a'"):
        mem.add(rng.standard_normal((2, 8)), [1, "a"])
    assert mem.version == 0 and memstore.open(mem.path).dim is None


def test_pandas_missing_values_in_provenance_become_nulls(filled, rng):
    pd = pytest.importorskip("pandas")
    ids = filled.add(rng.standard_normal((2, 8)), ["a", "b"], provenance={
        "uri": pd.Series(["x.png", float("nan")]), "score": pd.Series([0.5, np.nan]),
        "source": pd.Series(["web", None])}).ids
    assert filled.sql(f"SELECT uri, score, source FROM samples WHERE id >= {ids[0]} ORDER BY id").fetchall() \
        == [("x.png", 0.5, "web"), (None, None, None)]


@pytest.mark.parametrize("column", ["uri", "source"])
def test_a_provenance_column_arrow_cannot_convert_is_refused(unchanged, rng, column):
    with pytest.raises(memstore.InvalidInputError, match=rf"provenance column {column!r}"):
        unchanged.add(rng.standard_normal((2, 8)), ["a", "b"], provenance={column: ["x", {"a": 1}]})


@pytest.mark.parametrize("dtype", [np.uint64, np.uint32, np.int32, np.int16])
def test_ids_of_any_integer_type(filled, dtype):
    assert filled.prune(np.array([1, 2], dtype)).rows == 2
    assert filled.reweight(pa.table({"id": pa.array([3], pa.from_numpy_dtype(dtype)),
                                     "weight": [0.5]})).rows == 1
    assert 1 not in filled.samples.ids and filled.sql("SELECT weight FROM samples WHERE id = 3").fetchall() == [
        (0.5,)]


def test_ubigint_ids_from_sql(filled):
    assert filled.prune("SELECT id::UBIGINT AS id FROM samples WHERE id < 2").rows == 2
    assert filled.reweight("SELECT id::UBIGINT AS id, 0.5 AS weight FROM samples WHERE id = 3").rows == 1
    assert filled.relabel("SELECT id::UINTEGER AS id, 'z' AS label FROM samples WHERE id = 4").rows == 1
    assert filled.sql("SELECT id, label, weight FROM samples WHERE id IN (3, 4) ORDER BY id").fetchall() == [
        (3, "d", 0.5), (4, "z", 1.0)]


def test_ids_beyond_int64_are_unknown(unchanged):
    big = 2**64 - 1
    with pytest.raises(memstore.UnknownIdsError, match=str(big)):
        unchanged.prune(np.array([1, big], np.uint64))
    with pytest.raises(memstore.UnknownIdsError, match=str(2**63)):
        unchanged.prune(f"SELECT {2**63}::UBIGINT AS id UNION ALL SELECT 1::UBIGINT")
    with pytest.raises(memstore.UnknownIdsError, match=str(big)):
        unchanged.reweight(f"SELECT {big}::UBIGINT AS id, 0.5 AS weight")
    with pytest.raises(memstore.UnknownIdsError, match=str(2**70)):
        unchanged.prune([1, 2**70])


@pytest.mark.parametrize("ids", [np.array([1.0]), [1.5, 2.0], np.array(["1"]), np.array([True])])
def test_ids_that_are_not_integers_are_refused(unchanged, ids):
    with pytest.raises(memstore.InvalidInputError, match=r"ids must be integers.*astype"):
        unchanged.prune(ids)


def test_sql_ids_that_are_not_integers_are_refused(unchanged):
    with pytest.raises(memstore.SQLResultError, match=r"ids must be integers.*decimal.*1\.0.*CAST"):
        unchanged.prune("SELECT 1.0 AS id")
    with pytest.raises(memstore.SQLResultError, match=r"ids must be integers.*double"):
        unchanged.reweight("SELECT 1.0::DOUBLE AS id, 0.5 AS weight")


def test_weights_that_are_not_numbers_are_refused(unchanged):
    with pytest.raises(memstore.SQLResultError, match=r"weights must be numbers, got string"):
        unchanged.reweight("SELECT id, 'x' AS weight FROM samples WHERE id = 1")


def test_weights_that_are_not_numbers_are_refused_by_add(unchanged, rng):
    version = unchanged.version
    with pytest.raises(memstore.InvalidInputError, match="weights must be numbers"):
        unchanged.add(rng.standard_normal((2, 8)), ["a", "b"], weights=["heavy", "light"])
    assert memstore.open(unchanged.path).version == version
