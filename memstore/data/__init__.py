"""Real datasets that can be had offline: images as :class:`ImageDataset`, texts as documents.

* :func:`load_fashion_mnist` - 70,000 28 x 28 clothing images (Debian ``dataset-fashion-mnist``).
* :func:`load_digits` - 1,797 8 x 8 handwritten digits (shipped in scikit-learn).
* :func:`load_wikipedia_sample`, :func:`load_lee_news` - Wikipedia articles and news stories
  (gensim's test data), :func:`load_pydoc_topics` - Python's documentation topics (shipped
  with Python), split by document; :func:`train_tokenizer`, a byte-level BPE tokenizer.

Examples
--------
>>> from memstore.data import load_digits
>>> ds = load_digits("test", test_size=0.2)
>>> ds
ImageDataset(name='digits', split='test', n=360, image_shape=(8, 8), classes=10)
"""

from .base import DatasetNotFoundError, ImageDataset
from .digits import load_digits
from .fashion_mnist import fashion_mnist_available, load_fashion_mnist
from .text import Document, load_lee_news, load_pydoc_topics, load_wikipedia_sample, split_documents, train_tokenizer

__all__ = [
    "DatasetNotFoundError",
    "Document",
    "ImageDataset",
    "fashion_mnist_available",
    "load_digits",
    "load_fashion_mnist",
    "load_lee_news",
    "load_pydoc_topics",
    "load_wikipedia_sample",
    "split_documents",
    "train_tokenizer",
]
