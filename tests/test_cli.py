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
    invoke(runner, "init", path)  # only init creates a memory
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
    invoke(runner, "init", path)
    out = invoke(runner, "add-images", path, tmp_path / "imgs", "--format", "json")
    assert json.loads(out.stdout) == [{"version": 1, "rows": 4}]
    rows = memstore.open(path).sql("SELECT label, uri, encoder FROM samples ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["cat", "cat", "dog", "dog"]
    assert rows[0][1].endswith("imgs/cat/0.png") and rows[0][2] == "timm/tf_efficientnet_lite0"
    assert memstore.open(path).dim == 1280


def test_add_images_from_a_dataset_name_and_bad_sources(runner, tmp_path):
    path = tmp_path / "digits.mem"
    invoke(runner, "init", path)
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


# -- issue 13, defect 8: one-line errors, never a traceback; the CLI never creates a memory by accident ----

def _one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_os_errors_are_one_line_naming_the_path(runner, tmp_path):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    target = tmp_path / "file.txt" / "sub.mem"
    _one_line_error(runner.invoke(main, ["init", str(target)]), str(tmp_path / "file.txt"))


def test_a_full_disk_or_permission_error_is_one_line(runner, tmp_path, monkeypatch):
    import errno

    path = tmp_path / "m.mem"
    invoke(runner, "init", path)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(memstore.Memory, "info", full)
    _one_line_error(runner.invoke(main, ["info", str(path)]), "No space left on device", str(path))

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path / "tables"))

    monkeypatch.setattr(memstore.Memory, "versions", denied)
    _one_line_error(runner.invoke(main, ["versions", str(path)]), "Permission denied", str(path / "tables"))


def test_multi_line_messages_become_one_line(runner, tmp_path, monkeypatch):
    path = tmp_path / "m.mem"
    invoke(runner, "init", path)

    def fails(*a, **k):
        raise memstore.InvalidInputError("first line\nsecond line")

    monkeypatch.setattr(memstore.Memory, "audit", fails)
    _one_line_error(runner.invoke(main, ["audit", str(path)]), "first line", "second line")


def test_usage_errors_stay_clicks(runner, tmp_path):
    path = tmp_path / "m.mem"
    invoke(runner, "init", path)
    result = runner.invoke(main, ["add", str(path), str(tmp_path / "nowhere.npy")])
    assert result.exit_code == 2 and "does not exist" in result.output and "Usage:" in result.output
    result = runner.invoke(main, ["tag", str(path), "x", "--version", "²"])
    assert result.exit_code == 2 and "'²'" in result.output


def test_version_refs_are_ascii_digits(runner, tmp_path, rng):
    path = tmp_path / "m.mem"
    mem = memstore.open(path)
    mem.add(rng.standard_normal((4, 3)).astype(np.float32), ["a", "b", "a", "b"])
    _one_line_error(runner.invoke(main, ["restore", str(path), "²"]), "'²'")
    _one_line_error(runner.invoke(main, ["sql", str(path), "SELECT 1", "--at", "²"]), "'²'")
    _one_line_error(runner.invoke(main, ["taxonomy", str(path), "--at", "١"]), "'١'")  # Arabic-Indic one
    result = runner.invoke(main, ["forget", str(path), "1,²"])
    assert result.exit_code == 2 and "'²'" in result.output and "Traceback" not in result.output
    assert memstore.open(path).version == 1 and len(memstore.open(path)) == 4
    assert json.loads(invoke(runner, "sql", path, "SELECT count(*) AS n FROM samples", "--at", "0",
                             "--format", "json").stdout) == [{"n": 0}]


@pytest.mark.parametrize("where", ["missing.mem", "a/b/typo.mem"])
def test_info_on_a_missing_memory_creates_nothing(runner, tmp_path, where):
    path = tmp_path / where
    _one_line_error(runner.invoke(main, ["info", str(path)]), "memstore init", str(path))
    assert not path.exists() and not (tmp_path / "a").exists()


@pytest.mark.parametrize("args", [
    ["versions"], ["audit"], ["tag", "x"], ["restore", "0"], ["prune", "SELECT 1 AS id"],
    ["reweight", "SELECT 1 AS id, 1.0 AS weight"], ["relabel", "SELECT 1 AS id, 'a' AS label"],
    ["sql", "SELECT 1"], ["forget", "1,2"], ["quality"], ["taxonomy"], ["index"],
])
def test_no_command_but_init_creates_a_memory(runner, tmp_path, args):
    path = tmp_path / "a" / "typo.mem"
    _one_line_error(runner.invoke(main, [args[0], str(path), *args[1:]]), "memstore init")
    assert not (tmp_path / "a").exists()


def test_add_to_a_missing_memory_needs_init(runner, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    (tmp_path / "y.txt").write_text("a\nb")
    np.save(tmp_path / "q.npy", np.ones((1, 3), np.float32))
    path = tmp_path / "new.mem"
    for args in (["add", str(path), str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.txt")],
                 ["add-images", str(path), "digits:train", "--limit", "1"],
                 ["search", str(path), str(tmp_path / "q.npy")],
                 ["classify", str(path), str(tmp_path / "q.npy")]):
        _one_line_error(runner.invoke(main, args), "memstore init")
        assert not path.exists()
    assert "version 0" in invoke(runner, "init", path).stdout
    assert json.loads(invoke(runner, "add", path, tmp_path / "x.npy", "--labels", tmp_path / "y.txt",
                             "--format", "json").stdout) == [{"version": 1, "rows": 2}]


def test_add_a_table_with_a_weight_column(runner, tmp_path):
    """A parquet/arrow SOURCE's weight column gives the rows' weights (not a provenance column)."""
    path = tmp_path / "w.mem"
    invoke(runner, "init", path)
    table = pa.table({"vector": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(8, np.float32)), 4),
                      "label": ["a", "b"], "weight": [0.1, 2.0]})
    pq.write_table(table, tmp_path / "w.parquet")
    invoke(runner, "add", path, tmp_path / "w.parquet")
    assert memstore.open(path).sql("SELECT weight FROM samples ORDER BY id").fetchall() == [
        (pytest.approx(0.1),), (2.0,)]


def test_check_passes_then_names_a_damaged_file(runner, tmp_path, rng):
    path = tmp_path / "c.mem"
    memstore.open(path).add(rng.standard_normal((50, 8)).astype(np.float32), "a")
    out = runner.invoke(main, ["check", str(path), "--format", "json"])
    assert out.exit_code == 0 and {r["key"]: r["value"] for r in json.loads(out.stdout)}["rows"] == "50"
    target = next((path / "tables" / "sample_data.lance" / "data").glob("*.lance"))
    raw = bytearray(target.read_bytes())
    raw[100:164] = bytes(255 - b for b in raw[100:164])
    target.write_bytes(bytes(raw))
    out = runner.invoke(main, ["check", str(path)])
    assert out.exit_code == 1 and target.name in out.stderr and "Traceback" not in out.output
    assert len(out.stderr.strip().splitlines()) == 1


def test_optimize_merges_the_fragments_of_many_small_adds(runner, tmp_path, rng):
    path = tmp_path / "o.mem"
    mem = memstore.open(path)
    for i in range(6):
        mem.add(rng.standard_normal((4, 8)).astype(np.float32), "a")
    out = runner.invoke(main, ["optimize", str(path), "-m", "tidy", "--format", "json"])
    assert out.exit_code == 0, out.output
    rows = {r["table"]: r for r in json.loads(out.stdout)}
    assert rows["sample_data"]["fragments_before"] == 6 and rows["sample_data"]["fragments_after"] == 1
    assert "version 7:" in out.stderr and " files" in out.stderr
    reopened = memstore.open(path)
    assert reopened.versions()["operation"].to_pylist()[-1] == "optimize" and len(reopened.at(3)) == 12
