"""Thumbnails: kept by add_images, erased by forget, and looked for by forget's proof."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import memstore
from memstore.encoders import TorchEncoder
from memstore.errors import ForgetError, InvalidInputError
from memstore.forget import PENDING_DIR, blob_needles, find_bytes
from memstore.thumbnails import THUMBNAIL_COLUMN


class Flatten(TorchEncoder):
    def __init__(self, side=16):
        super().__init__(torch.nn.Flatten(), dim=3 * side * side, name="test/flatten", device="cpu")


def files_holding(root: Path, blobs: list) -> dict[int, list[str]]:
    """An independent, exhaustive check: every file, plain ``bytes.find``."""
    contents = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return {i: [str(p) for p, data in contents.items() if blob in data]
            for i, blob in enumerate(blobs) if any(blob in data for data in contents.values())}


@pytest.fixture
def pictures(rng):
    """40 images of 16 x 16: smooth shapes in noise, as unlike each other as photos are."""
    yy, xx = np.mgrid[:16, :16]
    images = []
    for i in range(40):
        blob = ((yy - rng.uniform(4, 12)) ** 2 + (xx - rng.uniform(4, 12)) ** 2 < rng.uniform(9, 30)) * 200
        images.append(np.clip(blob + rng.integers(0, 50, (16, 16)), 0, 255).astype(np.uint8))
    return np.stack(images)


@pytest.fixture
def pictured(tmp_path, pictures):
    mem = memstore.open(tmp_path / "p.mem")
    mem.add_images(pictures, np.arange(40) % 4, encoder=Flatten())
    return mem


def thumbnails(mem, ids) -> list[bytes]:
    where = ", ".join(map(str, ids))
    return [r[0] for r in mem.sql(f"SELECT thumbnail FROM samples WHERE id IN ({where}) ORDER BY id").fetchall()]


def test_add_images_keeps_a_small_thumbnail_of_each_image(pictured, pictures):
    blobs = thumbnails(pictured, range(40))
    assert all(b[:4] == b"RIFF" and b[8:12] == b"WEBP" for b in blobs)
    shown = np.asarray(Image.open(io.BytesIO(blobs[3])).convert("L"), np.float32)
    assert shown.shape == (16, 16)  # never enlarged
    assert np.abs(shown - pictures[3]).mean() < 12  # the picture, lossy but close
    assert max(map(len, blobs)) < 1000


def test_large_images_are_shrunk_to_the_size_asked(tmp_path, rng):
    mem = memstore.open(tmp_path / "big.mem")
    big = rng.integers(0, 256, (2, 100, 50, 3), dtype=np.uint8)
    encoder = TorchEncoder(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten()), dim=12,
                           name="test/pool", device="cpu")
    mem.add_images(big, ["a", "b"], encoder=encoder, thumbnails=32)
    image = Image.open(io.BytesIO(thumbnails(mem, [0])[0]))
    assert image.size == (16, 32) and image.mode == "RGB"  # longer side 32, aspect kept


def test_thumbnails_none_keeps_none(tmp_path, pictures):
    mem = memstore.open(tmp_path / "none.mem")
    mem.add_images(pictures[:3], [0, 1, 2], encoder=Flatten(), thumbnails=None)
    assert THUMBNAIL_COLUMN not in mem.sql("SELECT * FROM samples LIMIT 1").columns


@pytest.mark.parametrize("bad", [0, 4, 1024, 64.0, "64", True])
def test_a_bad_thumbnail_size_is_refused_before_encoding(mem, pictures, bad):
    with pytest.raises(InvalidInputError, match="thumbnails must be a size in pixels"):
        mem.add_images(pictures[:2], [0, 1], encoder=Flatten(), thumbnails=bad)
    assert mem.version == 0


def test_the_files_hold_thumbnails_as_they_are_so_the_scan_can_find_them(pictured):
    """The positive control of the proof: were the column compressed, the scan would find nothing."""
    blobs = thumbnails(pictured, range(40))
    hits, _, skipped = find_bytes(pictured.path, *blob_needles(blobs))
    assert skipped == 0 and {row for _, _, row in hits} == set(range(40))


def test_forget_erases_the_thumbnails_of_its_rows_from_every_file(pictured):
    pictured.add_images(np.zeros((1, 16, 16), np.uint8) + 7, [9], encoder=Flatten())  # a second version
    gone = thumbnails(pictured, [3, 17, 40])
    kept = thumbnails(pictured, [4, 18])
    report = pictured.forget([3, 17, 40])
    assert report.thumbnails == 3
    assert files_holding(pictured.path, gone) == {}
    assert set(files_holding(pictured.path, kept)) == {0, 1}
    assert thumbnails(pictured.at(1), [4]) == kept[:1]  # earlier versions keep their other rows' thumbnails


def test_a_thumbnail_left_in_a_file_makes_forget_fail_loudly(pictured):
    stray = thumbnails(pictured, [5])[0]
    (pictured.path / "stray-thumbnail.webp").write_bytes(stray)
    with pytest.raises(ForgetError, match=r"1 forgotten thumbnail\(s\).*stray-thumbnail.webp"):
        pictured.forget([5, 6])
    assert not {5, 6} & set(pictured.samples.ids)


def test_a_duplicate_image_kept_is_reported_as_still_held(tmp_path, pictures):
    mem = memstore.open(tmp_path / "dup.mem")
    mem.add_images(np.concatenate([pictures[:5], pictures[:1]]), [0, 1, 2, 3, 4, 0], encoder=Flatten())
    report = mem.forget([0])  # row 5 is the same image: same vector, same thumbnail
    assert report.still_held == 2 and len(mem) == 5


def test_a_forget_stopped_after_its_commit_still_checks_its_thumbnails(pictured, monkeypatch):
    stray = thumbnails(pictured, [8])[0]
    monkeypatch.setattr(type(pictured._store), "cleanup", lambda store, head: (_ for _ in ()).throw(
        OSError("killed before the cleanup")))
    with pytest.raises(OSError, match="killed"):
        pictured.forget([8])
    monkeypatch.undo()
    assert (pictured.path / PENDING_DIR).is_dir()
    (pictured.path / "stray-thumbnail.webp").write_bytes(stray)
    with pytest.raises(ForgetError, match="thumbnail"):
        memstore.open(pictured.path)  # finishes the forget: its proof looks for the thumbnail too
