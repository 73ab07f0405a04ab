"""add_images: encode, store with provenance, and refuse bad input before encoding anything."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import memstore
from memstore.encoders import TorchEncoder
from memstore.errors import DimensionMismatchError, InvalidInputError
from memstore.images import image_hashes


class CountingEncoder(TorchEncoder):
    """Flattens 4x4 images (grayscale made RGB) to 48-d vectors; counts the images it encoded."""

    def __init__(self, dim=48):
        super().__init__(torch.nn.Flatten(), dim=dim, name="test/flatten", device="cpu")
        self.encoded = 0

    def encode(self, inputs, batch_size=64, progress=None):
        out = super().encode(inputs, batch_size=batch_size, progress=progress)
        self.encoded += len(out)
        return out


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, (10, 4, 4), dtype=np.uint8)


def test_add_images_stores_vectors_and_provenance(mem, images):
    enc = CountingEncoder()
    res = mem.add_images(images, ["a", "b"] * 5, encoder=enc, provenance={"split": "train"})
    assert res.rows == 10 and enc.encoded == 10
    rows = mem.sql("SELECT id, label, split, encoder, content_hash FROM samples ORDER BY id").df()
    assert rows.encoder.unique().tolist() == ["test/flatten"] and rows.split.unique().tolist() == ["train"]
    assert rows.content_hash.tolist() == image_hashes(images)
    np.testing.assert_allclose(mem.samples.vectors, np.tile(images.reshape(10, 16) / 255, 3), atol=1e-6)
    assert "encoded by test/flatten" in mem.versions()["message"][-1].as_py()


def test_a_dataset_brings_its_labels_uris_and_split(mem, images):
    data = SimpleNamespace(images=images, labels=np.arange(10) % 3, class_names=["x", "y", "z"],
                           uris=[f"toy/train/{i}" for i in range(10)], name="toy", split="train")
    mem.add_images(data, encoder=CountingEncoder())
    got = mem.sql("SELECT label, uri, dataset, split FROM samples ORDER BY id LIMIT 4").fetchall()
    assert got == [("x", "toy/train/0", "toy", "train"), ("y", "toy/train/1", "toy", "train"),
                   ("z", "toy/train/2", "toy", "train"), ("x", "toy/train/3", "toy", "train")]


def test_duplicate_images_share_a_content_hash(mem, images):
    mem.add_images(np.concatenate([images, images[:2]]), ["a"] * 12, encoder=CountingEncoder())
    dups = mem.sql("SELECT content_hash, count(*) AS n FROM samples GROUP BY 1 HAVING n > 1").fetchall()
    assert len(dups) == 2


def test_file_paths_become_uris(mem, tmp_path, images):
    from PIL import Image

    paths = []
    for i, image in enumerate(images[:3]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    enc = TorchEncoder(torch.nn.Flatten(), dim=48, name="test/flatten-rgb", device="cpu")
    mem.add_images(paths, ["a", "b", "c"], encoder=enc)
    assert mem.sql("SELECT uri FROM samples ORDER BY id").df().uri.tolist() == paths


@pytest.mark.parametrize("labels, match", [(["a"] * 9, "10 images but 9 labels"), (None, "needs labels")])
def test_bad_labels_are_refused_before_encoding(mem, images, labels, match):
    enc = CountingEncoder()
    with pytest.raises(InvalidInputError, match=match):
        mem.add_images(images, labels, encoder=enc)
    assert enc.encoded == 0 and mem.version == 0


def test_an_encoder_of_another_dimension_is_refused_before_encoding(mem, images):
    mem.add(np.ones((1, 8), np.float32), ["a"])
    enc = CountingEncoder()
    with pytest.raises(DimensionMismatchError, match="48-d vectors but this memory holds 8-d"):
        mem.add_images(images, ["a"] * 10, encoder=enc)
    assert enc.encoded == 0 and mem.version == 1


def test_a_pinned_memory_refuses_images(mem, images):
    mem.add_images(images, ["a"] * 10, encoder=CountingEncoder())
    with pytest.raises(memstore.ReadOnlyError):
        mem.at(1).add_images(images, ["a"] * 10, encoder=CountingEncoder())
