"""Real text that can be had offline, and a tokenizer trained on it.

No pretrained language model or tokenizer can be downloaded here, so the
kNN-LM experiments train both on text that ships with Python itself:
``pydoc_data.topics``, the 79 help topics of the Python documentation
(about 465,000 characters of English prose with code). Each topic is one
document; documents, not lines, are split into train/validation/test, so no
document leaks across splits.

Examples
--------
>>> docs = load_pydoc_topics("train")
>>> len(docs) > 50 and all(isinstance(d.text, str) for d in docs)
True
>>> sorted({d.name for d in load_pydoc_topics("test")} & {d.name for d in docs})
[]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError

SPLITS = ("train", "validation", "test", "all")


@dataclass(frozen=True)
class Document:
    """One text with its name (for provenance)."""

    name: str
    text: str


def split_documents(docs: list[Document], split: str, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> list[Document]:
    """A seeded split by document: the same seed gives disjoint train, validation and test sets."""
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        return list(docs)
    order = np.random.default_rng(seed).permutation(len(docs))
    n_train = int(round(fractions[0] * len(docs)))
    n_val = int(round(fractions[1] * len(docs)))
    parts = {"train": order[:n_train], "validation": order[n_train:n_train + n_val],
             "test": order[n_train + n_val:]}
    return [docs[i] for i in sorted(parts[split])]


def load_pydoc_topics(split: str = "all", seed: int = 0) -> list[Document]:
    """Python's documentation topics (``pydoc_data.topics``), one document per topic, split by document."""
    from pydoc_data.topics import topics

    docs = [Document(f"pydoc/{name}", text) for name, text in sorted(topics.items())]
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


__all__ = ["Document", "load_pydoc_topics", "split_documents", "train_tokenizer"]
