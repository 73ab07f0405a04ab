"""Kill -9 a writer at a named point of a write, then check what recovery is for.

The child side: ``python tests/crash_harness.py PATH OP STOP_AT SEED`` runs
one write (OP, one of ``OPERATIONS``) and, at STOP_AT (one of ``POINTS``,
``NAME#N`` for the N-th call, or "none": the parent kills after a delay of
its choosing), prints ``at STOP_AT`` and sleeps until the parent kills it.

The parent side: :func:`run_and_kill` and :func:`after_the_kill_everything_works`,
the checks every crash case ends with. Used by tests/test_crash.py (the fast
cases) and benchmarks/crash_matrix.py (every write path x every point x
random delays).
"""

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import memstore
from memstore import forget, ingest, optimize, versioning

#: where a write can be stopped: (module, attribute) whose call is held back, and at which call
POINTS = {
    "batch": (ingest, "_record_batch", 3),  # mid-stream of an add's batches
    "commit": (versioning.Transaction, "commit", 1),  # every Lance write done, audit row not yet
    "head_record": (versioning.Store, "write_head_record", 1),  # audit appended, head.json not yet
    "pending": (forget, "write_pending", 1),  # forget: rows chosen, nothing written
    "erase": (forget, "erase", 1),  # forget: pending record written
    "compact": (forget, "compact", 1),  # forget: rows deleted (soft)
    "cleanup": (versioning.Store, "cleanup", 1),  # forget: committed, old versions still on disk
    "verify": (forget, "verify", 1),  # forget: cleaned up, not yet checked
    "clear_pending": (forget, "clear_pending", 1),  # forget: checked, pending record still there
    "merge": (optimize, "merge_fragments", 2),  # optimize: one table merged, the next not yet
}

OPERATIONS = ("add", "add_images", "reweight", "relabel", "prune", "restore", "tag", "set_taxonomy",
              "estimate_quality", "forget", "create_index", "optimize")


def hold_at(owner, name: str, nth: int, label: str) -> None:
    original = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth:
            print("at", label, flush=True)
            time.sleep(120)  # the parent kills us here
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def write(mem, op: str, rng) -> None:
    if op == "add":
        mem.add(rng.standard_normal((20000, 32)).astype("f4"), rng.integers(0, 5, 20000).astype(str),
                batch_size=1000, message="killed?")
    elif op == "add_images":
        from memstore.encoders import TorchEncoder
        import torch

        encoder = TorchEncoder(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 32)), dim=32, name="tiny")
        images = rng.integers(0, 255, (300, 8, 8), dtype=np.uint8)
        mem.add_images(images, rng.integers(0, 5, 300).astype(str), encoder=encoder, batch_size=50)
    elif op == "reweight":
        mem.reweight("SELECT id, random() AS weight FROM samples")
    elif op == "relabel":
        mem.relabel("SELECT id, '9' AS label FROM samples WHERE id % 2 = 0")
    elif op == "prune":
        mem.prune("SELECT id FROM samples WHERE id % 5 = 1")
    elif op == "restore":
        mem.restore(1)
    elif op == "tag":
        mem.tag(f"t{rng.integers(1 << 30)}")
    elif op == "set_taxonomy":
        mem.set_taxonomy({"root": None, **{str(i): "root" for i in range(10)}})
    elif op == "estimate_quality":
        mem.estimate_quality(k=5)
    elif op == "forget":
        mem.forget("SELECT id FROM samples WHERE id % 7 = 2", message="killed?")
    elif op == "optimize":
        mem.optimize()
    elif op == "create_index":
        mem.create_index("IVF_FLAT", num_partitions=4, sample=20)
    else:
        raise SystemExit(f"unknown op {op}")


def main(path: str, op: str, stop_at: str, seed: int) -> None:
    if stop_at != "none":
        point, _, nth = stop_at.partition("#")
        owner, name, default_nth = POINTS[point]
        hold_at(owner, name, int(nth or default_nth), stop_at)
    print("ready", flush=True)
    mem = memstore.open(path, create=False)  # "migrate": opening is the write
    if op != "migrate":
        write(mem, op, np.random.default_rng(seed))
    print("done", flush=True)


# -- the parent side ----------------------------------------------------------------------
#: files every commit replaces (same name, new content): not the killed writer's own
REWRITTEN = ("head.json", "latest_version_hint.json")


def run_and_kill(path, op, stop_at, seed=1, delay=None) -> bool:
    """Run OP in a child, kill -9 it at STOP_AT (or after DELAY s). True if it finished first."""
    child = subprocess.Popen([sys.executable, __file__, str(path), op, stop_at, str(seed)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        if delay is None:
            line = child.stdout.readline().strip()
            assert line == f"at {stop_at}", f"the writer did not reach {stop_at}: {line!r}"
        else:
            time.sleep(delay)
        finished = child.poll() == 0
        child.send_signal(signal.SIGKILL)
        return finished
    finally:
        child.kill()
        child.wait()


def files(path) -> set[str]:
    return {str(p.relative_to(path)) for p in Path(path).rglob("*") if p.is_file()}


def contents(mem) -> list[tuple]:
    return mem.sql("SELECT id, label, weight FROM samples ORDER BY id").fetchall()


def after_the_kill_everything_works(path, before_files, rng, committed=False):
    """Open, a write, a forget, a reopen and check() after a kill; returns the reopened memory.

    ``before_files``: the files before the killed write. Unless that write
    committed, none of the files it made may be left once the forget is done.
    """
    from memstore.forget import find_vector_bytes

    killed_files = {f for f in files(path) - before_files if not f.endswith(REWRITTEN)}
    mem = memstore.open(path, create=False)
    committed_rows, version = contents(mem), mem.version
    ids = [r[0] for r in committed_rows]
    assert len(ids) == len(set(ids)) == len(mem), "ids are not unique"
    dim = mem.dim
    # +100: never equal to a row of the memory, whatever the seed (a duplicate would stay "held")
    new = mem.add((rng.standard_normal((2, dim)) + 100).astype("f4"), mem.samples.labels[:2].to_pylist() or ["0", "1"])
    new_labels = mem.at(new.version).sql(f"SELECT label FROM samples WHERE id >= {new.ids[0]} ORDER BY id")
    assert new.version == version + 1, "the next write did not make the next version"
    assert new.ids[0] >= max(ids, default=-1) + 1, "ids were reused"
    gone = ids[0]
    vector = mem.sql(f"SELECT vector FROM samples WHERE id = {gone}").fetchall()[0][0]
    mem.forget([gone], message="after the crash")
    mem = memstore.open(path, create=False)
    got = contents(mem)
    labels = [r[0] for r in new_labels.fetchall()]
    expect = [r for r in committed_rows if r[0] != gone] + [(int(i), lab, 1.0) for i, lab in zip(new.ids, labels)]
    assert got == expect, "the memory is not its committed rows plus the new ones"
    if not committed:
        left = killed_files & files(path)
        assert not left, f"files of the killed writer are still on disk: {sorted(left)[:3]}"
    hits, _, _ = find_vector_bytes(path, np.array([vector], np.float32))
    assert not hits, "the forgotten vector's bytes are still on disk"
    mem.check()
    return mem


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
