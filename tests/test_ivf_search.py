"""In-RAM IVF search: exact distances over the probed partitions, tuned to a recall target."""

import builtins

import numpy as np
import pytest

import memstore
from memstore.errors import InvalidInputError
from memstore.ivf_search import IVFSearch
from memstore.search import ExactSearch, recall

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def clustered():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 32)).astype(np.float32) * 3
    return (centres[rng.integers(0, 50, 20_000)] + rng.standard_normal((20_000, 32))).astype(np.float32)


@pytest.mark.parametrize("metric", ["l2", "cosine", "dot"])
def test_reaches_its_recall_target_with_exact_distances(clustered, metric):
    ivf = IVFSearch(clustered, metric, k=50, target_recall=0.95, sample=100)
    assert ivf.recall >= 0.95 and ivf.nprobes < ivf.nlist  # tuned, and cheaper than a full scan
    q = clustered[:200] + 0.05
    d, pos = ivf.search(q, 50)
    d0, pos0 = ExactSearch(clustered, metric).search(q, 50)
    assert recall(pos, pos0) >= 0.9
    # a neighbour found is scored exactly: its distance is the exact search's for that row
    found = pos[:, 0] == pos0[:, 0]
    np.testing.assert_allclose(d[found, 0], d0[found, 0], rtol=1e-4, atol=1e-3)  # float32 cancellation
    assert np.all(np.diff(d, axis=1) >= 0)


def test_exclude_leaves_each_querys_own_row_out(clustered):
    ivf = IVFSearch(clustered, "l2", k=10, sample=50)
    rows = np.arange(0, 1000, 10)
    _, pos = ivf.search(clustered[rows], 5, exclude=rows)
    assert not (pos == rows[:, None]).any()
    _, with_self = ivf.search(clustered[rows], 5)
    assert (with_self[:, 0] == rows).all()


def test_partitions_too_small_for_k_fall_back_to_exact(clustered):
    ivf = IVFSearch(clustered[:2000], "l2", nlist=64, nprobes=1)
    d, pos = ivf.search(clustered[:5], 500)  # one partition holds ~30 rows
    d0, pos0 = ExactSearch(clustered[:2000], "l2").search(clustered[:5], 500)
    assert (pos >= 0).all() and np.array_equal(pos, pos0)


def test_bad_parameters_and_missing_faiss_are_explained(clustered, monkeypatch):
    with pytest.raises(InvalidInputError, match="nlist"):
        IVFSearch(clustered[:100], "l2", nlist=1000)
    with pytest.raises(InvalidInputError, match="target_recall"):
        IVFSearch(clustered[:100], "l2", target_recall=1.5)
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("no faiss")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(InvalidInputError, match="pip install"):
        IVFSearch(clustered[:100], "l2")


def test_memory_searcher_ivf_is_kept_per_handle(mem, clustered):
    mem.add(clustered[:5000], 0)
    ivf = mem.searcher("l2", "ivf", k=20)
    assert isinstance(ivf, IVFSearch) and mem.searcher("l2", "ivf", k=20) is ivf
    hits = mem.search(clustered[:3], k=1, metric="l2", index="ivf")
    assert hits["id"].to_pylist() == mem.samples.ids[:3].tolist()
    with pytest.raises(InvalidInputError, match="'ivf'"):
        mem.searcher("l2", "hnsw")
    assert isinstance(memstore.open(mem.path).searcher("l2", "exact"), ExactSearch)
