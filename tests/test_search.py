"""Exact search: agrees with brute force for every metric, blocked or not, and refuses bad input."""

import numpy as np
import pyarrow as pa
import pytest

import memstore
from memstore import search
from memstore.errors import DimensionMismatchError, InvalidInputError
from memstore.search import ExactSearch


def brute_force(x, q, metric):
    if metric == "cosine":
        xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        return 1 - qn.astype(np.float64) @ xn.T.astype(np.float64)
    if metric == "dot":
        return 1 - q.astype(np.float64) @ x.T.astype(np.float64)
    return ((q[:, None, :].astype(np.float64) - x[None].astype(np.float64)) ** 2).sum(-1)


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
@pytest.mark.parametrize("block_bytes", [4096 * 4, 256 << 20])  # many blocks, one block
def test_exact_search_matches_brute_force(rng, monkeypatch, metric, block_bytes):
    monkeypatch.setattr(search, "QUERY_CHUNK", 7)  # several query chunks too
    x = rng.standard_normal((9000, 12)).astype(np.float32)
    q = rng.standard_normal((20, 12)).astype(np.float32)
    dist, pos = ExactSearch(x, metric, block_bytes=block_bytes).search(q, 5)
    truth = brute_force(x, q, metric)
    expected = np.argsort(truth, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(pos, expected)
    np.testing.assert_allclose(dist, np.take_along_axis(truth, expected, 1), rtol=1e-4, atol=1e-4)
    assert dist.dtype == np.float32 and pos.dtype == np.int64
    assert (np.diff(dist, axis=1) >= 0).all()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_exclude_leaves_each_query_own_row_out(rng, metric):
    x = rng.standard_normal((6000, 8)).astype(np.float32)
    rows = np.array([0, 4095, 4096, 5999])  # both sides of a block edge
    dist, pos = ExactSearch(x, metric, block_bytes=4096 * 4 * 4).search(x[rows], 3, exclude=rows)
    assert not (pos == rows[:, None]).any()
    truth = brute_force(x, x[rows], metric)
    truth[np.arange(4), rows] = np.inf
    np.testing.assert_array_equal(pos, np.argsort(truth, axis=1)[:, :3])


def test_equal_distances_come_in_row_order():
    """Ties, also at the k-th place, go to the earliest rows (as numpy's stable argsort).

    Real memories hold exact duplicates (Fashion-MNIST does), and a prediction
    must not depend on which of two equal rows torch.topk happened to pick.
    """
    x = np.ones((10, 4), np.float32)  # every row is at the same distance
    dist, pos = ExactSearch(x).search(np.ones((2, 4), np.float32), 4)
    assert pos.tolist() == [[0, 1, 2, 3]] * 2


def test_ties_do_not_depend_on_blocking_or_batch_size(rng):
    """The same query gives the same neighbours alone or in a batch (other block sizes)."""
    base = rng.standard_normal((50, 6)).astype(np.float32)
    x = np.repeat(base, 200, axis=0)[rng.permutation(10000)]  # every vector 200 times
    q = base[:3]
    alone = [ExactSearch(x, block_bytes=4096 * 4 * 3).search(q[i:i + 1], 7)[1][0] for i in range(3)]
    batch = ExactSearch(x).search(np.concatenate([q, rng.standard_normal((500, 6)).astype(np.float32)]), 7)[1]
    for i in range(3):
        expected = np.flatnonzero((x == q[i]).all(1))[:7]
        np.testing.assert_array_equal(alone[i], expected)
        np.testing.assert_array_equal(batch[i], expected)


def test_zero_vectors_do_not_give_nan_under_cosine():
    x = np.array([[0, 0], [1, 0]], np.float32)
    dist, pos = ExactSearch(x).search(np.array([[1, 0]], np.float32), 2)
    assert pos.tolist() == [[1, 0]] and np.isfinite(dist).all()
    assert dist[0, 1] == pytest.approx(1.0)


def test_vectors_are_kept_by_reference_not_copied(rng):
    x = rng.standard_normal((100, 8)).astype(np.float32)
    assert ExactSearch(x).vectors.data_ptr() == x.ctypes.data


@pytest.mark.parametrize("queries, error, match", [
    (np.zeros((2, 5), np.float32), DimensionMismatchError, "dimension 5"),
    (np.zeros((0, 8), np.float32), InvalidInputError, "no queries"),
    (np.full((1, 8), np.nan, np.float32), InvalidInputError, "NaN"),
    (np.zeros((1, 2, 8), np.float32), InvalidInputError, "shape"),
])
def test_bad_queries_are_refused(rng, queries, error, match):
    with pytest.raises(error, match=match):
        ExactSearch(rng.standard_normal((10, 8)).astype(np.float32)).search(queries, 1)


@pytest.mark.parametrize("k, match", [(0, "positive"), (11, "k = 11, n_samples_fit = 10"), (2.5, "positive")])
def test_bad_k_is_refused_with_the_numbers(rng, k, match):
    with pytest.raises(InvalidInputError, match=match):
        ExactSearch(rng.standard_normal((10, 8)).astype(np.float32)).search(np.ones(8, np.float32), k)


def test_unknown_metric_is_refused(rng):
    with pytest.raises(InvalidInputError, match="'manhattan' is not one of"):
        ExactSearch(np.ones((3, 2), np.float32), "manhattan")


def test_memory_search_returns_a_table_of_live_rows(filled):
    res = filled.search(filled.x[:3], k=4)
    assert res.column_names == ["query", "rank", "id", "distance", "label"]
    assert res.num_rows == 12
    assert res.filter(pa.compute.equal(res["rank"], 0))["id"].to_pylist() == [0, 1, 2]
    filled.prune("SELECT id FROM samples WHERE id = 1")
    assert 1 not in filled.search(filled.x[:3], k=4)["id"].to_pylist()
    assert filled.at(1).search(filled.x[1], k=1)["id"].to_pylist() == [1]  # time travel


def test_samples_are_the_live_rows_in_id_order(filled):
    filled.prune("SELECT id FROM samples WHERE id % 3 = 0")
    filled.relabel("SELECT id, 'z' AS label FROM samples WHERE id = 4")
    s = filled.samples
    keep = np.arange(100)[np.arange(100) % 3 != 0]
    np.testing.assert_array_equal(s.ids, keep)
    np.testing.assert_array_equal(s.vectors, filled.x[keep])
    assert s.labels[keep.tolist().index(4)].as_py() == "z"
    assert len(filled.at(1).samples) == 100


def test_searching_an_empty_memory_is_refused(mem):
    with pytest.raises(InvalidInputError, match="no rows"):
        mem.search(np.ones((1, 4), np.float32))


def test_index_argument_is_checked(filled):
    with pytest.raises(InvalidInputError, match="'fast'"):
        filled.search(filled.x[:1], index="fast")
    with pytest.raises(InvalidInputError, match="create_index"):
        filled.search(filled.x[:1], index="ann")


def test_lazy_heads_do_not_load_at_import():
    import subprocess
    import sys

    code = "import sys, memstore; print('torch' in sys.modules, 'sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert memstore.KNNClassifier.__name__ == "KNNClassifier"
