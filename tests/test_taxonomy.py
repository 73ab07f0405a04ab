"""Label granularity: a versioned hierarchy, SQL over it, predictions at any level."""

import numpy as np
import pyarrow as pa
import pytest

import memstore
from memstore.errors import InvalidInputError
from memstore.taxonomy import labels_at_level, taxonomy_table

PARENTS = {"footwear": None, "tops": None, "sneaker": "footwear", "sandal": "footwear",
           "shirt": "tops", "coat": "tops"}


@pytest.fixture
def clothes(mem, rng):
    """Four fine classes in two coarse groups; the groups far apart, the classes close."""
    centres = {"sneaker": [5, 0, 1], "sandal": [5, 0, -1], "shirt": [-5, 0, 1], "coat": [-5, 0, -1]}
    names = np.array(list(centres))[rng.integers(0, 4, 400)]
    x = (np.array([centres[n] for n in names]) + rng.normal(0, 0.5, (400, 3))).astype(np.float32)
    mem.add(x[:300], names[:300], provenance={"uri": [f"u{i}" for i in range(300)]})
    mem.x, mem.names, mem.q, mem.q_names = x[:300], names[:300], x[300:], names[300:]
    return mem


def test_levels_from_parents():
    t = taxonomy_table({"a": None, "b": "a", "c": "b", "d": "a"}, names={"a": "Animal"})
    assert dict(zip(t["node"].to_pylist(), t["level"].to_pylist())) == {"a": 0, "b": 1, "c": 2, "d": 1}
    assert t["name"].to_pylist()[0] == "Animal"
    labels = pa.array(["c", "d", "b"])
    assert labels_at_level(t, labels, 1).to_pylist() == ["b", "d", "b"]
    assert labels_at_level(t, labels, 2).to_pylist() == ["c", "d", "b"]  # above the level: unchanged


@pytest.mark.parametrize("parents, match", [
    ({"a": "b", "b": "a"}, "cycle: a -> b -> a"),
    ({"a": None, "b": "c", "c": "b"}, "cycle"),
    ({"a": None, "b": "zebra"}, "not nodes of the taxonomy"),
    ({}, "no nodes"),
    ({"": None}, "non-empty strings"),
    ({"node": ["a", "a"], "parent": [None, None]}, "more than once"),
    ({"node": ["a"]}, "lacks column"),
])
def test_bad_taxonomies_are_refused(parents, match):
    with pytest.raises(InvalidInputError, match=match):
        taxonomy_table(parents)


def test_set_taxonomy_is_versioned_and_queryable(clothes):
    mem = clothes
    res = mem.set_taxonomy(PARENTS, names={"tops": "Tops"})
    assert res.version == 2 and res.rows == 6
    by_coarse = mem.sql("SELECT t.parent AS coarse, count(*) AS n FROM samples s "
                        "JOIN taxonomy t ON t.node = s.label GROUP BY 1 ORDER BY 1").fetchall()
    assert by_coarse == [("footwear", int(np.isin(mem.names, ["sneaker", "sandal"]).sum())),
                         ("tops", int(np.isin(mem.names, ["shirt", "coat"]).sum()))]
    assert mem.at(1).taxonomy().num_rows == 0
    mem.set_taxonomy({**PARENTS, "clothing": None, "footwear": "clothing", "tops": "clothing"})
    assert mem.taxonomy().num_rows == 7 and mem.at(2).taxonomy().num_rows == 6
    assert mem.sql("SELECT max(level) FROM taxonomy").fetchall() == [(2,)]


def test_bad_taxonomy_or_missing_labels_change_nothing(clothes):
    mem = clothes
    with pytest.raises(InvalidInputError, match="cycle"):
        mem.set_taxonomy({"sneaker": "sandal", "sandal": "sneaker", "shirt": None, "coat": None})
    with pytest.raises(InvalidInputError, match=r"\['coat'\]"):
        mem.set_taxonomy({k: v for k, v in PARENTS.items() if k != "coat"})
    assert mem.version == 1 and mem.taxonomy().num_rows == 0


def test_predict_at_each_level(clothes):
    mem = clothes
    mem.set_taxonomy(PARENTS)
    coarse = memstore.KNNClassifier(k=5, level=0).fit(mem)
    fine = memstore.KNNClassifier(k=5, level=1).fit(mem)
    want_coarse = np.array([PARENTS[n] for n in mem.q_names])
    assert (coarse.predict(mem.q) == want_coarse).mean() == 1.0
    assert sorted(coarse.classes_) == ["footwear", "tops"]
    assert (fine.predict(mem.q) == mem.q_names).mean() > 0.9
    e = coarse.explain(mem.q[:1]).to_pylist()
    assert all(PARENTS[r["row_label"]] == r["label"] for r in e)
    with pytest.raises(InvalidInputError, match=r"levels are \[0, 1\]"):
        memstore.KNNClassifier(k=5, level=2).fit(mem)
    with pytest.raises(InvalidInputError, match="needs a memory with a taxonomy"):
        memstore.KNNClassifier(k=5, level=0).fit(mem.x, mem.names)


def test_refining_coarse_labels_by_sql_raises_fine_accuracy_and_keeps_coarse(clothes):
    mem = clothes
    mem.set_taxonomy(PARENTS)
    # start coarse: every row knows only its group
    mem.relabel("SELECT s.id, t.parent AS label FROM samples s JOIN taxonomy t ON t.node = s.label")
    fine_truth = pa.table({"uri": [f"u{i}" for i in range(300)], "fine": mem.names})

    def accuracy(level, truth):
        return (memstore.KNNClassifier(k=5, level=level).fit(mem).predict(mem.q) == truth).mean()

    want_coarse = np.array([PARENTS[n] for n in mem.q_names])
    before = accuracy(1, mem.q_names), accuracy(0, want_coarse)
    mem.relabel("SELECT s.id, f.fine AS label FROM samples s JOIN f USING (uri) WHERE s.label = 'footwear'",
                tables={"f": fine_truth}, message="refine footwear")
    after = accuracy(1, mem.q_names), accuracy(0, want_coarse)
    assert before[0] == 0 and after[0] > 0.4  # footwear queries now get fine answers
    assert before[1] == after[1] == 1.0
