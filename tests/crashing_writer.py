"""A writer process that stops at a named point of a write, for the parent to kill -9.

    python tests/crashing_writer.py PATH OP STOP_AT SEED

OP is one of ``OPERATIONS``; STOP_AT one of ``POINTS`` (or "none": the
parent kills after a delay of its choosing). At the point the process prints
``at STOP_AT`` and sleeps; the parent kills it there with SIGKILL. Used by
tests/test_crash.py and benchmarks/crash_matrix.py.
"""

import sys
import time

import numpy as np

import memstore
from memstore import forget, ingest, versioning

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
}

OPERATIONS = ("add", "add_images", "reweight", "relabel", "prune", "restore", "tag", "set_taxonomy",
              "estimate_quality", "forget", "create_index")


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
    elif op == "create_index":
        mem.create_index("IVF_FLAT", num_partitions=4, sample=20)
    else:
        raise SystemExit(f"unknown op {op}")


def main(path: str, op: str, stop_at: str, seed: int) -> None:
    if stop_at != "none":
        owner, name, nth = POINTS[stop_at]
        hold_at(owner, name, nth, stop_at)
    mem = memstore.open(path, create=False)
    print("ready", flush=True)
    write(mem, op, np.random.default_rng(seed))
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
