"""Row quality: wrong-neighbour counts, stored as a column, used to prune and reweight."""

import json

import numpy as np
import pytest

import memstore
from memstore.errors import InvalidInputError
from memstore.quality import SOFT_RANK_SQL, soft_rank_weight, wrong_neighbour_counts


def naive_counts(x, labels, k):
    """Leave-one-out by a full distance matrix: the definition, written plainly."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = 1 - xn @ xn.T
    np.fill_diagonal(d, np.inf)
    counts = np.zeros(len(x), int)
    for i in range(len(x)):
        for j in np.argsort(d[i], kind="stable")[:k]:
            counts[j] += labels[j] != labels[i]
    return counts


@pytest.fixture
def noisy(mem, rng):
    """Two well separated classes with 10 rows whose labels were flipped."""
    x = np.concatenate([rng.normal(0, 1, (100, 8)) + 4, rng.normal(0, 1, (100, 8)) - 4]).astype(np.float32)
    y = np.array(["pos"] * 100 + ["neg"] * 100)
    flipped = rng.choice(200, 10, replace=False)
    y[flipped] = np.where(y[flipped] == "pos", "neg", "pos")
    mem.add(x, y)
    return mem, x, y, flipped


def test_counts_match_the_definition(noisy):
    _, x, y, _ = noisy
    np.testing.assert_array_equal(wrong_neighbour_counts(x, y, k=7), naive_counts(x, y, 7))


def test_estimate_quality_stores_counts_and_flipped_labels_score_highest(noisy):
    mem, x, y, flipped = noisy
    res = mem.estimate_quality(k=10)
    assert res.version == 2 and res.rows == 200
    got = mem.sql("SELECT id, wrong_count FROM samples ORDER BY id").to_arrow_table()
    np.testing.assert_array_equal(got["wrong_count"].to_numpy(), naive_counts(x, y, 10))
    counts = got["wrong_count"].to_numpy()
    clean = np.setdiff1d(np.arange(200), flipped)
    assert counts[flipped].mean() > 5 * counts[clean].mean()
    worst = mem.sql("SELECT id FROM samples ORDER BY wrong_count DESC, id LIMIT 10").fetchall()
    assert len({i for (i,) in worst} & set(flipped.tolist())) >= 8
    details = json.loads(mem.audit()["details"][-1].as_py())
    assert details["k"] == 10 and details["max_wrong_count"] == got["wrong_count"].to_numpy().max()
    # the counts are versioned like labels and weights
    assert mem.at(1).sql("SELECT count(*) FROM samples WHERE wrong_count IS NULL").fetchall() == [(200,)]


def test_hard_and_soft_pruning_by_sql_fix_the_flipped_rows(noisy, rng):
    mem, x, y, flipped = noisy
    mem.estimate_quality(k=10)
    q = np.concatenate([rng.normal(0, 1, (50, 8)) + 4, rng.normal(0, 1, (50, 8)) - 4]).astype(np.float32)
    truth = np.array(["pos"] * 50 + ["neg"] * 50)
    mem.reweight(SOFT_RANK_SQL, message="SoftRankVoting")
    w = mem.sql("SELECT wrong_count, weight FROM samples").to_arrow_table()
    np.testing.assert_allclose(w["weight"].to_numpy(), soft_rank_weight(w["wrong_count"].to_numpy()), rtol=1e-6)
    mem.prune("SELECT id FROM samples WHERE wrong_count >= 5", message="hard pruning")
    pruned = set(mem.at(3).samples.ids) - set(mem.samples.ids)
    assert len(pruned & set(flipped.tolist())) >= 8 and len(pruned - set(flipped.tolist())) <= 2
    clf = memstore.KNNClassifier(k=5, voting="rank").fit(mem)
    assert (clf.predict(q) == truth).mean() == 1.0


def test_soft_rank_votes_are_rank_times_quality_weight(noisy):
    mem, *_ = noisy
    mem.estimate_quality(k=10)
    mem.reweight(SOFT_RANK_SQL)
    clf = memstore.KNNClassifier(k=4, voting="rank").fit(mem)
    e = clf.explain(np.ones((1, 8), np.float32)).to_pylist()
    counts = dict(mem.sql("SELECT id, wrong_count FROM samples").fetchall())
    for r in e:
        assert r["vote_weight"] == pytest.approx(1 / (r["rank"] + 2) * 1.75 / (1 + counts[r["id"]]), rel=1e-6)


def test_estimate_quality_refuses_too_few_rows_or_too_large_k(mem):
    mem.add(np.eye(3, dtype=np.float32), ["a", "b", "c"])
    with pytest.raises(InvalidInputError, match="k = 3"):
        mem.estimate_quality(k=3)
    assert mem.version == 1
    one = memstore.open(mem.path.parent / "one.mem")
    one.add(np.ones((1, 3), np.float32), ["a"])
    with pytest.raises(InvalidInputError, match="at least 2 rows"):
        one.estimate_quality(k=1)
