"""A writer killed at any point leaves the memory at its last committed version.

A writer runs in a subprocess (tests/crash_harness.py) that announces when it
reaches a named point of a write, and is killed there with SIGKILL; kills after
a random delay cover the points in between. Each case then checks what
recovery is for, not only that the memory opens: the next write, a forget and
a reopen give exactly the committed rows plus the new ones, ids are unique, no
file the killed writer made is left on disk, and ``check()`` passes.
The harness is tests/crash_harness.py; the full matrix (every write path x
every point x random delays) is benchmarks/crash_matrix.py.
"""

import numpy as np
import pytest

import memstore
from crash_harness import after_the_kill_everything_works, contents, files, run_and_kill
from memstore.forget import PENDING_DIR, find_vector_bytes


@pytest.fixture
def crash_mem(tmp_path, rng):
    path = tmp_path / "crash.mem"
    mem = memstore.open(path)
    mem.add(rng.standard_normal((3000, 32)).astype("f4"), rng.integers(0, 5, 3000).astype(str))
    mem.prune("SELECT id FROM samples WHERE id % 3 = 0")
    return path


@pytest.mark.parametrize("op,stop_at", [
    ("add", "batch"),       # killed while the vectors stream into Lance
    ("add", "commit"),      # killed after every Lance write, before the audit append
    ("reweight", "commit"),
    ("restore", "commit"),
    ("forget", "compact"),  # forget: rows soft-deleted, not committed
    ("optimize", "merge"),  # optimize: some tables merged, not committed
    ("optimize", "commit"),  # optimize: every table merged, not committed
])
def test_kill_before_the_commit_rolls_back(crash_mem, rng, op, stop_at):
    before = contents(memstore.open(crash_mem))
    before_files = files(crash_mem)
    run_and_kill(crash_mem, op, stop_at)
    after = memstore.open(crash_mem, create=False)
    assert contents(after) == before and after.version == 2
    after_the_kill_everything_works(crash_mem, before_files, rng)


def test_a_recovered_memory_is_not_recovered_again_by_every_open(crash_mem, rng):
    """The rollback is a restore (a new Lance version); later opens must find nothing to undo."""
    from memstore.versioning import Store

    before, before_files = contents(memstore.open(crash_mem)), files(crash_mem)
    run_and_kill(crash_mem, "reweight", "commit")
    memstore.open(crash_mem, create=False)  # recovers
    store = Store(crash_mem)
    lance_versions = {name: store.latest_version(name) for name in store.table_names()}
    head = store.head()
    assert {n: lance_versions[n] for n in head.lance_versions} == head.lance_versions
    for _ in range(3):
        mem = memstore.open(crash_mem, create=False)
        assert contents(mem) == before
    assert {name: store.latest_version(name) for name in store.table_names()} == lance_versions
    after_the_kill_everything_works(crash_mem, before_files, rng)


def test_kill_after_the_audit_append_keeps_the_commit(crash_mem, rng):
    """Killed between the audit row and head.json: the version is committed, and stays so."""
    before_files = files(crash_mem)
    run_and_kill(crash_mem, "reweight", "head_record")
    mem = memstore.open(crash_mem, create=False)
    assert mem.version == 3 and mem.versions()["operation"].to_pylist()[-1] == "reweight"
    after_the_kill_everything_works(crash_mem, before_files, rng, committed=True)


@pytest.mark.parametrize("stop_at", ["cleanup", "verify", "clear_pending"])
def test_a_forget_killed_after_its_commit_is_finished_by_the_next_open(crash_mem, rng, stop_at):
    mem = memstore.open(crash_mem)
    doomed = mem.sql("SELECT id, vector FROM samples WHERE id % 7 = 2 ORDER BY id").to_arrow_table()
    vectors = np.stack(doomed["vector"].to_numpy(zero_copy_only=False)).astype(np.float32)
    run_and_kill(crash_mem, "forget", stop_at)
    assert (crash_mem / PENDING_DIR).is_dir()  # the record of what is still to do
    if stop_at == "cleanup":  # the bytes are still in the old Lance versions at this point
        assert find_vector_bytes(crash_mem, vectors)[0]
    mem = memstore.open(crash_mem, create=False)  # finishes it
    assert not (crash_mem / PENDING_DIR).exists()
    assert not find_vector_bytes(crash_mem, vectors)[0]  # an independent scan of every file
    assert mem.versions()["operation"].to_pylist()[-1] == "forget"
    assert mem.sql("SELECT count(*) FROM samples WHERE id % 7 = 2").fetchall()[0][0] == 0
    # the forgotten rows (alive at the head) are gone from version 1 too; the pruned ones stay there
    assert mem.at(1).sql("SELECT count(*) FROM samples WHERE id % 7 = 2 AND id % 3 <> 0").fetchall()[0][0] == 0
    after_the_kill_everything_works(crash_mem, files(crash_mem), rng, committed=True)


def test_a_forget_killed_before_its_commit_forgets_nothing(crash_mem, rng):
    before = contents(memstore.open(crash_mem))
    run_and_kill(crash_mem, "forget", "erase")
    mem = memstore.open(crash_mem, create=False)
    assert not (crash_mem / PENDING_DIR).exists()
    assert contents(mem) == before and mem.version == 2


@pytest.mark.parametrize("op", ["add", "reweight", "forget", "optimize"])
def test_kill_after_random_delays_leaves_a_committed_version(crash_mem, rng, op):
    for trial, delay in enumerate([0.05, 0.5, 1.5]):
        before_mem = memstore.open(crash_mem)
        before, version = contents(before_mem), before_mem.version
        before_files = files(crash_mem)
        run_and_kill(crash_mem, op, "none", seed=trial, delay=delay)
        after = memstore.open(crash_mem, create=False)
        if after.version == version:
            assert contents(after) == before
        else:
            assert after.version == version + 1
            assert after.audit()["operation"].to_pylist()[-1] == op
        after_the_kill_everything_works(crash_mem, before_files, rng, committed=after.version > version)
