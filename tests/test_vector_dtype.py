"""float16 vectors: stored in half the bytes, searched in float32, forgotten for real."""

import numpy as np
import pyarrow as pa
import pytest

import memstore
from memstore.errors import InvalidInputError
from memstore.forget import as_scanned, find_vector_bytes


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    return rng.standard_normal((300, 16)).astype(np.float32)


def test_float16_memory_stores_half_precision_and_searches_in_float32(mem, vectors):
    mem.add(vectors, np.arange(300) % 3, vector_dtype="float16")
    assert mem.vector_dtype == "float16"
    assert mem._snapshot.data.schema.field("vector").type == pa.list_(pa.float16(), 16)  # as stored
    rounded = vectors.astype(np.float16).astype(np.float32)
    # SQL (DuckDB reads no float16) sees them widened; queries without vectors do not read them
    row = mem.sql("SELECT id, vector, dataset FROM samples ORDER BY id LIMIT 1").fetchall()[0]
    assert row[0] == 0 and np.array_equal(np.float32(row[1]), rounded[0])
    assert mem.sql("SELECT count(*) FROM samples WHERE dataset IS NULL").fetchall() == [(300,)]
    got = mem.samples.vectors
    assert got.dtype == np.float32 and np.array_equal(got, rounded)
    hits = mem.search(vectors[:5], k=1, metric="l2")
    assert hits["id"].to_pylist() == mem.samples.ids[:5].tolist()
    mem.add(vectors[:2] * 2, [0, 1])  # later adds follow the memory's type
    assert mem.vector_dtype == "float16" and len(mem) == 302


def test_float16_is_chosen_by_the_first_add_only(mem, vectors):
    mem.add(vectors[:10], 0)
    assert mem.vector_dtype == "float32"
    with pytest.raises(InvalidInputError, match="stores float32 vectors, not float16"):
        mem.add(vectors[10:20], 0, vector_dtype="float16")
    with pytest.raises(InvalidInputError, match="vector_dtype must be one of"):
        mem.add(vectors[10:20], 0, vector_dtype="bfloat16")
    assert len(mem) == 10 and mem.version == 1


def test_values_beyond_float16_are_refused_before_anything_is_written(mem, vectors):
    big = vectors.copy()
    big[7, 3] = 1e5
    with pytest.raises(InvalidInputError, match=r"beyond float16's range .* row\(s\) \[7\]"):
        mem.add(big, 0, vector_dtype="float16")
    assert len(mem) == 0 and mem.version == 0 and mem.vector_dtype is None


def test_float16_rows_are_indexed_and_forgotten_for_real(mem, vectors):
    mem.add(np.tile(vectors, (4, 1)) + np.repeat(np.arange(4, dtype=np.float32), 300)[:, None], 0,
            vector_dtype="float16")
    mem.create_index("IVF_FLAT", metric="l2", num_partitions=4, k=5, sample=50)
    stored = vectors[:3].astype(np.float16)
    before, _, _ = find_vector_bytes(mem.path, as_scanned(stored))
    assert before  # the scan sees float16 bytes, so its silence afterwards means something
    mem.forget(mem.samples.ids[:3].tolist(), message="test")
    after, _, _ = find_vector_bytes(mem.path, as_scanned(stored))
    assert after == [] and len(mem) == 1197
    ann = mem.searcher("l2", "ann")
    _, pos = ann.search(vectors[:3], k=1)
    assert not np.isin(mem.samples.ids[pos[:, 0]], [0, 1, 2]).any()
