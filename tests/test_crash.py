"""A writer killed at any point leaves the memory at its last committed version."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import memstore

WRITER = textwrap.dedent("""
    import sys, numpy as np, memstore
    mem = memstore.open(sys.argv[1])
    op = sys.argv[2]
    rng = np.random.default_rng(int(sys.argv[3]))
    print("ready", flush=True)
    if op == "add":
        mem.add(rng.standard_normal((60000, 32)).astype("f4"), rng.integers(0, 5, 60000).astype(str),
                batch_size=2000, message="killed?")
    elif op == "reweight":
        mem.reweight("SELECT id, random() AS weight FROM samples")
    elif op == "restore":
        mem.restore(1)
    print("done", flush=True)
""")


def _kill_midway(path, op, seed, delay):
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(path), op, str(seed)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()


def _consistent(mem):
    """Every table agrees with the head commit."""
    head = mem._head
    assert len(mem) == head.rows_total
    n_data = mem.sql("SELECT count(*) FROM _data").fetchall()[0][0]
    assert n_data == head.next_id  # no data row past the committed id counter
    orphans = mem.sql("SELECT count(*) FROM samples s ANTI JOIN _data d ON s.id = d.id").fetchall()[0][0]
    assert orphans == 0


@pytest.mark.parametrize("op", ["add", "reweight", "restore"])
def test_kill_writer_mid_write(tmp_path, rng, op):
    path = tmp_path / "crash.mem"
    mem = memstore.open(path)
    mem.add(rng.standard_normal((3000, 32)).astype("f4"), rng.integers(0, 5, 3000).astype(str))
    mem.prune("SELECT id FROM samples WHERE id % 3 = 0")
    outcomes = set()
    for trial, delay in enumerate([0.05, 0.3, 0.6, 1.0, 1.5]):
        before = memstore.open(path)
        expected = before.sql("SELECT id, label, weight FROM samples ORDER BY id").fetchall()
        _kill_midway(path, op, trial, delay)
        after = memstore.open(path)
        _consistent(after)
        if after.version == before.version:
            outcomes.add("rolled back")
            assert after.sql("SELECT id, label, weight FROM samples ORDER BY id").fetchall() == expected
        else:
            outcomes.add("committed")
            assert after.version == before.version + 1
            assert after.audit()["operation"].to_pylist()[-1] == op
        # the memory takes writes again after the crash
        res = after.add(rng.standard_normal((1, 32)).astype("f4"), ["0"])
        assert res.version == after.version
        assert res.ids[0] == after._head.next_id - 1
    assert "rolled back" in outcomes, "no kill landed mid-write; the test did not test anything"
