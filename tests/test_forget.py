"""forget: rows gone from every version, tag, index and file, and the check that says so."""

import hashlib
import json
from pathlib import Path

import lance
import numpy as np
import pytest

import memstore
from memstore.errors import ForgetError, ReadOnlyError, SQLResultError, UnknownIdsError
from memstore.forget import find_vector_bytes
from memstore.schema import DATA_TABLE, STATE_TABLE


def files_holding(root: Path, vectors: np.ndarray) -> dict[int, list[str]]:
    """An independent, exhaustive check: every file, every byte offset, plain ``bytes.find``."""
    blobs = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return {i: [str(p) for p, b in blobs.items() if v.tobytes() in b]
            for i, v in enumerate(np.ascontiguousarray(vectors, np.float32))
            if any(v.tobytes() in b for b in blobs.values())}


@pytest.fixture
def history(tmp_path, rng):
    """A memory with a history: two adds, a prune, a reweight, a tag, an IVF_FLAT index.

    IVF_FLAT keeps the raw vectors in its index files, the hardest index to erase from.
    """
    mem = memstore.open(tmp_path / "h.mem")
    x = rng.standard_normal((400, 16)).astype(np.float32)
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, 400)]
    mem.add(x[:300], labels[:300], provenance={"uri": [f"u{i}" for i in range(300)]}, message="first")
    mem.tag("first")
    mem.prune(np.arange(0, 20), message="pruned early")  # v2: ids 0..19 pruned (kept in history)
    mem.add(x[300:], labels[300:], provenance={"uri": [f"u{i}" for i in range(300, 400)]})  # v3
    mem.reweight("SELECT id, 0.5 AS weight FROM samples WHERE label = 'a'")  # v4
    mem.create_index("IVF_FLAT", num_partitions=4, target_recall=0.9)  # v5
    mem.x = x
    return mem


FORGET = np.array([3, 7, 25, 31, 250, 305, 399])  # pruned before (3, 7), alive, added late


def test_forgotten_rows_leave_every_version_and_every_file(history):
    mem, x = history, history.x
    before = {v: mem.at(v).sql("SELECT id, label, weight FROM samples ORDER BY id").fetchall()
              for v in range(mem.version + 1)}
    # the check can see the bytes: before forgetting, every vector is in some file
    assert len(files_holding(mem.path, x[FORGET])) == len(FORGET)

    report = mem.forget(FORGET, message="consent withdrawn")

    assert report.rows == 7 and report.rows_alive == 5 and report.version == 6
    assert report.still_held == 0 and report.unverifiable == 0 and report.bytes_scanned > 0
    assert files_holding(mem.path, x[FORGET]) == {}
    # earlier versions: readable, the same rows as before minus the forgotten ones
    for v, rows in before.items():
        now = mem.at(v).sql("SELECT id, label, weight FROM samples ORDER BY id").fetchall()
        assert now == [r for r in rows if r[0] not in set(FORGET)]
    assert not set(FORGET) & set(mem.at("first").samples.ids)
    # Lance keeps no older version that could be checked out or restored
    for name in (DATA_TABLE, STATE_TABLE):
        assert len(lance.dataset(mem.path / "tables" / f"{name}.lance").versions()) == 1


def test_restore_cannot_bring_forgotten_rows_back(history):
    mem = history
    mem.forget(FORGET)
    mem.restore("first")
    assert len(mem) == 300 - 5  # the first add, less the five forgotten rows it held (3, 7, 25, 31, 250)
    assert not set(FORGET) & set(mem.samples.ids)
    assert not set(FORGET) & set(mem.sql("SELECT id FROM samples").to_arrow_table()["id"].to_pylist())


def test_no_index_returns_forgotten_rows(history):
    mem, x = history, history.x
    mem.forget(FORGET)
    assert mem.index_info() is not None  # the index survives, remapped
    hits = mem.search(x[FORGET], k=50, index="ann")["id"].to_numpy()
    assert not set(FORGET) & set(hits.tolist())


def test_rebuild_index_trains_it_again_without_the_rows(history):
    mem, x = history, history.x
    report = mem.forget(FORGET, rebuild_index=True)
    assert report.version == 6 and mem.version == 7 and "rebuild_index" in report.seconds
    assert mem.audit()["operation"].to_pylist()[-2:] == ["forget", "create_index"]
    hits = mem.search(x[FORGET], k=50, index="ann")["id"].to_numpy()
    assert not set(FORGET) & set(hits.tolist())
    assert files_holding(mem.path, x[FORGET]) == {}


def test_a_head_fitted_after_forget_equals_one_that_never_saw_the_rows(tmp_path, rng):
    x = rng.standard_normal((300, 16)).astype(np.float32)
    y = rng.integers(0, 4, 300)
    gone = rng.choice(300, 40, replace=False)
    kept = np.setdiff1d(np.arange(300), gone)
    a = memstore.open(tmp_path / "a.mem")
    a.add(x, y)
    a.forget(gone)
    b = memstore.open(tmp_path / "b.mem")
    b.add(x[kept], y[kept])
    q = rng.standard_normal((100, 16)).astype(np.float32)
    for voting in ("plurality", "rank"):
        ca = memstore.KNNClassifier(k=15, voting=voting).fit(a)
        cb = memstore.KNNClassifier(k=15, voting=voting).fit(b)
        np.testing.assert_array_equal(ca.predict(q), cb.predict(q))
        np.testing.assert_array_equal(ca.predict_proba(q), cb.predict_proba(q))


def test_audit_keeps_count_time_reason_and_hashes_not_data(history):
    mem, x = history, history.x
    mem.forget("SELECT id FROM samples WHERE id IN (25, 31)", message="GDPR request 17")
    row = mem.audit().to_pylist()[-1]
    assert row["operation"] == "forget" and row["rows_affected"] == 2 and row["message"] == "GDPR request 17"
    assert row["sql"] == "SELECT id FROM samples WHERE id IN (25, 31)" and row["time"] is not None
    details = json.loads(row["details"])
    assert details["forgotten"] == 2
    assert details["vector_sha256"] == {str(i): hashlib.sha256(x[i].tobytes()).hexdigest() for i in (25, 31)}
    for i in (25, 31):  # no component of the vectors is written out
        assert not any(repr(float(v))[:8] in row["details"] for v in x[i])


def test_a_duplicate_of_a_kept_row_is_reported_as_still_held(tmp_path, rng):
    x = rng.standard_normal((50, 8)).astype(np.float32)
    x[10] = x[40]
    mem = memstore.open(tmp_path / "d.mem")
    mem.add(x, np.zeros(50, np.int64))
    report = mem.forget([10, 11])
    assert report.still_held == 1 and len(mem) == 48
    assert list(files_holding(mem.path, x[[10, 11]])) == [0]  # x[10]'s bytes are x[40]'s


def test_bytes_left_in_a_file_make_forget_fail_loudly(history):
    mem, x = history, history.x
    (mem.path / "stray-copy.bin").write_bytes(b"\x00" * 5 + x[250].tobytes())
    with pytest.raises(ForgetError, match="stray-copy.bin"):
        mem.forget([250, 251])
    assert not {250, 251} & set(mem.samples.ids)  # the rows are gone; the stray file is the user's


@pytest.mark.parametrize("bad, error", [
    (np.array([5000]), UnknownIdsError),
    ("SELECT id FROM samples WHERE false", SQLResultError),
    ("SELECT id, label FROM samples", SQLResultError),
])
def test_bad_selections_change_nothing(history, bad, error):
    mem = history
    version, rows, files = mem.version, len(mem), sorted(p for p in mem.path.rglob("*") if p.is_file())
    with pytest.raises(error):
        mem.forget(bad)
    assert mem.refresh().version == version and len(mem) == rows
    assert sorted(p for p in mem.path.rglob("*") if p.is_file()) == files


def test_forgetting_twice_or_from_a_pinned_version_is_refused(history):
    mem = history
    mem.forget([25])
    with pytest.raises(UnknownIdsError, match="already forgotten"):
        mem.forget([25, 26])
    assert 26 in set(mem.samples.ids)
    with pytest.raises(ReadOnlyError):
        mem.at(2).forget([30])


@pytest.mark.parametrize("few", [8, 0], ids=["each vector by bytes.find", "one filter pass"])
def test_find_vector_bytes_tries_every_offset_and_chunk_boundary(tmp_path, rng, monkeypatch, few):
    from memstore import forget as forget_module

    monkeypatch.setattr(forget_module, "FEW_VECTORS", few)
    v = rng.standard_normal((3, 6)).astype(np.float32)
    blob = bytearray(rng.integers(0, 256, 1000, dtype=np.uint8).tobytes())
    blob[101:101 + 24] = v[0].tobytes()  # odd offset
    blob[510:510 + 24] = v[2].tobytes()  # straddles the 512-byte chunks below
    blob[700:700 + 20] = v[1].tobytes()[:20]  # a partial copy is not a hit
    (tmp_path / "a").write_bytes(bytes(blob))
    hits, (files, size), skipped = find_vector_bytes(tmp_path, v, chunk_bytes=512)
    assert sorted((off, row) for _, off, row in hits) == [(101, 0), (510, 2)]
    assert (files, size, skipped) == (1, 1000, 0)
    zero = np.zeros((1, 6), np.float32)
    assert find_vector_bytes(tmp_path, zero)[2] == 1  # no anchor: cannot be searched for


def _fail_once_at_commit(monkeypatch):
    from memstore import versioning

    original = versioning.Transaction.commit

    def failing(self, *args, **kwargs):
        monkeypatch.setattr(versioning.Transaction, "commit", original)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(versioning.Transaction, "commit", failing)


@pytest.mark.parametrize("failed", ["add", "reweight", "forget"])
def test_a_forget_after_a_failed_write_keeps_the_memory_whole(filled, rng, monkeypatch, failed):
    """A failed write is rolled back by a new Lance version: cleanup must keep the one the head names."""
    before = filled.sql("SELECT id, label, weight FROM samples ORDER BY id").fetchall()
    _fail_once_at_commit(monkeypatch)
    with pytest.raises(memstore.DiskFullError):
        if failed == "add":
            filled.add(rng.standard_normal((5, 8)).astype(np.float32), "z")
        elif failed == "reweight":
            filled.reweight("SELECT id, 0.1 AS weight FROM samples")
        else:
            filled.forget([1, 2])
    report = filled.forget([0], message="retried after the failure")
    mem = memstore.open(filled.path, create=False)
    assert report.version == mem.version == 2
    assert mem.sql("SELECT id, label, weight FROM samples ORDER BY id").fetchall() == before[1:]
    assert len(mem.at(1)) == 99
    mem.add(rng.standard_normal((1, 8)).astype(np.float32), "a")
    mem.check()


def test_cleanup_keeps_the_lance_versions_the_head_names(filled, rng, monkeypatch):
    _fail_once_at_commit(monkeypatch)
    with pytest.raises(memstore.DiskFullError):
        filled.reweight("SELECT id, 0.1 AS weight FROM samples")
    store = filled._store
    head = store.head()
    # a writer's Lance commit that no memory version names (it was killed before its audit row)
    state = store.open_table("sample_state")
    state.add(state.to_arrow().slice(0, 5))
    assert store.latest_version("sample_state") != head.lance_versions["sample_state"]
    with store.lock():
        store.cleanup(head)
    mem = memstore.open(filled.path, create=False)
    assert len(mem) == 100 and mem.check().problems == []


def test_forget_on_a_one_dimensional_memory_works_and_says_what_it_could_not_scan(tmp_path):
    mem = memstore.open(tmp_path / "d1.mem")
    mem.add(np.arange(1, 11, dtype=np.float32).reshape(10, 1), ["a"] * 10)
    report = mem.forget([3, 4])
    assert report.rows == 2 and report.unverifiable == 2  # 4 bytes cannot be told from any other word
    assert len(memstore.open(tmp_path / "d1.mem", create=False)) == 8


# -- a forget costs what it touches ---------------------------------------------------------
@pytest.fixture
def fragmented(tmp_path, rng, monkeypatch):
    """5,500 rows in fragments of at most 1,000 rows (memstore.optimize.FRAGMENT_ROWS, made small)."""
    from memstore import optimize

    monkeypatch.setattr(optimize, "FRAGMENT_ROWS", 1000)
    mem = memstore.open(tmp_path / "frag.mem")
    mem.x = rng.standard_normal((5500, 8)).astype(np.float32)
    mem.add(mem.x, np.arange(5500) % 3)
    return mem


def data_files(mem) -> dict[int, list[str]]:
    ds = mem._store.dataset(DATA_TABLE)
    return {f.fragment_id: sorted(d.path for d in f.data_files()) for f in ds.get_fragments()}


def test_an_add_writes_fragments_of_bounded_size(fragmented):
    rows = [f.metadata.physical_rows for f in fragmented._store.dataset(DATA_TABLE).get_fragments()]
    assert rows == [1000] * 5 + [500]


def test_a_forget_rewrites_only_the_fragments_that_held_its_rows(fragmented):
    before = data_files(fragmented)
    total = sum(p.stat().st_size for p in fragmented.path.rglob("*") if p.is_file())
    report = fragmented.forget([3, 2500])  # in fragments 0 and 2
    after = data_files(fragmented)
    kept = {i: files for i, files in before.items() if i not in (0, 2)}
    assert all(after[i] == files for i, files in kept.items())  # the same files, not rewritten
    assert report.files_replaced == 2 and report.bytes_untouched > 0
    assert report.bytes_scanned < total - report.bytes_untouched // 2
    # the guarantee, checked independently: no file under the memory holds the bytes
    assert not find_vector_bytes(fragmented.path, fragmented.x[[3, 2500]])[0]
    assert len(fragmented) == 5498 and fragmented.check().problems == []


def test_forgets_keep_every_fragment_within_the_bound(fragmented):
    """Rows in four adjacent full fragments: Lance alone would write them back as fragments of
    1.5x the bound, and every later forget would rewrite more."""
    for ids in ([3, 1500, 2500, 3500], [10, 1010, 2010, 3010, 4010, 5010]):
        fragmented.forget(ids)
        rows = [f.metadata.physical_rows for f in fragmented._store.dataset(DATA_TABLE).get_fragments()]
        assert max(rows) <= 1000, rows
    assert len(fragmented) == 5490 and fragmented.check().problems == []
    assert not find_vector_bytes(fragmented.path, fragmented.x[[3, 1500, 2500, 3500, 10, 5010]])[0]


def state_files(mem) -> dict[int, list[str]]:
    ds = mem._store.dataset(STATE_TABLE)
    return {f.fragment_id: sorted(d.path for d in f.data_files()) for f in ds.get_fragments()}


def test_a_forget_leaves_state_fragments_with_other_deletions_alone(fragmented):
    """A reweight of every other row leaves deletions in every state fragment; a forget of one row
    rewrites the state fragments that held that row's intervals, not all that have deletions."""
    fragmented.reweight("SELECT id, 0.5 AS weight FROM samples WHERE id % 2 = 0")
    before = state_files(fragmented)
    fragmented.forget([2500])  # its first interval in fragment 2, its second in the reweight's
    after = state_files(fragmented)
    kept = [i for i in before if i in after and after[i] == before[i]]
    assert len(before) - len(kept) <= 2, (before, after)
    assert fragmented.sql("SELECT count(*) FROM samples WHERE weight = 0.5").fetchall() == [(2749,)]
    assert len(fragmented.at(1)) == 5499 and fragmented.check().problems == []


def test_small_fragments_that_held_no_row_are_not_merged_by_a_forget(mem, rng):
    x = rng.standard_normal((50, 8)).astype(np.float32)
    for i in range(5):
        mem.add(x[10 * i:10 * i + 10], "a")
    before = data_files(mem)
    mem.forget([23])
    after = data_files(mem)
    assert len(after) == 5 and all(after[i] == before[i] for i in (0, 1, 3, 4))


def test_a_data_file_that_held_a_row_and_survives_fails_the_proof(fragmented, monkeypatch):
    """If cleanup left the old file of a rewritten fragment, the proof says so (it is not skipped
    as untouched), and names the file."""
    from memstore import versioning

    monkeypatch.setattr(versioning.Store, "cleanup", lambda self, head: None)
    with pytest.raises(ForgetError, match="sample_data.lance/data/"):
        fragmented.forget([3])


def test_a_forget_loads_no_torch(tmp_path):
    """A process that only erases rows pays neither torch's import (1.5 s) nor a read of every row."""
    import subprocess
    import sys

    code = (f"import numpy as np, sys, memstore\n"
            f"mem = memstore.open({str(tmp_path / 'f.mem')!r})\n"
            "mem.add(np.random.default_rng(0).random((50, 8), np.float32), 'a')\n"
            "mem = memstore.open(mem.path)\n"
            "mem.forget([3])\n"
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "False"
