"""optimize() and the writes' own maintenance: fewer files, and every version reads exactly as before."""

import hashlib

import numpy as np
import pytest

import memstore
from memstore import optimize as optimize_module
from memstore.forget import find_vector_bytes
from memstore.schema import AUDIT_TABLE, CHECKSUMS_TABLE, DATA_TABLE, STATE_TABLE


def digest(mem, version) -> str:
    """SHA-256 of everything a reader sees at ``version``: rows with every column, taxonomy, tags."""
    old = mem.at(version)
    h = hashlib.sha256()
    for query in ("SELECT * EXCLUDE (added_at) FROM samples ORDER BY id", "SELECT * FROM taxonomy ORDER BY node",
                  "SELECT name, version FROM tags ORDER BY name"):
        h.update(repr(old.sql(query).fetchall()).encode())
    h.update(repr(old.versions().drop(["time"]).to_pylist()).encode())
    return h.hexdigest()


def every_version(mem) -> dict[int, str]:
    return {v: digest(mem, v) for v in range(1, mem.version + 1)}


@pytest.fixture
def history(mem, rng):
    """A memory with a history of every kind of write: 30 versions, most of them small."""
    x = rng.standard_normal((300, 8)).astype(np.float32)
    mem.add(x[:200], np.arange(200) % 4, provenance={"uri": [f"u/{i}" for i in range(200)]})
    for i in range(10):
        mem.add(x[200 + 10 * i:210 + 10 * i], [i % 4] * 10, provenance={"uri": [f"v/{i}/{j}" for j in range(10)]})
        mem.reweight(f"SELECT id, {1 + i / 10} AS weight FROM samples WHERE id % 10 = {i}")
    mem.tag("middle")
    mem.prune("SELECT id FROM samples WHERE id % 7 = 0")
    mem.relabel("SELECT id, 9 AS label FROM samples WHERE id % 5 = 1")
    mem.restore("middle")
    mem.reweight("SELECT id, 0.5 AS weight FROM samples WHERE id < 50")
    return mem


def test_optimize_keeps_every_version_tag_and_restore_exactly(history):
    before = every_version(history)
    files_before = sum(1 for p in history.path.rglob("*") if p.is_file())
    report = history.optimize(message="tidy")
    assert report.version == history.version == max(before) + 1
    assert history.versions()["operation"].to_pylist()[-1] == "optimize"
    after = every_version(memstore.open(history.path))
    assert {v: after[v] for v in before} == before
    # the new version reads like the one before it, apart from its own audit row
    assert history.sql("SELECT * EXCLUDE (added_at) FROM samples ORDER BY id").fetchall() == \
        history.at(report.version - 1).sql("SELECT * EXCLUDE (added_at) FROM samples ORDER BY id").fetchall()
    for name in (DATA_TABLE, STATE_TABLE, AUDIT_TABLE, CHECKSUMS_TABLE):
        assert report.tables[name]["fragments_after"] <= 2 < report.tables[name]["fragments_before"]
        assert report.tables[name]["lance_versions_after"] <= 2
    assert report.files_after < report.files_before == files_before
    assert report.bytes_after < report.bytes_before
    history.restore("middle")  # a tag made before the optimize still restores
    rows = "SELECT id, label, weight FROM samples ORDER BY id"
    assert history.sql(rows).fetchall() == history.at("middle").sql(rows).fetchall()
    assert history.at("middle").version == 21
    history.check()


def test_a_memory_stays_small_by_itself(mem, rng, monkeypatch):
    """With small thresholds, 41 small writes keep every table's fragments bounded, and every
    version reads exactly as in a memory that took the same writes and never merged anything."""
    x = rng.standard_normal((200, 8)).astype(np.float32)

    def live(m):
        m.add(x[:100], np.arange(100) % 3)
        for i in range(20):
            m.add(x[100 + 5 * i:105 + 5 * i], [i % 3] * 5)
            m.reweight(f"SELECT id, {1 + i} AS weight FROM samples WHERE id % 20 = {i}")

    monkeypatch.setattr(optimize_module, "AUTO_FRAGMENTS", 1 << 30)
    monkeypatch.setattr(optimize_module, "AUTO_VERSIONS", 1 << 30)
    reference = memstore.open(mem.path.parent / "reference.mem")
    live(reference)
    monkeypatch.setattr(optimize_module, "AUTO_FRAGMENTS", 4)
    monkeypatch.setattr(optimize_module, "AUTO_VERSIONS", 6)
    live(mem)
    for name in mem._store.table_names():
        assert optimize_module.fragment_count(mem._store, name) <= 5, name
    assert optimize_module.fragment_count(reference._store, DATA_TABLE) == 21  # what was avoided
    assert every_version(mem) == every_version(reference)
    mem.check()


def test_writes_merge_and_clean_up_once_a_table_passes_the_thresholds(mem, rng, monkeypatch):
    monkeypatch.setattr(optimize_module, "AUTO_FRAGMENTS", 4)
    monkeypatch.setattr(optimize_module, "AUTO_VERSIONS", 6)
    for i in range(30):
        mem.add(rng.standard_normal((3, 8)).astype(np.float32), ["a", "b", "c"])
    store = mem._store
    for name in store.table_names():
        assert optimize_module.fragment_count(store, name) <= 5, name
        assert optimize_module.lance_version_count(store, name) <= 7, name
    assert len(mem) == 90 and len(mem.at(10)) == 30
    report = mem.check()
    assert report.unrecorded == 0 and not report.problems


def test_dead_checksum_rows_are_dropped(history):
    """Checksum rows of files that cleanup removed do not pile up: one row per file the head uses."""
    from memstore.check import referenced_files

    history.optimize()
    store = history._store
    used = set()
    for name in store.table_names() - {AUDIT_TABLE, "tags", CHECKSUMS_TABLE}:
        used.update(referenced_files(store, name, store.dataset(name)))
    recorded = store.dataset(CHECKSUMS_TABLE).to_table(columns=["path"])["path"].to_pylist()
    assert set(recorded) == used and len(recorded) == len(used)


def test_a_failed_optimize_leaves_the_memory_as_it_was(history, monkeypatch):
    before = every_version(history)
    calls = []
    real = optimize_module.merge_fragments

    def fail_on_the_third(store, name, **kwargs):
        calls.append(name)
        if len(calls) == 3:
            raise OSError("the disk went away")
        return real(store, name, **kwargs)

    monkeypatch.setattr(optimize_module, "merge_fragments", fail_on_the_third)
    with pytest.raises(OSError, match="went away"):
        history.optimize()
    monkeypatch.undo()
    again = memstore.open(history.path)
    assert again.version == max(before) and every_version(again) == before
    again.optimize()
    assert {v: d for v, d in every_version(again).items() if v in before} == before


def test_forget_after_optimize_leaves_no_byte_behind(history):
    history.optimize()
    vector = history.sql("SELECT vector FROM samples WHERE id = 3").fetchall()[0][0]
    history.forget([3])
    assert not find_vector_bytes(history.path, np.array([vector], np.float32))[0]
    history.check()


def test_an_indexed_memory_keeps_its_index_through_optimize(mem, rng):
    centres = rng.standard_normal((8, 16)) * 3
    y = rng.integers(0, 8, 1200)
    x = (centres[y] + rng.standard_normal((1200, 16))).astype(np.float32)
    mem.add(x[:1000], y[:1000])
    for i in range(5):
        mem.add(x[1000 + 40 * i:1040 + 40 * i], y[1000 + 40 * i:1040 + 40 * i])
    mem.create_index("IVF_PQ", num_partitions=8, num_sub_vectors=4, target_recall=0.9)
    before = mem.search(x[:50], k=5, index="ann")["id"].to_pylist()
    mem.optimize()
    reopened = memstore.open(mem.path)
    assert reopened.index_info() is not None
    assert reopened.search(x[:50], k=5, index="ann")["id"].to_pylist() == before
    reopened.check()


def test_a_head_fitted_before_the_writes_merged_and_cleaned_up_still_answers(mem, rng, monkeypatch):
    """Routine writes now remove old Lance versions: a fitted head holding an indexed searcher on
    one of them keeps giving the same answers (the files it reads are the head's, or still used)."""
    monkeypatch.setattr(optimize_module, "AUTO_FRAGMENTS", 2)
    monkeypatch.setattr(optimize_module, "AUTO_VERSIONS", 2)
    x = rng.standard_normal((2000, 16)).astype(np.float32)
    mem.add(x, np.arange(2000) % 3)
    mem.create_index("IVF_PQ", num_partitions=8, num_sub_vectors=4, target_recall=0.8)
    clf = memstore.KNNClassifier(k=5, index="ann").fit(mem)
    before = clf.predict_proba(x[:50])
    other = memstore.open(mem.path)
    for i in range(12):
        other.add(rng.standard_normal((3, 16)).astype(np.float32), [0, 1, 2])
        other.reweight(f"SELECT id, 2.0 AS weight FROM samples WHERE id = {i}")
    assert optimize_module.lance_version_count(other._store, DATA_TABLE) <= 3  # cleanup did run
    np.testing.assert_array_equal(clf.predict_proba(x[:50]), before)
    assert mem.at(1).search(x[:3], k=1, index="ann")["id"].to_pylist() == [0, 1, 2]


def test_merges_keep_every_fragment_within_the_bound(mem, rng, monkeypatch):
    """Six adds of 400 rows, each under half the bound: merged into fragments of at most 1,000
    rows, where Lance alone bins three of them into one of 1,200."""
    monkeypatch.setattr(optimize_module, "FRAGMENT_ROWS", 1000)
    x = rng.standard_normal((2400, 8)).astype(np.float32)
    for i in range(6):
        mem.add(x[400 * i:400 * (i + 1)], "a")
    before = optimize_module.fragment_count(mem._store, DATA_TABLE)
    mem.optimize()
    rows = [f.metadata.physical_rows for f in mem._store.dataset(DATA_TABLE).get_fragments()]
    assert max(rows) <= 1000 and sum(rows) == 2400 and len(rows) < before, rows
    np.testing.assert_array_equal(mem.samples.vectors, x)


def test_a_reweighted_memory_keeps_its_state_fragments_few(mem, rng, monkeypatch):
    """Reweights replace state rows of the first, large fragment: it gains deletions but stays.

    Lance's own bound on a merge's rows gave up on every merge once that
    fragment led the first group, and the state table grew by a fragment a write.
    """
    monkeypatch.setattr(optimize_module, "FRAGMENT_ROWS", 128)
    monkeypatch.setattr(optimize_module, "AUTO_SOURCE_ROWS", 128)
    monkeypatch.setattr(optimize_module, "AUTO_FRAGMENTS", 4)
    mem.add(rng.standard_normal((100, 8)).astype(np.float32), np.arange(100) % 3)
    for i in range(30):
        mem.reweight(f"SELECT id, {1 + i / 10} AS weight FROM samples WHERE id IN ({i}, {i + 50})")
    assert optimize_module.fragment_count(mem._store, STATE_TABLE) <= 6
    assert mem.sql("SELECT weight FROM samples WHERE id = 29").fetchall() == [(pytest.approx(3.9),)]
    assert len(mem.at(1)) == 100 and not mem.check().problems
