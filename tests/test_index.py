"""ANN index: one committed version, tuned to its recall target, never returns dead rows."""

import json

import numpy as np
import pytest

import memstore
from memstore import index as index_module
from memstore.errors import InvalidInputError, ReadOnlyError
from memstore.schema import DATA_TABLE


@pytest.fixture
def clustered(mem, rng):
    """3,000 rows of 16-d points around 30 centres: the structure real embeddings have."""
    centres = rng.standard_normal((30, 16)) * 3
    y = rng.integers(0, 30, 3300)
    x = (centres[y] + rng.standard_normal((3300, 16))).astype(np.float32)
    mem.add(x[:3000], y[:3000] % 5, message="train")
    return mem, x[:3000], x[3000:]


def test_create_index_commits_one_version_with_its_measured_recall(clustered):
    mem, _, _ = clustered
    report = mem.create_index("IVF_PQ", num_partitions=16, num_sub_vectors=4, target_recall=0.9)
    assert report.version == 2 and mem.version == 2 and len(mem) == 3000
    assert report.recall >= 0.9 and report.k == 10 and report.sample == 200
    assert report.nprobes <= 16 and report.refine_factor >= 1
    audit = mem.audit().to_pylist()[-1]
    assert audit["operation"] == "create_index" and audit["rows_affected"] == 0
    assert json.loads(audit["details"])["recall"] == report.recall
    info = mem.index_info()
    assert info["version"] == 2 and info["metric"] == "cosine" and info["nprobes"] == report.nprobes


def test_indexed_search_agrees_with_exact_search(clustered):
    mem, _, q = clustered
    mem.create_index("IVF_HNSW_SQ", num_partitions=8, target_recall=0.95)
    exact = mem.search(q, k=10, index="exact")["id"].to_numpy().reshape(-1, 10)
    ann = mem.search(q, k=10, index="ann")["id"].to_numpy().reshape(-1, 10)
    assert memstore.search.recall(ann, exact) >= 0.9


def test_indexed_search_never_returns_pruned_rows_and_time_travels(clustered):
    mem, x, _ = clustered
    mem.create_index(num_partitions=16, target_recall=0.9)
    mem.prune("SELECT id FROM samples WHERE id < 1500")
    res = mem.search(x[:1500], k=5, index="ann")
    assert res.num_rows == 1500 * 5 and res["id"].to_numpy().min() >= 1500
    # at version 1 (before the prune) the same index finds the rows again
    assert mem.at(1).search(x[:5], k=1, index="ann")["id"].to_pylist() == [0, 1, 2, 3, 4]


def cosine_distances(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """(n_queries, n_rows) 1 - cos, in float64: the oracle, independent of memstore's search."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    return 1.0 - qn.astype(np.float64) @ xn.astype(np.float64).T


def test_indexed_search_returns_live_rows_at_their_true_distances_to_its_recall(clustered):
    """Every third row pruned (interleaved, so a dead hit mapped onto a live id would be inside
    the id range): each hit is a live row, its distance is that row's own, and the hits agree with
    a brute force over the live rows to the recall the index measured when it was built."""
    mem, x, held_out = clustered
    report = mem.create_index("IVF_PQ", num_partitions=16, num_sub_vectors=4, target_recall=0.95)
    mem.prune("SELECT id FROM samples WHERE id % 3 = 0")
    live = np.flatnonzero(np.arange(3000) % 3 != 0)
    # the pruned rows' own vectors: their nearest row in the table is dead, Lance returns it first
    queries = np.concatenate([x[::3][:150], held_out[:150]])
    res = mem.search(queries, k=10, index="ann")
    ids = res["id"].to_numpy().reshape(-1, 10)
    dist = res["distance"].to_numpy().reshape(-1, 10)
    assert np.isin(ids, live).all()
    true = cosine_distances(queries, x)  # (300, 3000)
    np.testing.assert_allclose(dist, np.take_along_axis(true, ids, 1), atol=2e-5)
    on_live = true[:, live]
    truth = live[np.argsort(on_live, axis=1, kind="stable")[:, :10]]
    assert memstore.search.recall(ids, truth) >= report.recall - 0.05


def test_leave_one_out_through_the_index(clustered):
    mem, _, _ = clustered
    mem.create_index(num_partitions=16, target_recall=0.9)
    clf = memstore.KNNClassifier(k=5, index="ann").fit(mem)
    _, ids = clf.kneighbors(None)
    assert not (ids == np.arange(3000)[:, None]).any()


def test_auto_uses_the_index_only_for_large_memories(clustered, monkeypatch):
    mem, _, _ = clustered
    mem.create_index(num_partitions=16, target_recall=0.9)
    assert type(mem.searcher()).__name__ == "ExactSearch"
    monkeypatch.setattr(index_module, "ANN_AUTO_ROWS", 1000)
    assert type(memstore.open(mem.path).searcher()).__name__ == "IndexedSearch"
    assert type(mem.searcher("l2")).__name__ == "ExactSearch"  # the index is for cosine only


@pytest.mark.parametrize("kwargs, match", [
    ({"index_type": "HNSW"}, "'HNSW' is not one of"),
    ({"metric": "jaccard"}, "'jaccard' is not one of"),
    ({"target_recall": 1.5}, "target_recall"),
])
def test_bad_index_requests_change_nothing(clustered, kwargs, match):
    mem, _, _ = clustered
    with pytest.raises(InvalidInputError, match=match):
        mem.create_index(**kwargs)
    assert mem.version == 1 and mem.index_info() is None


def test_an_index_on_a_tiny_memory_is_refused(filled):
    with pytest.raises(InvalidInputError, match="100 rows"):
        filled.create_index()


def test_a_pinned_memory_cannot_build_an_index(clustered):
    mem, _, _ = clustered
    with pytest.raises(ReadOnlyError):
        mem.at(1).create_index()


def test_a_failed_build_leaves_no_index_behind(clustered, monkeypatch):
    mem, _, _ = clustered

    def fail_after_building(dataset, samples, **kwargs):
        dataset.create_index("vector", index_type="IVF_PQ", metric="cosine", num_partitions=4,
                             num_sub_vectors=4)
        raise RuntimeError("killed while tuning")

    monkeypatch.setattr(index_module, "build_index", fail_after_building)
    with pytest.raises(RuntimeError, match="killed"):
        mem.create_index()
    reopened = memstore.open(mem.path)
    assert reopened.version == 1 and reopened.index_info() is None
    assert not reopened._store.open_table(DATA_TABLE).list_indices()


def test_many_queries_go_to_lance_in_chunks_with_the_same_answers(clustered, monkeypatch):
    """Lance opens files per query of a call: 10,000 queries in one call ran out of descriptors."""
    from memstore import search

    mem, _, q = clustered
    mem.create_index(num_partitions=16, target_recall=0.9)
    whole = mem.search(q, k=5, index="ann")
    monkeypatch.setattr(search, "ANN_QUERY_CHUNK", 7)
    chunked = memstore.open(mem.path).search(q, k=5, index="ann")
    assert chunked.equals(whole)
