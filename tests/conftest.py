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
