"""Damage is reported, never healed by dropping data: CorruptMemoryError names the file.

Each test damages a memory the way a disk, a user or a bad copy would, and
checks that opening, writing or ``check()`` says so, and that nothing is
created or changed in its place.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

import memstore
from memstore.check import DAMAGE_FILE


@pytest.fixture
def damaged(tmp_path, rng):
    """A memory of 3 versions: add, reweight, prune."""
    path = tmp_path / "d.mem"
    mem = memstore.open(path)
    mem.add(rng.standard_normal((200, 16)).astype("f4"), np.array(list("abcd"))[np.arange(200) % 4])
    mem.reweight("SELECT id, 0.5 AS weight FROM samples WHERE id < 50", message="committed reweight")
    mem.prune("SELECT id FROM samples WHERE id >= 190")
    return path


def newest_manifest(table_dir: Path) -> Path:
    """The manifest of a Lance table's newest version (Lance names them u64::MAX - version)."""
    manifests = list((table_dir / "_versions").glob("*.manifest"))
    numbers = {p: int(p.stem) for p in manifests}
    inverted = min(numbers.values()) > 1 << 63
    return (min if inverted else max)(manifests, key=numbers.get)


def test_a_missing_newest_audit_manifest_is_damage_not_an_older_version(damaged):
    newest_manifest(damaged / "tables" / "audit.lance").unlink()
    with pytest.raises(memstore.CorruptMemoryError, match="audit"):
        memstore.open(damaged)
    with pytest.raises(memstore.CorruptMemoryError):
        memstore.open(damaged, read_only=True)


def test_a_missing_manifest_of_a_committed_table_version_is_damage(damaged):
    newest_manifest(damaged / "tables" / "sample_state.lance").unlink()
    with pytest.raises(memstore.CorruptMemoryError, match="sample_state"):
        memstore.open(damaged)


def test_a_memory_that_lost_its_tables_is_not_opened_as_a_new_one(damaged):
    shutil.rmtree(damaged / "tables")
    for create in (True, False):
        with pytest.raises(memstore.CorruptMemoryError, match="audit table is missing"):
            memstore.open(damaged, create=create)
    assert not (damaged / "tables").exists() or not any((damaged / "tables").iterdir())


def test_an_unreadable_head_record_is_damage(damaged):
    (damaged / "head.json").write_text("{not json")
    with pytest.raises(memstore.CorruptMemoryError, match="head.json"):
        memstore.open(damaged)


def test_opening_never_creates_unless_asked(tmp_path):
    with pytest.raises(memstore.MemoryNotFoundError, match="memstore init"):
        memstore.open(tmp_path / "a" / "typo.mem", create=False)
    with pytest.raises(memstore.MemoryNotFoundError):
        memstore.open(tmp_path / "b.mem", read_only=True)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b.mem").exists()


def flip_bytes(path: Path, n: int = 64) -> bytes:
    raw = bytearray(path.read_bytes())
    at = len(raw) // 3
    before = bytes(raw)
    raw[at:at + n] = bytes(b ^ 0xFF for b in raw[at:at + n])
    path.write_bytes(bytes(raw))
    return before


def data_files(path: Path, table: str) -> list[Path]:
    return sorted((path / "tables" / f"{table}.lance" / "data").glob("*.lance"))


def test_check_finds_flipped_bytes_names_the_file_and_blocks_writes(damaged, rng):
    mem = memstore.open(damaged)
    assert mem.check().problems == []
    target = max(data_files(damaged, "sample_data"), key=lambda p: p.stat().st_size)
    original = flip_bytes(target)
    with pytest.raises(memstore.CorruptMemoryError, match=target.name):
        mem.check()
    assert (damaged / DAMAGE_FILE).exists()
    with pytest.raises(memstore.CorruptMemoryError, match="takes no writes"):
        mem.add(rng.standard_normal((1, 16)).astype("f4"), ["a"])
    assert memstore.open(damaged, read_only=True).version == 3  # still readable, unchanged
    target.write_bytes(original)  # restored from a backup
    assert memstore.open(damaged).check().problems == []
    assert not (damaged / DAMAGE_FILE).exists()
    assert mem.add(rng.standard_normal((1, 16)).astype("f4"), ["a"]).version == 4


def test_check_finds_a_missing_data_file(damaged):
    data_files(damaged, "sample_state")[0].unlink()
    with pytest.raises(memstore.CorruptMemoryError, match="missing|cannot be read"):
        memstore.open(damaged).check()


def test_check_passes_after_every_kind_of_write(damaged, rng):
    mem = memstore.open(damaged)
    mem.relabel("SELECT id, 'e' AS label FROM samples WHERE id % 10 = 0")
    mem.set_taxonomy({"root": None, **{c: "root" for c in "abcde"}})
    mem.tag("t")
    mem.restore(1)
    mem.estimate_quality(k=5)
    mem.add(rng.standard_normal((300, 16)).astype("f4"), "a")
    mem.create_index("IVF_FLAT", num_partitions=4, sample=20)
    mem.forget("SELECT id FROM samples WHERE id % 9 = 4")
    report = mem.check()
    assert report.problems == [] and report.unrecorded == 0 and report.rows == len(mem)
    assert report.files_verified >= 4


def test_check_finds_a_broken_interval(damaged):
    """Structure, not bytes: a state row whose interval is reversed (written with valid checksums)."""
    mem = memstore.open(damaged)
    table = mem._store.open_table("sample_state")
    table.update(where="id = 5 AND valid_to IS NOT NULL", values={"valid_to": 0})
    from memstore.versioning import Store

    store = Store(damaged)
    head = store.head()
    head = type(head)(**{**head.__dict__, "lance_versions": {**head.lance_versions,
                                                              "sample_state": table.version}})
    from memstore.check import check

    with pytest.raises(memstore.CorruptMemoryError, match="end before they begin|overlap"):
        check(store, head)
