"""Real text that can be had offline, and a tokenizer trained on it.

No pretrained language model or tokenizer can be downloaded here, so the
kNN-LM experiments train both on text that ships inside packages:

* :func:`load_wikipedia_sample` - 106 English Wikipedia articles (3.1 million
  characters, markup stripped) from the dump excerpt in gensim's test data;
* :func:`load_lee_news` - the Lee corpus of 343 Australian news stories, also
  in gensim's test data: another domain, for domain adaptation;
* :func:`load_pydoc_topics` - the 79 help topics of Python's documentation
  (``pydoc_data.topics``, shipped with Python itself).

Every loader splits by document into train/validation/test, after grouping
near-duplicates (documents sharing runs of 8 words, see
:func:`near_duplicate_groups`), so no text leaks from train into test.

Examples
--------
>>> docs = load_pydoc_topics("train")
>>> len(docs) > 50 and all(isinstance(d.text, str) for d in docs)
True
>>> sorted({d.name for d in load_pydoc_topics("test")} & {d.name for d in docs})
[]
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from .base import DatasetNotFoundError

SPLITS = ("train", "validation", "test", "all")


@dataclass(frozen=True)
class Document:
    """One text with its name (for provenance)."""

    name: str
    text: str


def near_duplicate_groups(docs: list[Document], words: int = 8, min_shared: int = 5) -> list[int]:
    """A group number per document: documents sharing ``min_shared`` runs of ``words`` words are grouped.

    News stories re-filed with an update, or documentation topics that repeat a
    section, would otherwise land on both sides of a split, and a kNN-LM would
    look far better on validation than it is (it copies the shared text).
    Grouping is transitive (union-find).

    >>> a = "the quick brown fox jumps over the lazy dog and runs far away from here"
    >>> near_duplicate_groups([Document("1", a), Document("2", "x " + a), Document("3", "other words")], min_shared=2)
    [0, 0, 2]
    """
    parent = list(range(len(docs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_holder: dict[int, int] = {}
    shared: dict[tuple[int, int], int] = {}
    for i, doc in enumerate(docs):
        w = doc.text.split()
        for shingle in {hash(tuple(w[j:j + words])) for j in range(len(w) - words + 1)}:
            j = first_holder.setdefault(shingle, i)
            if j != i:
                shared[j, i] = shared.get((j, i), 0) + 1
    for (i, j), n in shared.items():
        if n >= min_shared:
            parent[root(j)] = root(i)
    return [root(i) for i in range(len(docs))]


def split_documents(docs: list[Document], split: str, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> list[Document]:
    """A seeded split by group of near-duplicate documents: train, validation and test share no text.

    Groups (:func:`near_duplicate_groups`) are shuffled and dealt out until each
    split holds its fraction of the documents; the same seed gives the same,
    disjoint splits. Documents keep their order within a split.
    """
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        return list(docs)
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(near_duplicate_groups(docs)):
        groups.setdefault(g, []).append(i)
    members = list(groups.values())
    order = np.random.default_rng(seed).permutation(len(members))
    bounds = np.cumsum(fractions)[:2] * len(docs)
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    dealt = 0
    for g in order:
        name = "train" if dealt < bounds[0] else "validation" if dealt < bounds[1] else "test"
        parts[name] += members[g]
        dealt += len(members[g])
    return [docs[i] for i in sorted(parts[split])]


def load_pydoc_topics(split: str = "all", seed: int = 0) -> list[Document]:
    """Python's documentation topics (``pydoc_data.topics``), one document per topic, split by document."""
    from pydoc_data.topics import topics

    docs = [Document(f"pydoc/{name}", text) for name, text in sorted(topics.items())]
    return split_documents(docs, split, seed=seed)


def _gensim_test_file(name: str) -> str:
    try:
        from gensim.test.utils import datapath
    except ImportError as e:
        raise DatasetNotFoundError(
            f"{name} ships in gensim's test data: pip install 'memstore[lm]' (or gensim)") from e
    return datapath(name)


WIKIPEDIA_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def load_wikipedia_sample(split: str = "all", seed: int = 0) -> list[Document]:
    """English Wikipedia articles from the dump excerpt in gensim's test data, markup stripped.

    Main-namespace pages only, redirects and empty pages skipped: 106 articles, 3.1 million
    characters (Anarchism, Autism, Albedo, ...). gensim's ``filter_wiki``
    removes templates, tables, references and link markup; the prose stays
    as written (case, punctuation, numbers).
    """
    return split_documents(list(_wikipedia_articles()), split, seed=seed)


@functools.lru_cache(maxsize=1)
def _wikipedia_articles() -> tuple[Document, ...]:
    """Parsed once per process: stripping the markup takes about 15 s."""
    import bz2

    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    docs = []
    with bz2.open(_gensim_test_file(WIKIPEDIA_DUMP)) as f:
        for title, text, _ in extract_pages(f, filter_namespaces=("0",)):
            if text.lstrip().lower().startswith("#redirect"):
                continue
            body = re.sub(r"\n{3,}", "\n\n", filter_wiki(text)).strip()
            if body:
                docs.append(Document(f"wikipedia/{title}", body))
    return tuple(docs)


def load_lee_news(split: str = "all", seed: int = 0) -> list[Document]:
    """The Lee corpus (Lee et al. 2005): Australian news stories from gensim's test data, one per document.

    ``lee_background.cor`` (300 stories) and ``lee.cor`` (50 more); the 7
    exact repeats are dropped, leaving 343 stories, 376,000 characters.
    """
    docs, seen = [], set()
    for file in ("lee_background.cor", "lee.cor"):
        with open(_gensim_test_file(file), encoding="latin-1") as f:
            for i, line in enumerate(f):
                text = line.strip()
                if text and text not in seen:
                    seen.add(text)
                    docs.append(Document(f"lee/{file.split('.')[0]}/{i}", text))
    return split_documents(docs, split, seed=seed)


def train_tokenizer(texts, vocab_size: int = 4096):
    """A byte-level BPE tokenizer trained on ``texts``, as a transformers fast tokenizer.

    Byte-level: every text encodes, nothing is unknown. ``<|endoftext|>`` is
    token 0, used as the end-of-document, padding and start token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise InvalidInputError(f"vocab_size must be at least 300 (256 bytes and merges), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token=None)


__all__ = ["Document", "load_lee_news", "load_pydoc_topics", "load_wikipedia_sample", "near_duplicate_groups",
           "split_documents", "train_tokenizer"]
