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
    with unchanged._store.lock():  # another writer holds the lock
        with pytest.raises(memstore.LockedError, match="another process"):
            unchanged.add(rng.standard_normal((1, 8)), ["a"])
        with pytest.raises(BlockingIOError):
            unchanged.prune("SELECT id FROM samples WHERE id = 0")
