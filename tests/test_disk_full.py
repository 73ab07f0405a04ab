"""A full disk: every write fails with DiskFullError, the memory stays at its last version,
and once space is freed every write works again.

The disk is a small tmpfs the test mounts (root only; skipped with the reason
elsewhere), filled to the last byte by a filler file.
"""

import subprocess
import uuid

import numpy as np
import pytest

import memstore


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk):
    """Write a filler file until the disk is full; returns it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
    with filler.open("ab", buffering=0) as f:  # the last bytes, a page at a time
        for size in (4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * size)
                    f.flush()
            except OSError:
                pass
    return filler


WRITES = {
    "add": lambda m, r: m.add(r.standard_normal((20000, 64)).astype("f4"), "x"),
    "prune": lambda m, r: m.prune("SELECT id FROM samples WHERE id % 2 = 0"),
    "reweight": lambda m, r: m.reweight("SELECT id, 0.25 AS weight FROM samples"),
    "relabel": lambda m, r: m.relabel("SELECT id, 'z' AS label FROM samples WHERE id < 500"),
    "restore": lambda m, r: m.restore(1),
    "tag": lambda m, r: m.tag(f"t{uuid.uuid4().hex[:8]}"),
    "set_taxonomy": lambda m, r: m.set_taxonomy({"root": None, "a": "root", "b": "root", "z": "root"}),
    "estimate_quality": lambda m, r: m.estimate_quality(k=3),
    "create_index": lambda m, r: m.create_index("IVF_FLAT", num_partitions=4, sample=20),
    "forget": lambda m, r: m.forget("SELECT id FROM samples WHERE id % 3 = 1"),
}


def contents(mem):
    return mem.version, mem.sql("SELECT id, label, weight FROM samples ORDER BY id").fetchall()


def test_every_write_fails_cleanly_on_a_full_disk_and_works_after(small_disk, rng):
    path = small_disk / "m.mem"
    mem = memstore.open(path)
    mem.add(rng.standard_normal((3000, 64)).astype("f4"), np.array(["a", "b"])[np.arange(3000) % 2])
    mem.reweight("SELECT id, 0.5 AS weight FROM samples WHERE id < 10")
    before = contents(mem)
    filler = fill(small_disk)
    refused = []
    for name, write in WRITES.items():
        try:
            write(mem, rng)
        except memstore.DiskFullError as exc:
            assert str(small_disk) in str(exc) or "disk" in str(exc)
            refused.append(name)
        assert contents(memstore.open(path, read_only=True)) == before, name
    print("refused on a full disk:", refused)
    # a write may find room (a tag is a few hundred bytes), but most cannot
    assert {"add", "reweight", "forget", "prune", "create_index"} <= set(refused), refused
    filler.unlink()
    mem = memstore.open(path, create=False)
    assert contents(mem) == before
    for name, write in WRITES.items():
        write(mem, rng)  # each works once there is room
    mem.check()
    assert memstore.open(path, create=False).version == mem.version
