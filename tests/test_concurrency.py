"""Several processes on one memory: 4 writers (adds, reweights, forgets) and 2 readers.

Every committed row is there exactly once, every add is seen whole or not at
all, and no reader ever sees a raw error, including while forgets remove the
Lance versions it was reading (memstore/stale.py).
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import memstore

WRITER = textwrap.dedent("""
    import json, sys, numpy as np, memstore
    memstore.versioning.LOCK_TIMEOUT = 600  # four writers queue for the lock; waiting is not the test
    path, me, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    mem = memstore.open(path, create=False)
    rng = np.random.default_rng(me)
    added, forgotten = [], []
    for r in range(rounds):
        batch = f"w{me}-{r}"
        res = mem.add(rng.standard_normal((50, 16)).astype("f4"), str(me), provenance={"uri": batch})
        added.append((batch, res.ids.tolist()))
        mem.reweight(f"SELECT id, {r} / 10.0 AS weight FROM samples WHERE uri = '{batch}'")
        if r % 2 == 1:  # forget a whole earlier batch of ours: batches stay all-or-nothing
            victim = f"w{me}-{r - 1}"
            mem.forget(f"SELECT id FROM samples WHERE uri = '{victim}'")
            forgotten.append(victim)
    print(json.dumps({"added": added, "forgotten": forgotten}))
""")

READER = textwrap.dedent("""
    import json, sys, time, numpy as np, memstore
    path, seconds = sys.argv[1], float(sys.argv[2])
    mem = memstore.open(path, read_only=True)
    q = np.random.default_rng(0).standard_normal((2, 16)).astype("f4")
    errors, reads, partial = [], 0, []
    end = time.time() + seconds
    while time.time() < end:
        reads += 1
        try:
            mem.refresh()
            sizes = mem.sql("SELECT uri, count(*) FROM samples WHERE uri LIKE 'w%' GROUP BY uri").fetchall()
            partial += [s for s in sizes if s[1] != 50]
            if len(mem):
                mem.search(q, 3)
            mem.at(1).sql("SELECT count(*), sum(weight) FROM samples").fetchall()
        except Exception as exc:
            errors.append(f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:200]}")
    print(json.dumps({"reads": reads, "errors": errors, "partial": partial}))
""")


def test_a_write_chooses_its_rows_at_the_version_it_changes(filled, monkeypatch):
    """Another writer that commits between a write's SELECT and its change would be overwritten."""
    import threading

    from memstore.memory import Memory

    other = memstore.open(filled.path)  # its own Store: a lock of its own, as another process
    select = Memory.sql
    racer = []

    def select_then_race(self, query, **tables):
        result = select(self, query, **tables)
        if self is filled and not racer:
            racer.append(threading.Thread(target=other.reweight,
                                          args=("SELECT id, weight * 3 AS weight FROM samples",)))
            racer[0].start()
            racer[0].join(timeout=1.0)  # it commits now, unless the lock holds it back
        return result

    monkeypatch.setattr(Memory, "sql", select_then_race)
    filled.reweight("SELECT id, weight * 2 AS weight FROM samples")
    racer[0].join()
    weights = memstore.open(filled.path).sql("SELECT DISTINCT weight FROM samples").fetchall()
    assert weights == [(6.0,)]  # both applied, one after the other; 2.0 would be a lost update


def test_a_handle_keeps_reading_its_version_after_another_forgets(filled, rng):
    """The forget removes the Lance versions a handle read; it re-reads the same version (stale.py)."""
    filled.add(rng.standard_normal((5, 8)).astype(np.float32), "e")  # version 2
    reader = memstore.open(filled.path, read_only=True)
    pinned = reader.at(1)
    assert reader.sql("SELECT count(*) FROM samples WHERE uri IS NOT NULL").fetchall() == [(100,)]
    assert len(pinned.samples) == 100
    filled.forget("SELECT id FROM samples WHERE id < 10")  # version 3, in "another process"
    filled.add(rng.standard_normal((1, 8)).astype(np.float32), "e")  # version 4
    # the files the reader read are gone; it reads version 2 (and 1) again, without the forgotten rows
    assert reader.sql("SELECT count(*) FROM samples WHERE uri IS NOT NULL").fetchall() == [(90,)]
    assert reader.version == 2 and len(reader) == 95
    assert pinned.sql("SELECT min(id), count(*) FROM samples WHERE uri IS NOT NULL").fetchall() == [(10, 90)]
    assert reader.refresh().version == 4


def test_four_writers_and_two_readers(tmp_path, rng):
    path = tmp_path / "shared.mem"
    mem = memstore.open(path)
    mem.add(rng.standard_normal((500, 16)).astype("f4"), "seed", provenance={"uri": "seed"})
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(i), "3"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(path), "20"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in writers + readers]
    for p, (out, err) in zip(writers + readers, outputs):
        assert p.returncode == 0, err[-3000:]
    written = [json.loads(out) for out, _ in outputs[:4]]
    seen = [json.loads(out) for out, _ in outputs[4:]]
    for r in seen:
        assert r["reads"] > 5
        assert r["errors"] == [], r["errors"][:3]
        assert r["partial"] == []
    mem = memstore.open(path, create=False)
    expect = set(range(500))
    for w in written:
        gone = set(w["forgotten"])
        for batch, ids in w["added"]:
            if batch not in gone:
                expect |= set(ids)
    got = [r[0] for r in mem.sql("SELECT id FROM samples").fetchall()]
    assert len(got) == len(set(got)) and set(got) == expect
    versions = mem.versions()["version"].to_pylist()
    assert versions == list(range(len(versions)))  # one version per write, none lost or doubled
    assert len(versions) == 2 + 4 * (3 + 3 + 1)
    mem.check()
