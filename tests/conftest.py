"""Shared fixtures: small memories made from a seeded generator."""

import numpy as np
import pytest

import memstore


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def mem(tmp_path):
    return memstore.open(tmp_path / "test.mem")


@pytest.fixture
def filled(mem, rng):
    """A memory with 100 rows of 8-d vectors, labels a/b/c/d, split train/val."""
    x = rng.standard_normal((100, 8)).astype(np.float32)
    labels = np.array(["a", "b", "c", "d"])[np.arange(100) % 4]
    split = np.where(np.arange(100) < 80, "train", "val")
    mem.add(x, labels, provenance={"split": split, "uri": [f"img/{i}.png" for i in range(100)]},
            message="seed rows")
    mem.x = x  # the vectors, for comparisons
    return mem


@pytest.fixture
def served(tmp_path, rng):
    """A memory for memstore serve: 300 rows x 16 with uris; tagged ``first``, relabelled, quality
    estimated: version 3. ``.x`` and ``.y`` are the vectors and labels added."""
    path = tmp_path / "served.mem"
    mem = memstore.open(path)
    mem.x = rng.standard_normal((300, 16)).astype(np.float32)
    mem.y = np.array(["cat", "dog", "owl"])[rng.integers(0, 3, 300)]
    mem.add(mem.x, mem.y, provenance={"uri": [f"img/{i}.png" for i in range(300)]})
    mem.tag("first")
    mem.relabel("SELECT id, 'owl' AS label FROM samples WHERE id < 5")
    mem.estimate_quality(k=10)
    return mem
