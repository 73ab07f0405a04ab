"""Dataset loaders: Fashion-MNIST from IDX files, scikit-learn's digits, ImageDataset."""

import gzip

import numpy as np
import pytest

from memstore.data import (
    DatasetNotFoundError,
    ImageDataset,
    fashion_mnist_available,
    load_digits,
    load_fashion_mnist,
)
from memstore.errors import InvalidInputError, MemstoreError

needs_fashion = pytest.mark.skipif(
    not fashion_mnist_available(),
    reason="Fashion-MNIST not installed (sudo apt-get install dataset-fashion-mnist)")


def write_idx(path, array, gz=True):
    """Write a uint8 array as an IDX file, the format Zalando published."""
    magic = 2051 if array.ndim == 3 else 2049
    header = np.array([magic, *array.shape], ">i4").tobytes()
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def fake_fashion(root, n_train=6, n_test=4, gz=True, seed=0):
    """Four small IDX files in ``root``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    out = {}
    suffix = ".gz" if gz else ""
    for split, prefix, n in [("train", "train", n_train), ("test", "t10k", n_test)]:
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        out[split] = (images, labels)
    return out


# ------------------------------------------------------------------------ Fashion-MNIST


@needs_fashion
@pytest.mark.parametrize("split, n", [("train", 60_000), ("test", 10_000)])
def test_fashion_mnist_real_files(split, n):
    ds = load_fashion_mnist(split)
    assert len(ds) == n and ds.split == split and ds.name == "fashion-mnist"
    assert ds.images.shape == (n, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    assert np.bincount(ds.labels).tolist() == [n // 10] * 10  # balanced classes
    assert ds.labels[0] == 9 and ds.label_names[0] == "Ankle boot"  # first image of both splits
    assert ds.uris[0] == f"fashion-mnist/{split}/00000"
    assert ds.uris[-1] == f"fashion-mnist/{split}/{n - 1:05d}"
    assert ds.class_names == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert 0 < ds.images.mean() < 255  # real pixels, not a blank buffer


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_parses_idx_files(tmp_path, gz):
    written = fake_fashion(tmp_path, gz=gz)
    assert fashion_mnist_available(tmp_path)
    for split, (images, labels) in written.items():
        ds = load_fashion_mnist(split, root=tmp_path)
        np.testing.assert_array_equal(ds.images, images)
        np.testing.assert_array_equal(ds.labels, labels.astype(np.int64))


def test_fashion_mnist_env_var_is_the_default_root(tmp_path, monkeypatch):
    written = fake_fashion(tmp_path)
    monkeypatch.setenv("MEMSTORE_FASHION_MNIST", str(tmp_path))
    np.testing.assert_array_equal(load_fashion_mnist("test").images, written["test"][0])


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMSTORE_FASHION_MNIST", str(tmp_path / "nowhere"))
    assert not fashion_mnist_available()
    with pytest.raises(DatasetNotFoundError) as info:
        load_fashion_mnist("train")
    err = info.value
    assert isinstance(err, FileNotFoundError) and isinstance(err, MemstoreError)
    msg = str(err)
    assert str(tmp_path / "nowhere") in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "make install" in msg and "MEMSTORE_FASHION_MNIST" in msg
    assert "train-images-idx3-ubyte.gz" in msg


def test_fashion_mnist_corrupt_files_are_refused(tmp_path):
    fake_fashion(tmp_path)
    # labels written where images belong: wrong magic number
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros(4, np.uint8))
    with pytest.raises(InvalidInputError, match="magic"):
        load_fashion_mnist("test", root=tmp_path)
    # a truncated images file
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz") as f:
        raw = f.read()
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[:-10])
    with pytest.raises(InvalidInputError, match="truncated"):
        load_fashion_mnist("train", root=tmp_path)


def test_fashion_mnist_unknown_split(tmp_path):
    with pytest.raises(InvalidInputError, match="'validation'"):
        load_fashion_mnist("validation", root=tmp_path)


# ------------------------------------------------------------------------------- digits


def test_digits_all():
    from sklearn.datasets import load_digits as sk_digits

    ds = load_digits()
    ref = sk_digits()
    assert ds.images.shape == (1797, 8, 8) and ds.images.dtype == np.uint8
    assert ds.images.min() == 0 and ds.images.max() == 255
    np.testing.assert_array_equal(ds.images, np.rint(ref.images * 255 / 16).astype(np.uint8))
    np.testing.assert_array_equal(ds.labels, ref.target)
    assert ds.labels.dtype == np.int64 and ds.class_names == [str(d) for d in range(10)]
    assert ds.uris[0] == "digits/0000" and ds.uris[-1] == "digits/1796"
    assert ds.split == "all" and ds.name == "digits"


def test_digits_split_is_disjoint_stratified_and_seeded():
    full = load_digits()
    train, test = load_digits("train", test_size=0.2), load_digits("test", test_size=0.2)
    assert (train.split, test.split) == ("train", "test")
    assert len(test) == 360 and len(train) == 1797 - 360
    assert not set(train.uris) & set(test.uris)
    assert set(train.uris) | set(test.uris) == set(full.uris)
    # an image keeps its uri: index back into the full set
    idx = np.char.partition(test.uris, "/")[:, 2].astype(int)
    np.testing.assert_array_equal(full.images[idx], test.images)
    np.testing.assert_array_equal(full.labels[idx], test.labels)
    # stratified: every class in about its share
    assert np.abs(np.bincount(test.labels, minlength=10) / len(test)
                  - np.bincount(full.labels) / len(full)).max() < 0.01
    again = load_digits("test", test_size=0.2)
    other = load_digits("test", test_size=0.2, seed=1)
    assert (again.uris == test.uris).all() and set(other.uris) != set(test.uris)


@pytest.mark.parametrize("kwargs, match", [
    ({"split": "val"}, "'val'"),
    ({"split": "test", "test_size": 1.5}, "test_size"),
    ({"split": "test", "test_size": 0}, "test_size"),
])
def test_digits_bad_arguments(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        load_digits(**kwargs)


# ------------------------------------------------------------------------- ImageDataset


def toy(n=6, rgb=False):
    rng = np.random.default_rng(0)
    shape = (n, 4, 4, 3) if rgb else (n, 4, 4)
    return ImageDataset(rng.integers(0, 256, shape, dtype=np.uint8), np.arange(n) % 3,
                        ["a", "b", "c"], name="toy", split="train")


def test_image_dataset_subset_keeps_uris_and_labels():
    ds = toy()
    assert ds.uris.tolist() == [f"toy/train/{i}" for i in range(6)]  # default uris
    sub = ds.subset([4, 1])
    assert len(sub) == 2 and sub.uris.tolist() == ["toy/train/4", "toy/train/1"]
    np.testing.assert_array_equal(sub.images, ds.images[[4, 1]])
    assert sub.label_names.tolist() == ["b", "b"]
    masked = ds.subset(ds.labels == 2)
    assert masked.uris.tolist() == ["toy/train/2", "toy/train/5"]
    assert len(ds.subset(slice(1, 3))) == 2
    assert toy(rgb=True).subset([0]).images.shape == (1, 4, 4, 3)


@pytest.mark.parametrize("make, match", [
    (lambda: ImageDataset(np.zeros((3, 4, 4), np.uint8), np.zeros(2), ["a"], "t", "s"),
     "labels of shape"),
    (lambda: ImageDataset(np.zeros((3, 4, 4), np.uint8), np.array([0, 1, 5]), ["a", "b"], "t", "s"),
     r"0\.\.1"),
    (lambda: ImageDataset(np.zeros((3, 4, 4), np.float32), np.zeros(3), ["a"], "t", "s"),
     "uint8"),
    (lambda: ImageDataset(np.zeros((3, 4, 4), np.uint8), np.zeros(3), ["a"], "t", "s",
                          uris=["x"]), "uris"),
    (lambda: toy().subset(np.ones(5, bool)), "mask"),
    (lambda: toy().subset([0, 6]), "0..5"),
])
def test_image_dataset_bad_input(make, match):
    with pytest.raises(InvalidInputError, match=match):
        make()


def test_pydoc_topics_split_by_document_without_leaks():
    from memstore.data import load_pydoc_topics

    splits = {s: load_pydoc_topics(s) for s in ("train", "validation", "test")}
    names = [{d.name for d in docs} for docs in splits.values()]
    assert sum(map(len, names)) == len(load_pydoc_topics("all")) == 79
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert len(splits["train"]) == 64 and load_pydoc_topics("test") == splits["test"]
    with pytest.raises(InvalidInputError, match="split"):
        load_pydoc_topics("dev")


def test_trained_tokenizer_round_trips_any_text():
    from memstore.data import load_pydoc_topics, train_tokenizer

    docs = load_pydoc_topics("train")[:10]
    tok = train_tokenizer([d.text for d in docs], vocab_size=500)
    assert len(tok) == 500 and tok.convert_tokens_to_ids("<|endoftext|>") == 0
    for text in (docs[0].text[:300], "naïve — unseen 字 text"):
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
    with pytest.raises(InvalidInputError, match="vocab_size"):
        train_tokenizer(["x"], vocab_size=10)


def test_near_duplicates_stay_on_one_side_of_a_split():
    from memstore.data.text import Document, near_duplicate_groups, split_documents

    rng = np.random.default_rng(0)
    words = [" ".join(f"w{i}" for i in rng.integers(0, 10_000, 200)) for _ in range(40)]
    docs = [Document(str(i), w) for i, w in enumerate(words)]
    docs.append(Document("update-of-3", "Update: " + words[3][:600] + " more news"))  # shares ~100 runs
    docs.append(Document("update-of-update", docs[-1].text + " even more"))  # grouped through it
    groups = near_duplicate_groups(docs)
    assert groups[3] == groups[40] == groups[41] and len(set(groups)) == 40
    side = {d.name: s for s in ("train", "validation", "test") for d in split_documents(docs, s, seed=1)}
    assert len(side) == 42 and side["3"] == side["update-of-3"] == side["update-of-update"]


def test_lee_news_split_keeps_its_near_duplicates_together():
    pytest.importorskip("gensim")
    from memstore.data import load_lee_news
    from memstore.data.text import near_duplicate_groups

    docs = load_lee_news("all")
    assert len(docs) == 343 and len({d.text for d in docs}) == 343
    groups = near_duplicate_groups(docs)
    side = {d.name: s for s in ("train", "validation", "test") for d in load_lee_news(s)}
    assert len(side) == 343
    by_group = {}
    for d, g in zip(docs, groups):
        by_group.setdefault(g, set()).add(side[d.name])
    assert all(len(sides) == 1 for sides in by_group.values())
    assert any(groups.count(g) > 1 for g in set(groups))  # the corpus has re-filed stories


def test_wikipedia_sample_is_plain_prose_split_by_article():
    pytest.importorskip("gensim")
    from memstore.data import load_wikipedia_sample

    docs = load_wikipedia_sample("all")
    assert len(docs) == 106 and sum(len(d.text) for d in docs) > 3_000_000
    text = next(d.text for d in docs if d.name == "wikipedia/Algorithm")
    assert "'''algorithm'''" in text and "[[" not in text and "{{" not in text  # links and templates gone
    names = [{d.name for d in load_wikipedia_sample(s)} for s in ("train", "validation", "test")]
    assert sum(map(len, names)) == 106 and not (names[0] & names[2] or names[1] & names[2])
