"""Retrieval heads that read a memory: each follows scikit-learn's estimator contract."""

from .base import MemoryHead
from .knn import VOTINGS, KNNClassifier

__all__ = ["KNNClassifier", "MemoryHead", "VOTINGS"]
