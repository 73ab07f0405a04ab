"""A writer killed at any point leaves the memory at its last committed version.

The writer runs in a subprocess that announces on stdout when it reaches a
chosen point of the write (mid-stream of an add's batches, or after every Lance
change but before the audit append that commits), then is killed there with
SIGKILL. Kills after a random delay cover the points in between.
"""

import signal
import subprocess
import sys
import textwrap
import time

import pytest

import memstore

WRITER = textwrap.dedent("""
    import sys, time, numpy as np, memstore
    from memstore import ingest, versioning
    path, op, stop_at, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    def announce_and_wait(name, original):
        calls = [0]
        def wrapper(*args, **kwargs):
            calls[0] += 1
            # stop at the third batch (mid-stream), or at the first commit
            if stop_at == name and (name != "batch" or calls[0] == 3):
                print("at", name, flush=True)
                time.sleep(60)  # the parent kills us here
            return original(*args, **kwargs)
        return wrapper

    ingest._record_batch = announce_and_wait("batch", ingest._record_batch)
    versioning.Transaction.commit = announce_and_wait("commit", versioning.Transaction.commit)
    mem = memstore.open(path)
    rng = np.random.default_rng(seed)
    print("ready", flush=True)
    if op == "add":
        mem.add(rng.standard_normal((20000, 32)).astype("f4"), rng.integers(0, 5, 20000).astype(str),
                batch_size=1000, message="killed?")
    elif op == "reweight":
        mem.reweight("SELECT id, random() AS weight FROM samples")
    elif op == "restore":
        mem.restore(1)
    print("done", flush=True)
""")


def _run_and_kill(path, op, stop_at, seed, delay=None):
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), op, stop_at, str(seed)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        if delay is None:
            assert child.stdout.readline().strip() == f"at {stop_at}"
        else:
            time.sleep(delay)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()


def _consistent(mem):
    """Every table agrees with the head commit."""
    head = mem._head
    assert len(mem) == head.rows_total
    assert mem.sql("SELECT count(*) FROM _data").fetchall()[0][0] == head.next_id
    orphans = mem.sql("SELECT count(*) FROM samples s ANTI JOIN _data d ON s.id = d.id").fetchall()[0][0]
    assert orphans == 0


def _state(mem):
    return mem.version, mem.sql("SELECT id, label, weight FROM samples ORDER BY id").fetchall()


@pytest.fixture
def crash_mem(tmp_path, rng):
    path = tmp_path / "crash.mem"
    mem = memstore.open(path)
    mem.add(rng.standard_normal((3000, 32)).astype("f4"), rng.integers(0, 5, 3000).astype(str))
    mem.prune("SELECT id FROM samples WHERE id % 3 = 0")
    return path


@pytest.mark.parametrize("op,stop_at", [
    ("add", "batch"),      # killed while the vectors stream into Lance
    ("add", "commit"),     # killed after every Lance write, before the audit append
    ("reweight", "commit"),
    ("restore", "commit"),
])
def test_kill_at_a_chosen_point_rolls_back(crash_mem, rng, op, stop_at):
    before = _state(memstore.open(crash_mem))
    _run_and_kill(crash_mem, op, stop_at, seed=1)
    after = memstore.open(crash_mem)
    _consistent(after)
    assert _state(after) == before
    res = after.add(rng.standard_normal((1, 32)).astype("f4"), ["0"])  # writable again
    assert res.version == before[0] + 1 and res.ids[0] == 3000


@pytest.mark.parametrize("op", ["add", "reweight"])
def test_kill_after_random_delays_leaves_a_committed_version(crash_mem, op):
    for trial, delay in enumerate([0.02, 0.2, 0.5]):
        before = _state(memstore.open(crash_mem))
        _run_and_kill(crash_mem, op, "none", seed=trial, delay=delay)
        after = memstore.open(crash_mem)
        _consistent(after)
        if after.version == before[0]:
            assert _state(after) == before
        else:
            assert after.version == before[0] + 1
            assert after.audit()["operation"].to_pylist()[-1] == op
