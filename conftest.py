"""Doctests of the package (pytest collects them from memstore/, see pyproject's addopts)."""

import pytest


def pytest_collection_modifyitems(config, items):
    """Fashion-MNIST's examples read Debian's files: skip them, saying why, where they are missing."""
    from memstore.data.fashion_mnist import fashion_mnist_available

    if fashion_mnist_available():
        return
    skip = pytest.mark.skip(reason="Debian's dataset-fashion-mnist is not installed (make install fetches it)")
    for item in items:
        if item.name.startswith("memstore.data.fashion_mnist"):
            item.add_marker(skip)
