"""The memstore command: each sub-command is one API call, and each is documented."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import memstore
from memstore.cli import main


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args):
    result = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result


def test_every_command_has_help_text():
    for name, command in main.commands.items():
        assert command.help and len(command.help) > 20, f"`memstore {name}` lacks documentation"


def test_full_session(runner, tmp_path, rng):
    path = tmp_path / "cli.mem"
    x = rng.standard_normal((6, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "labels.txt").write_text("\n".join(["cat", "dog"] * 3))
    assert "version 0" in invoke(runner, "init", path).stdout

    out = invoke(runner, "add", path, tmp_path / "x.npy", "--labels", tmp_path / "labels.txt",
                 "--split", "train", "--format", "json")
    assert json.loads(out.stdout) == [{"version": 1, "rows": 6}]

    table = pa.table({"vector": pa.FixedSizeListArray.from_arrays(pa.array(x[:2].ravel()), 4),
                      "label": ["cow", "cow"], "uri": ["a.png", "b.png"]})
    pq.write_table(table, tmp_path / "more.parquet")
    invoke(runner, "add", path, tmp_path / "more.parquet", "-m", "cows")

    out = invoke(runner, "sql", path, "SELECT label, count(*) AS n FROM samples GROUP BY 1 ORDER BY 1",
                 "--format", "json")
    assert json.loads(out.stdout) == [{"label": "cat", "n": 3}, {"label": "cow", "n": 2},
                                      {"label": "dog", "n": 3}]
    assert "cow" in invoke(runner, "sql", path, "SELECT uri, label FROM samples WHERE uri IS NOT NULL").stdout

    invoke(runner, "tag", path, "before-prune")
    invoke(runner, "prune", path, "SELECT id FROM samples WHERE label = 'dog'", "-m", "no dogs")
    invoke(runner, "reweight", path, "SELECT id, 0.5 AS weight FROM samples WHERE label = 'cat'")
    invoke(runner, "relabel", path, "SELECT id, 'kitten' AS label FROM samples WHERE label = 'cat'")
    assert memstore.open(path).sql("SELECT count(*) FROM samples").fetchall() == [(5,)]

    out = invoke(runner, "sql", path, "SELECT count(*) AS n FROM samples", "--at", "before-prune",
                 "--format", "csv")
    assert out.output.splitlines() == ["n", "8"]
    invoke(runner, "restore", path, "before-prune")
    versions = json.loads(invoke(runner, "versions", path, "--format", "json").stdout)
    assert [v["operation"] for v in versions] == ["init", "add", "add", "prune", "reweight", "relabel",
                                                  "restore"]
    audit = invoke(runner, "audit", path).stdout
    assert "no dogs" in audit and "SELECT id FROM samples WHERE label = 'dog'" in audit
    info = json.loads(invoke(runner, "info", path, "--format", "json").stdout)
    assert info["rows"] == 8 and info["dim"] == 4 and info["tags"] == ["before-prune"]


def test_errors_are_one_line_and_exit_1(runner, tmp_path):
    path = tmp_path / "cli.mem"
    invoke(runner, "init", path)
    result = runner.invoke(main, ["sql", str(path), "DELETE FROM samples"])
    assert result.exit_code == 1 and "read-only" in result.output
    (tmp_path / "x.txt").write_text("not a memory")
    result = runner.invoke(main, ["info", str(tmp_path / "x.txt")])
    assert result.exit_code == 1 and "not a memory" in result.output


def test_add_npy_without_labels_is_a_usage_error(runner, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    result = runner.invoke(main, ["add", str(tmp_path / "m"), str(tmp_path / "x.npy")])
    assert result.exit_code == 2 and "--labels" in result.output


def test_search_classify_and_index(runner, tmp_path, rng):
    path = tmp_path / "knn.mem"
    centres = rng.standard_normal((2, 8)) * 3
    y = np.arange(400) % 2
    x = (centres[y] + rng.standard_normal((400, 8))).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "q.npy", x[:3])
    invoke(runner, "add", path, tmp_path / "x.npy", "--labels", tmp_path / "y.npy")

    hits = json.loads(invoke(runner, "search", path, tmp_path / "q.npy", "-k", 2, "--format", "json").stdout)
    assert [h["id"] for h in hits if h["rank"] == 0] == [0, 1, 2]

    out = json.loads(invoke(runner, "classify", path, tmp_path / "q.npy", "-k", 5, "--format", "json").stdout)
    assert [r["predicted"] for r in out] == [0, 1, 0] and out[0]["memory_version"] == 1
    explained = json.loads(invoke(runner, "classify", path, tmp_path / "q.npy", "-k", 5, "--explain",
                                  "--format", "json").stdout)
    assert len(explained) == 15 and {"id", "share", "content_hash"} <= set(explained[0])

    facts = {r["key"]: r["value"] for r in json.loads(
        invoke(runner, "index", path, "--partitions", 4, "--target-recall", 0.8, "--format", "json").stdout)}
    assert facts["version"] == "2" and float(facts["recall"]) >= 0.8
    hits = json.loads(invoke(runner, "search", path, tmp_path / "q.npy", "--index", "ann", "--at", 1,
                             "--format", "json").stdout)
    assert len(hits) == 30


def test_queries_must_be_npy(runner, tmp_path):
    (tmp_path / "q.txt").write_text("1 2")
    result = runner.invoke(main, ["search", str(tmp_path / "m.mem"), str(tmp_path / "q.txt")])
    assert result.exit_code == 2 and ".npy" in result.output


def test_add_images_from_a_class_folder(runner, tmp_path, rng):
    from PIL import Image

    for label in ("cat", "dog"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                tmp_path / "imgs" / label / f"{i}.png")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    path = tmp_path / "img.mem"
    out = invoke(runner, "add-images", path, tmp_path / "imgs", "--format", "json")
    assert json.loads(out.stdout) == [{"version": 1, "rows": 4}]
    rows = memstore.open(path).sql("SELECT label, uri, encoder FROM samples ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["cat", "cat", "dog", "dog"]
    assert rows[0][1].endswith("imgs/cat/0.png") and rows[0][2] == "timm/tf_efficientnet_lite0"
    assert memstore.open(path).dim == 1280


def test_add_images_from_a_dataset_name_and_bad_sources(runner, tmp_path):
    path = tmp_path / "digits.mem"
    out = invoke(runner, "add-images", path, "digits:train", "--limit", 3, "--format", "json")
    assert json.loads(out.stdout) == [{"version": 1, "rows": 3}]
    assert memstore.open(path).sql("SELECT DISTINCT dataset, split FROM samples").fetchall() == [
        ("digits", "train")]
    bad = runner.invoke(main, ["add-images", str(path), str(tmp_path / "nowhere")])
    assert bad.exit_code == 2 and "neither a folder" in bad.output
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    bad = runner.invoke(main, ["add-images", str(path), str(tmp_path / "empty")])
    assert bad.exit_code == 2 and "holds no images" in bad.output


def test_forget_quality_and_taxonomy_commands(runner, tmp_path, rng):
    path = tmp_path / "flex.mem"
    mem = memstore.open(path)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    mem.add(x, np.array(["sneaker", "sandal", "shirt", "coat"])[np.arange(40) % 4])

    out = json.loads(invoke(runner, "forget", path, "3,5", "-m", "asked to", "--format", "json").stdout)
    assert out[0]["rows"] == 2 and out[0]["version"] == 2 and out[0]["still_held"] == 0
    assert not {3, 5} & set(memstore.open(path).samples.ids)
    out = json.loads(invoke(runner, "forget", path, "SELECT id FROM samples WHERE id = 7",
                            "--format", "json").stdout)
    assert out[0]["rows"] == 1

    assert json.loads(invoke(runner, "quality", path, "-k", "5", "--format", "json").stdout)[0]["rows"] == 37
    assert memstore.open(path).sql("SELECT count(*) FROM samples WHERE wrong_count IS NULL").fetchall() == [(0,)]

    (tmp_path / "tax.csv").write_text("node,parent\nfootwear,\ntops,\nsneaker,footwear\nsandal,footwear\n"
                                      "shirt,tops\ncoat,tops\n")
    assert json.loads(invoke(runner, "taxonomy", path, tmp_path / "tax.csv", "--format", "json").stdout)[0]["rows"] == 6
    shown = json.loads(invoke(runner, "taxonomy", path, "--format", "json").stdout)
    assert {(r["node"], r["parent"], r["level"]) for r in shown} >= {("footwear", None, 0), ("coat", "tops", 1)}
    (tmp_path / "bad.json").write_text(json.dumps({"a": "b", "b": "a"}))
    bad = runner.invoke(main, ["taxonomy", str(path), str(tmp_path / "bad.json")])
    assert bad.exit_code == 1 and "cycle" in bad.output

    np.save(tmp_path / "q.npy", x[:4])
    out = json.loads(invoke(runner, "classify", path, tmp_path / "q.npy", "-k", "3", "--level", "0",
                            "--format", "json").stdout)
    assert {r["predicted"] for r in out} <= {"footwear", "tops"}
