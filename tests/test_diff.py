"""memstore.diff: what changed between two versions, checked against a brute force over every pair."""

import numpy as np
import pytest

import memstore
from memstore.diff import diff


@pytest.fixture
def history(tmp_path, rng):
    """Seven versions: adds, a prune, relabels, a reweight, a restore, a forget."""
    mem = memstore.open(tmp_path / "d.mem")
    mem.add(rng.standard_normal((60, 4)).astype(np.float32), np.array(["a", "b", "c"])[np.arange(60) % 3])  # 1
    mem.prune(np.array([3, 4, 50]))  # 2
    mem.relabel("SELECT id, 'z' AS label FROM samples WHERE id % 7 = 0")  # 3
    mem.add(rng.standard_normal((15, 4)).astype(np.float32), ["n"] * 15)  # 4
    mem.reweight("SELECT id, 0.5 AS weight FROM samples WHERE id % 5 = 1")  # 5
    mem.restore(2)  # 6: the relabels, the adds and the reweights undone; rows 3, 4, 50 still pruned
    mem.forget([10, 11])  # 7
    return mem


def brute(mem, a, b) -> dict:
    def rows(v):
        return {i: (label, weight) for i, label, weight in
                mem.at(v).sql("SELECT id, label, weight FROM samples").fetchall()}

    old, new = rows(a), rows(b)
    both = old.keys() & new.keys()
    return {"added": sorted(new.keys() - old.keys()), "pruned": sorted(old.keys() - new.keys()),
            "relabelled": sorted(i for i in both if old[i][0] != new[i][0]),
            "reweighted": sorted(i for i in both if old[i][1] != new[i][1])}


def test_every_pair_of_versions_matches_a_brute_force(history):
    for a in range(1, 8):
        for b in range(1, 8):
            d = diff(history, a, b)
            want = brute(history, a, b)
            for kind, ids in want.items():
                assert d.ids[kind].tolist() == ids, (a, b, kind)
                assert d.counts[kind] == len(ids), (a, b, kind)
            lo, hi = sorted((a, b))
            assert d.counts["forgotten"] == (2 if lo < 7 <= hi else 0)


def test_limit_cuts_the_lists_not_the_counts(history):
    d = diff(history, 1, 4, limit=3)
    assert d.counts["added"] == 15 and d.ids["added"].tolist() == [60, 61, 62]
    assert d.as_dict()["truncated"]["added"] and not d.as_dict()["truncated"]["pruned"]
