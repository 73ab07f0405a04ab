"""Schema migrations: older memories are upgraded, newer ones refused."""

import numpy as np
import pytest

import memstore
from memstore import migrations
from memstore.memory import Memory
from memstore.versioning import Store


def _memory_at_schema(path, schema_version):
    Store.write_marker(path)
    store = Store(path)
    migrations.create(store, upto=schema_version)
    return Memory(store, store.head())


def test_migrations_are_numbered_from_0001():
    names = [m.name for m in migrations.all_migrations()]
    assert names[:4] == ["0001_initial", "0002_taxonomy", "0003_quality", "0004_checksums"]
    assert migrations.latest_schema_version() == len(names)


def test_new_memory_is_at_the_latest_schema(mem):
    assert mem.audit()["schema_version"].to_pylist() == [migrations.latest_schema_version()]


def test_memory_made_at_schema_0001_is_migrated_on_open(tmp_path, rng):
    path = tmp_path / "old.mem"
    old = _memory_at_schema(path, 1)
    x = rng.standard_normal((10, 4)).astype(np.float32)
    old.add(x, list("abcdeabcde"), message="made by schema 1")
    old.reweight("SELECT id, 0.5 AS weight FROM samples WHERE id < 3")
    assert old.sql("SELECT count(*) FROM taxonomy").fetchall() == [(0,)]  # no table yet: empty view
    assert old._head.schema_version == 1

    mem = memstore.open(path)
    audit = mem.audit().to_pylist()
    assert [(a["operation"], a["message"], a["schema_version"]) for a in audit[-3:]] == [
        ("migrate", "0002_taxonomy", 2), ("migrate", "0003_quality", 3), ("migrate", "0004_checksums", 4)]
    assert mem.version == 5 and len(mem) == 10
    assert mem.check().unrecorded == 0  # 0004 recorded the files that were there
    assert mem.sql("SELECT sum(weight) FROM samples").fetchall()[0][0] == pytest.approx(8.5)
    assert "taxonomy" in mem._head.lance_versions
    # versions made before the migration still read as they were
    assert mem.at(1).sql("SELECT count(*) FROM samples WHERE weight < 1").fetchall() == [(0,)]
    assert mem.at(2).sql("SELECT count(*) FROM samples WHERE weight < 1").fetchall() == [(3,)]
    # opening again applies nothing twice
    assert memstore.open(path).version == 5


def test_memory_made_before_wrong_count_gets_the_column(tmp_path, rng):
    path = tmp_path / "old.mem"
    old = _memory_at_schema(path, 2)
    old.add(rng.standard_normal((6, 4)).astype(np.float32), list("ababab"))
    with old._store.transaction() as tx:  # the state table as schema 2 wrote it
        tx.table("sample_state").drop_columns(["wrong_count"])
        tx.commit("test", "state table of schema 2", rows_affected=0)
    ro = memstore.open(path, read_only=True)
    assert "wrong_count" not in ro.sql("SELECT * FROM samples").columns  # readable unmigrated

    mem = memstore.open(path)
    assert mem.audit()["message"].to_pylist()[-2:] == ["0003_quality", "0004_checksums"]
    assert mem.sql("SELECT count(*) FROM samples WHERE wrong_count IS NULL").fetchall() == [(6,)]
    mem.estimate_quality(k=2)
    assert mem.sql("SELECT count(*) FROM samples WHERE wrong_count IS NULL").fetchall() == [(0,)]
    assert mem.at(1).sql("SELECT count(*) FROM samples WHERE wrong_count IS NULL").fetchall() == [(6,)]


def test_read_only_open_does_not_migrate(tmp_path, rng):
    path = tmp_path / "old.mem"
    _memory_at_schema(path, 1)
    mem = memstore.open(path, read_only=True)
    assert mem.version == 0 and mem._head.schema_version == 1


def test_memory_from_a_newer_memstore_is_refused(mem):
    with mem._store.transaction() as tx:
        tx.commit("migrate", "9999_future", rows_affected=0, schema_version=99)
    with pytest.raises(memstore.SchemaVersionError, match=r"schema version 99.*up to 4.*Upgrade"):
        memstore.open(mem.path)
