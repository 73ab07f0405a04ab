"""A small write costs what it touches: state rows found through an id index, only theirs read."""

import numpy as np
import pyarrow as pa
import pytest

import memstore
from memstore import intervals
from memstore import optimize as optimize_module
from memstore.check import indices_of
from memstore.schema import DATA_TABLE, STATE_TABLE
from memstore.snapshot import Snapshot
from test_optimize import every_version


def id_index(mem, name):
    dataset = mem._store.dataset(name)
    index = [i for i in indices_of(dataset) if i["name"] == optimize_module.ID_INDEX_NAME]
    return dataset, (index[0] if index else None)


def unindexed_rows(mem, name) -> int:
    dataset, index = id_index(mem, name)
    return sum(f.metadata.physical_rows for f in dataset.get_fragments() if f.fragment_id not in index["fragment_ids"])


def weights(ids, value):
    return pa.table({"id": pa.array(ids, pa.int64()), "weight": pa.array([value] * len(ids), pa.float32())})


@pytest.fixture
def small_index(monkeypatch):
    monkeypatch.setattr(optimize_module, "ID_INDEX_ROWS", 64)


def test_sample_tables_get_an_id_index_once_large_and_keep_it_up(mem, rng, small_index):
    mem.add(rng.standard_normal((40, 8)).astype(np.float32), ["a"] * 40)
    assert id_index(mem, STATE_TABLE)[1] is None  # small: a scan is as fast
    mem.add(rng.standard_normal((40, 8)).astype(np.float32), ["b"] * 40)
    dataset, index = id_index(mem, STATE_TABLE)
    assert index is not None and index["fields"] == ["id"] and index["type"] == "BTree"
    assert "ScalarIndexQuery" in dataset.scanner(filter="id IN (3, 5)").explain_plan()
    # not the data table: a forget compacts it, and a BTREE's remap costs the whole table
    assert id_index(mem, DATA_TABLE)[1] is None
    for _ in range(8):  # 80 appended rows: past the threshold, folded into the index
        mem.add(rng.standard_normal((10, 8)).astype(np.float32), ["c"] * 10)
        assert unindexed_rows(mem, STATE_TABLE) < 64
    report = mem.check()  # the index files are checksummed like every other file
    assert not report.problems and report.unrecorded == 0


def test_a_small_write_reads_only_the_state_of_its_rows(mem, rng, monkeypatch):
    mem.add(rng.standard_normal((100, 8)).astype(np.float32), np.arange(100) % 3)
    before = mem.sql("SELECT id, label, weight FROM samples ORDER BY id").fetchall()

    def every_row(self):
        raise AssertionError("a write of a few rows read the state of every row")

    monkeypatch.setattr(Snapshot, "state", property(every_row))
    mem.reweight(weights([4, 7, 9], 0.25))
    mem.relabel(pa.table({"id": pa.array([1, 2], pa.int64()), "label": pa.array([2, 2], pa.int64())}))
    assert len(mem) == 100
    monkeypatch.undo()
    after = dict((i, (label, w)) for i, label, w in mem.sql("SELECT id, label, weight FROM samples").fetchall())
    for i, label, w in before:
        expected = (2 if i in (1, 2) else label, 0.25 if i in (4, 7, 9) else w)
        assert after[i] == expected, i


def test_small_and_large_changes_write_the_same_history(tmp_path, rng, small_index, monkeypatch):
    """A change of a few ids (indexed update + append) and of many (one merge) leave identical versions."""
    x = rng.standard_normal((120, 8)).astype(np.float32)

    def history(path, small_change):
        monkeypatch.setattr(intervals, "SMALL_CHANGE", small_change)
        mem = memstore.open(path)
        mem.add(x[:100], np.arange(100) % 4)
        mem.reweight(weights([3, 50, 99], 2.0))
        mem.tag("t")
        mem.relabel("SELECT id, 7 AS label FROM samples WHERE id % 9 = 0")
        mem.add(x[100:], [1] * 20)
        mem.prune("SELECT id FROM samples WHERE id IN (3, 104)")
        mem.reweight(weights([50, 101, 110], 0.5))
        mem.restore("t")
        mem.reweight(weights([50], 3.0))
        return mem

    small = history(tmp_path / "small.mem", 10_000)
    merged = history(tmp_path / "merged.mem", 0)
    assert every_version(small) == every_version(merged)
    assert not small.check().problems


def test_forget_finds_rows_inside_and_outside_the_id_index(mem, rng, small_index):
    x = rng.standard_normal((110, 8)).astype(np.float32)
    mem.add(x[:100], ["a"] * 100)
    mem.add(x[100:], ["b"] * 10)  # appended after the index was built: not in it yet
    assert unindexed_rows(mem, STATE_TABLE) == 10
    report = mem.forget([5, 105])
    assert report.rows == 2
    assert mem.sql("SELECT count(*) FROM samples WHERE id IN (5, 105)").fetchall() == [(0,)]
    assert len(mem) == 108 and len(mem.at(1)) == 99
    assert id_index(mem, STATE_TABLE)[1] is not None
    assert not mem.check().problems
    mem.reweight(weights([6, 106], 0.5))  # the index, remapped lazily by the forget, still finds rows
    assert mem.sql("SELECT id, weight FROM samples WHERE id IN (6, 106) ORDER BY id").fetchall() == [(6, 0.5), (106, 0.5)]
    assert not mem.check().problems


def test_a_stores_datasets_share_one_cache(mem, rng, small_index):
    """Every dataset a store opens reads through one Lance session: a write's filtered read of the
    state table then finds the id index and manifests already loaded (25 ms cold, 4 ms warm on a
    memory aged by 4,000 writes) instead of loading them again for every new Lance version."""
    mem.add(rng.standard_normal((200, 8)).astype(np.float32), ["a"] * 200)
    mem.reweight(weights([3, 5], 0.5))
    store = mem._store
    first, later = store.dataset(STATE_TABLE, 1), store.dataset(STATE_TABLE)
    assert first.session().is_same_as(later.session())
    assert first.session().is_same_as(store.dataset(DATA_TABLE).session())
    Snapshot(store, store.head(), mem.version).state_of(np.array([3, 5, 7]))
    cached = store.dataset(STATE_TABLE).session().size_bytes()
    assert cached > 0


def reuse_indexes(mem) -> list:
    return [i for i in indices_of(mem._store.dataset(STATE_TABLE)) if i["type"] == "FragmentReuse"]


def assert_index_reads_equal_scans(mem, ids):
    dataset = mem._store.dataset(STATE_TABLE)
    where = f"id IN ({', '.join(map(str, ids))})"
    order = [("id", "ascending"), ("valid_from", "ascending")]
    by_index = dataset.to_table(filter=where).sort_by(order)
    assert "ScalarIndexQuery" in dataset.scanner(filter=where).explain_plan()
    assert by_index.equals(dataset.to_table(filter=where, use_scalar_index=False).sort_by(order))
    assert by_index.num_rows >= len(ids)


@pytest.fixture
def crowded(monkeypatch, small_index):
    """Merges every few writes, an index rebuilt every few dozen rows."""
    monkeypatch.setattr(optimize_module, "AUTO_FRAGMENTS", 4)


def test_write_merges_leave_the_indexed_fragments_to_the_index_rebuild(mem, rng, crowded, monkeypatch):
    """Writes merge small state fragments often; none may leave Lance's fragment-reuse index behind
    (every later read would apply it: 37 ms against 7 for a read after 13,500 writes), nor cost a
    rebuild of the id index: a write rebuilds it only once enough rows sit outside it."""
    real = optimize_module.rebuild_id_index

    def only_when_due(store, name):
        assert unindexed_rows(mem, name) >= optimize_module.ID_INDEX_ROWS, "a merge cost a rebuild"
        real(store, name)

    monkeypatch.setattr(optimize_module, "rebuild_id_index", only_when_due)
    mem.add(rng.standard_normal((100, 8)).astype(np.float32), ["a"] * 100)
    merged = 0
    for step in range(40):
        before = len(mem._store.dataset(STATE_TABLE).get_fragments())
        if step % 2:
            mem.reweight(weights(rng.choice(len(mem), 5, replace=False).tolist(), float(step)))
        else:
            mem.add(rng.standard_normal((6, 8)).astype(np.float32), ["b"] * 6)
        merged += len(mem._store.dataset(STATE_TABLE).get_fragments()) < before
        assert reuse_indexes(mem) == [], step
        assert_index_reads_equal_scans(mem, rng.choice(len(mem), 6, replace=False).tolist())
    assert merged >= 3  # the merges did run
    assert not mem.check().problems


def test_a_forget_leaves_its_index_rebuild_to_the_next_write(mem, rng, small_index):
    """A forget's cost is what it touches: it leaves the remap of the id index to Lance's
    fragment-reuse index (a rebuild is 1.4 s at 10M state rows); the next write rebuilds it."""
    mem.add(rng.standard_normal((200, 8)).astype(np.float32), ["a"] * 200)
    mem.reweight(weights([1, 2, 3], 0.5))
    mem.forget(np.array([5, 150]))
    assert reuse_indexes(mem), "the forget rebuilt the index itself"
    assert_index_reads_equal_scans(mem, [1, 2, 3, 4, 6, 149, 151])
    mem.reweight(weights([4, 6], 0.25))
    assert reuse_indexes(mem) == []
    assert_index_reads_equal_scans(mem, [1, 2, 3, 4, 6, 149, 151])
    assert mem.sql("SELECT count(*) FROM samples WHERE id IN (5, 150)").fetchall() == [(0,)]


def test_optimize_rebuilds_the_id_index_over_the_merged_fragments(mem, rng, small_index):
    mem.add(rng.standard_normal((200, 8)).astype(np.float32), ["a"] * 200)
    for step in range(6):
        mem.reweight(weights(rng.choice(200, 30, replace=False).tolist(), float(step)))
        mem.add(rng.standard_normal((5, 8)).astype(np.float32), ["b"] * 5)
    mem.optimize()
    dataset, index = id_index(mem, STATE_TABLE)
    assert reuse_indexes(mem) == []
    assert set(index["fragment_ids"]) == {f.fragment_id for f in dataset.get_fragments()}
    assert_index_reads_equal_scans(mem, rng.choice(230, 10, replace=False).tolist())
