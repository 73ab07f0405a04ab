"""Behaviour of a memory: add, versions, time travel, prune, reweight, relabel."""

import numpy as np
import pyarrow as pa
import pytest

import memstore


def rows(mem, cols="id, label, weight"):
    return mem.sql(f"SELECT {cols} FROM samples ORDER BY id").fetchall()


def test_new_memory_is_version_zero_and_empty(mem):
    assert mem.version == 0
    assert len(mem) == 0
    assert mem.dim is None
    assert mem.versions()["operation"].to_pylist() == ["init"]
    assert mem.sql("SELECT count(*) FROM samples").fetchall()[0] == (0,)


def test_add_assigns_increasing_ids_and_one_version_per_call(mem, rng):
    r1 = mem.add(rng.standard_normal((3, 4)), ["x", "y", "x"])
    r2 = mem.add(rng.standard_normal((2, 4)), ["y", "y"], message="more")
    assert (r1.version, r2.version) == (1, 2)
    assert r1.ids.tolist() == [0, 1, 2] and r2.ids.tolist() == [3, 4]
    assert mem.version == 2 and len(mem) == 5 and mem.dim == 4
    v = mem.versions()
    assert v["rows"].to_pylist() == [0, 3, 5]
    assert v["message"].to_pylist()[-1] == "more"


def test_vectors_round_trip_exactly(filled):
    got = filled.sql("SELECT vector FROM samples ORDER BY id").to_arrow_table()["vector"]
    np.testing.assert_array_equal(np.stack(got.to_numpy(zero_copy_only=False)), filled.x)


def test_provenance_columns_and_defaults(filled):
    row = filled.sql("SELECT uri, split, dataset, content_hash, added_at, weight FROM samples "
                     "WHERE id = 81").fetchall()[0]
    assert row[0] == "img/81.png" and row[1] == "val" and row[2] is None
    assert len(row[3]) == 32 and row[4] is not None and row[5] == 1.0
    # the default content hash is of the vector bytes: equal vectors, equal hashes
    filled.add(filled.x[:1], ["a"])
    hashes = filled.sql("SELECT content_hash FROM samples WHERE id IN (0, 100)").fetchall()
    assert hashes[0] == hashes[1]


def test_extra_columns_are_kept_and_can_arrive_later(mem, rng):
    mem.add(rng.standard_normal((2, 3)), [1, 2], provenance={"annotator": ["ann", "bob"]})
    mem.add(rng.standard_normal((1, 3)), [3], provenance={"camera": ["c9"]})
    got = mem.sql("SELECT id, label, annotator, camera FROM samples ORDER BY id").fetchall()
    assert got == [(0, 1, "ann", None), (1, 2, "bob", None), (2, 3, None, "c9")]


def test_arrow_table_numpy_and_torch_inputs(mem, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((4, 5)).astype(np.float32)
    table = pa.table({
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 5),
        "label": ["p", "q", "p", "q"],
        "weight": [1.0, 0.5, 1.0, 0.5],
        "uri": [f"u{i}" for i in range(4)],
    })
    mem.add(table)
    mem.add(torch.from_numpy(x), torch.tensor([0, 1, 0, 1]).numpy().astype(str))
    mem.add(x.astype(np.float64), "p")  # one label for all, float64 cast to float32
    assert len(mem) == 12
    assert mem.sql("SELECT sum(weight) FROM samples").fetchall()[0][0] == pytest.approx(11.0)
    assert mem.sql("SELECT uri FROM samples WHERE id = 2").fetchall()[0] == ("u2",)


def test_integer_labels_such_as_token_ids(mem, rng):
    mem.add(rng.standard_normal((3, 2)), np.array([50256, 11, 11]))
    assert mem.label_type == pa.int64()
    assert mem.sql("SELECT label, count(*) FROM samples GROUP BY 1 ORDER BY 1").fetchall() == [(11, 2), (50256, 1)]


def test_large_add_streams_in_batches_as_one_version(mem, rng):
    x = rng.standard_normal((5000, 16)).astype(np.float32)
    res = mem.add(x, np.arange(5000) % 7, batch_size=512)
    assert res.version == 1 and len(mem) == 5000
    assert len(mem.versions()) == 2


def test_prune_by_sql_keeps_earlier_versions(filled):
    res = filled.prune("SELECT id FROM samples WHERE split = 'val'", message="drop val")
    assert res.rows == 20 and len(filled) == 80
    assert len(filled.at(1)) == 100
    audit = filled.audit().to_pylist()[-1]
    assert audit["operation"] == "prune" and audit["rows_affected"] == 20
    assert audit["sql"] == "SELECT id FROM samples WHERE split = 'val'" and audit["message"] == "drop val"


def test_reweight_and_relabel(filled):
    filled.reweight("SELECT id, 0.25 AS weight FROM samples WHERE label = 'a'")
    filled.relabel("SELECT id, 'A' AS label FROM samples WHERE label = 'a'")
    got = filled.sql("SELECT label, count(*), min(weight), max(weight) FROM samples "
                     "GROUP BY label ORDER BY label").fetchall()
    assert got[0] == ("A", 25, 0.25, 0.25)
    assert filled.at(1).sql("SELECT count(*) FROM samples WHERE label = 'A'").fetchall()[0] == (0,)
    assert filled.at(2).sql("SELECT max(weight) FROM samples WHERE label = 'a'").fetchall()[0] == (0.25,)


def test_reweight_from_arrow_table(filled):
    filled.reweight(pa.table({"id": [0, 1], "weight": [0.0, 2.0]}))
    assert rows(filled)[:2] == [(0, "a", 0.0), (1, "b", 2.0)]


def test_pinned_version_never_sees_later_writes(filled):
    old = filled.at(1)
    before = rows(old)
    filled.prune("SELECT id FROM samples WHERE id < 50")
    filled.reweight("SELECT id, 0.1 AS weight FROM samples")
    assert rows(old) == before
    assert rows(filled.at(1)) == before


def test_tag_and_restore_bring_back_a_version(filled):
    filled.tag("clean")
    filled.prune("SELECT id FROM samples WHERE label = 'b'")
    filled.reweight("SELECT id, 0.5 AS weight FROM samples WHERE label = 'c'")
    filled.relabel("SELECT id, 'z' AS label FROM samples WHERE label = 'd'")
    res = filled.restore("clean")
    assert res.version == 5
    assert rows(filled) == rows(filled.at("clean"))
    assert len(filled) == 100
    # the versions in between are still there
    assert filled.at(2).sql("SELECT count(*) FROM samples").fetchall()[0] == (75,)
    assert filled.at(4).sql("SELECT count(*) FROM samples WHERE label = 'z'").fetchall()[0] == (25,)
    assert filled.versions()["operation"].to_pylist()[-1] == "restore"


def test_restore_then_change_again(filled):
    filled.prune("SELECT id FROM samples WHERE id >= 10")
    filled.restore(1)
    filled.reweight("SELECT id, 3.0 AS weight FROM samples WHERE id = 50")
    assert len(filled) == 100
    assert filled.sql("SELECT weight FROM samples WHERE id = 50").fetchall()[0] == (3.0,)
    assert len(filled.at(2)) == 10


def test_ids_are_never_reused(filled, rng):
    filled.prune("SELECT id FROM samples WHERE id >= 90")
    res = filled.add(rng.standard_normal((2, 8)), ["a", "b"])
    assert res.ids.tolist() == [100, 101]


def test_prediction_inputs_are_identical_at_a_pinned_version(filled):
    """What a head reads at version v (vectors, labels, weights) is the same after later writes."""
    q = "SELECT id, label, weight, vector FROM samples ORDER BY id"
    before = filled.at(1).sql(q).to_arrow_table()
    filled.reweight("SELECT id, 0.0 AS weight FROM samples")
    assert filled.at(1).sql(q).to_arrow_table().equals(before)


def test_two_handles_and_refresh(tmp_path, rng):
    a = memstore.open(tmp_path / "m")
    b = memstore.open(tmp_path / "m")
    a.add(rng.standard_normal((2, 3)), ["x", "y"])
    assert b.version == 0  # a handle reads its own view until refreshed
    assert b.refresh().version == 1
    b.add(rng.standard_normal((1, 3)), ["x"])  # a write always starts from the newest head
    assert a.refresh().version == 2 and len(a) == 3


def test_info(filled):
    info = filled.info()
    assert info["rows"] == 100 and info["dim"] == 8 and info["labels"] == 4
    assert info["versions"] == 2 and info["bytes_on_disk"] > 100 * 8 * 4


# -- take: rows by id -----------------------------------------------------------------
def test_take_reads_rows_by_id_in_the_order_given_as_sql_would(filled):
    filled.relabel("SELECT id, 'z' AS label FROM samples WHERE id IN (7, 9)")
    got = filled.take([9, 3, 7])
    want = filled.sql("SELECT * EXCLUDE (vector) FROM samples WHERE id IN (3, 7, 9)").to_arrow_table()
    want = {r["id"]: r for r in want.to_pylist()}
    assert got.to_pylist() == [want[9], want[3], want[7]]
    assert got["label"].to_pylist() == ["z", "d", "z"]
    vectors = filled.take([5, 2], ["vector"])
    np.testing.assert_array_equal(np.stack(vectors["vector"].to_numpy(zero_copy_only=False)), filled.x[[5, 2]])
    assert filled.take([4, 4], ["uri"])["uri"].to_pylist() == ["img/4.png", "img/4.png"]


def test_take_reads_the_version_it_is_at(filled):
    filled.prune(np.array([11]))
    with pytest.raises(memstore.UnknownIdsError, match=r"\[11\]"):
        filled.take([10, 11])
    assert filled.at(1).take([11], ["label", "split"]).to_pylist() == [{"id": 11, "label": "d", "split": "train"}]


def test_take_names_the_columns_it_has(filled):
    with pytest.raises(memstore.InvalidInputError, match="cannot take columns \\['nope'\\].*'uri'"):
        filled.take([1], ["nope"])
    with pytest.raises(memstore.UnknownIdsError, match="1000"):
        filled.take([1000])


def test_take_of_many_ids_after_a_full_read_gives_the_same_rows(filled):
    ids = np.arange(99, -1, -1)
    filled.samples  # the whole state is read: take filters it instead of reading rows again
    assert filled.take(ids, ["label"])["label"].to_pylist() == [r[0] for r in filled.sql(
        "SELECT label FROM samples ORDER BY id DESC").fetchall()]


def test_a_table_made_again_after_a_rollback_reads_its_new_rows(tmp_path, monkeypatch):
    """A store's datasets share one Lance session; a table recovery dropped and a write made again
    (same name, same Lance version numbers, same sizes) must not be served from what it cached."""
    import memstore.optimize as maintenance

    mem = memstore.open(tmp_path / "m.mem")
    real = maintenance.maintain

    def read_then_fail(tx):
        for name in ("sample_data", "sample_state"):
            tx.store.dataset(name).to_table()  # the session now holds the doomed tables' manifests
        raise RuntimeError("injected before the commit")

    monkeypatch.setattr(maintenance, "maintain", read_then_fail)
    with pytest.raises(RuntimeError):
        mem.add(np.ones((3, 4), np.float32), [0, 1, 2])
    monkeypatch.setattr(maintenance, "maintain", real)
    mem.add(np.full((3, 4), 7, np.float32), [5, 6, 7])
    assert mem.samples.labels.to_pylist() == [5, 6, 7]
    np.testing.assert_array_equal(mem.samples.vectors, np.full((3, 4), 7, np.float32))
    np.testing.assert_array_equal(memstore.open(tmp_path / "m.mem").samples.vectors, np.full((3, 4), 7, np.float32))
