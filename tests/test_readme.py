"""The README is executed: every Python block, the command-line block, and its figures.

Each fenced block of README.md is found by the ``##`` section it sits in and run as
a reader would run it, in a fresh temporary working directory (so ``pets.mem`` and
friends land there). What a block uses but does not define comes from a prelude,
one per block, below; each says what it stands for. The values the README prints
in comments are asserted.

Substitutions, and why:

* Visual memory: ``memstore.encoders.efficientnet_lite0`` is replaced by a
  pixel encoder (4 x 4 average pooling, 147-d). The real one takes ~8 s to
  load and ~40 s to encode the block's 1,100 images on 2 cores (the README says
  "about a minute"), half of this file's budget; tests/test_encoders.py tests
  it. The data are the real Fashion-MNIST files (``memstore.data.load_fashion_mnist``).
* Command line: the commands run in one subprocess, each through
  ``memstore.cli:main`` (the function ``.venv/bin/memstore`` calls) with its own
  argv and exit status; the first runs through ``.venv/bin/memstore`` itself.
  One process per command would pay ~3 s of imports (LanceDB, DuckDB, torch)
  22 times.

The kNN-LM block runs in a fresh interpreter, importing ``memstore`` first and
then transformers, as a user would: another test may already have imported
torchvision in this process, which would hide a broken import hook.

The set-up block (``make demo``, ``make test``) is not run here: it is what runs
this suite.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shlex
import time
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import memstore

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

#: (section, language) of every fenced block of the README, and the test that runs it
BLOCKS = {
    ("Set-up: two commands", "bash"): None,  # make demo / make test: what runs this suite
    ("Quickstart", "python"): "test_the_quickstart_prints_what_it_says_and_runs_again",
    ("Visual memory: kNN classification, attributed to rows", "python"):
        "test_the_visual_memory_block_classifies_and_explains",
    ("Flexible memory: add classes, forget for real, prune, refine labels", "python"):
        "test_the_flexible_memory_block_changes_the_rows_it_names",
    ("kNN-LM: a language model with a memory", "python"): "test_the_knnlm_block_runs_after_a_plain_import",
    ("RAC: retrieval-augmented classification for the long tail", "python"):
        "test_the_rac_block_trains_predicts_and_explains",
    ("Neighbours as context for generative models", "python"):
        "test_the_neighbour_context_block_leaves_each_row_out_of_its_own_context",
    ("Command line", "bash"): "test_every_command_of_the_command_line_block_succeeds_and_does_something",
    ("Seeing inside: `memstore serve`", "bash"): "test_the_serve_block_starts_servers_that_answer_its_curl_lines",
    ("Seeing inside: `memstore serve`", "python"): "test_the_connect_block_fits_a_head_on_a_served_memory",
    ("Layout of the code", ""): None,  # a file tree, not code
}


def readme_blocks() -> dict[tuple[str, str], str]:
    """{(section, language): code} for the fenced blocks of README.md; one block per section and language."""
    text = README.read_text()
    blocks = {}
    for match in FENCE.finditer(text):
        headings = re.findall(r"^## (.+)$", text[:match.start()], re.M)
        key = (headings[-1] if headings else "", match[1])
        assert key not in blocks, f"two {match[1] or 'plain'} blocks in README section {key[0]!r}"
        blocks[key] = match[2]
    return blocks


def block(section_start: str, language: str = "python") -> str:
    matches = [code for (section, lang), code in readme_blocks().items()
               if section.startswith(section_start) and lang == language]
    assert len(matches) == 1, f"README has {len(matches)} {language} blocks in a section {section_start!r}"
    return matches[0]


def run(code: str, namespace: dict, name: str) -> str:
    """Execute a README block in ``namespace``; returns what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README.md ({name})", "exec"), namespace)
    return out.getvalue()


def test_every_block_of_the_readme_has_a_test():
    assert set(readme_blocks()) == set(BLOCKS)
    assert {name for name in BLOCKS.values() if name} <= set(globals())


# -- Quickstart --------------------------------------------------------------------------
def test_the_quickstart_prints_what_it_says_and_runs_again(tmp_path, monkeypatch):
    """No prelude. Run twice on the same path: the README says a re-run prints the same."""
    monkeypatch.chdir(tmp_path)
    code = block("Quickstart")
    first, second = (run(code, {}, "Quickstart").splitlines() for _ in range(2))
    assert first[:2] == ["1 [0 1 2]", "1000 889"]
    assert second[:2] == first[:2]
    versions = memstore.open("pets.mem").versions()
    assert versions.column_names == ["version", "time", "operation", "message", "rows", "rows_affected"]
    assert versions["operation"].to_pylist() == ["init", "add", "reweight", "prune", "relabel", "restore"]


def test_without_its_rmtree_a_second_quickstart_adds_rows_and_finds_the_tag_taken(tmp_path, monkeypatch):
    """What the README says of a re-run that keeps the memory."""
    monkeypatch.chdir(tmp_path)
    code = block("Quickstart")
    run(code, {}, "Quickstart")
    keep = code.replace('shutil.rmtree("pets.mem", ignore_errors=True)', "")
    assert keep != code
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(memstore.InvalidInputError, match="'clean' already exists"):
        exec(compile(keep, "README.md (Quickstart, kept)", "exec"), {})
    version, ids = out.getvalue().splitlines()[0].split(" ", 1)
    assert ids.startswith("[1000 1001 1002") and int(version) > 1


# -- Visual memory, then Flexible memory on the same memory ----------------------------------
def pixel_encoder():
    """Stands in for EfficientNet-Lite0: 4 x 4 average pooling of the image, 3 x 7 x 7 values."""
    import torch

    from memstore.encoders import TorchEncoder

    return TorchEncoder(torch.nn.Sequential(torch.nn.AvgPool2d(4), torch.nn.Flatten()), dim=3 * 7 * 7,
                        name="pixels-avgpool4", device="cpu")


@pytest.fixture(scope="module")
def visual(tmp_path_factory):
    """The Visual memory block's namespace and working directory; the Flexible memory block continues it.

    Prelude: none, but ``efficientnet_lite0`` is the pixel encoder (see the module docstring).
    """
    import memstore.encoders
    from memstore.data import fashion_mnist_available

    if not fashion_mnist_available():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make install tries to install it)")

    workdir = tmp_path_factory.mktemp("visual")
    namespace: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        # through the module's dict: getattr would import the real encoder (and timm) first
        mp.setitem(vars(memstore.encoders), "efficientnet_lite0", pixel_encoder)
        run(block("Visual memory"), namespace, "Visual memory")
    return namespace, workdir


def test_the_visual_memory_block_classifies_and_explains(visual):
    ns, _ = visual
    mem, clf, q, ex = ns["mem"], ns["clf"], ns["q"], ns["ex"]
    assert len(mem) == 1000 and q.shape == (100, 3 * 7 * 7)
    assert clf.predict(q).shape == (100,)
    assert np.allclose(clf.predict_proba(q).sum(axis=1), 1)
    dist, ids = clf.kneighbors(None)                       # leave-one-out: no row is its own neighbour
    assert not (ids == mem.samples.ids[:, None]).any()
    assert ex.num_rows == 50 and abs(sum(ex["share"].to_pylist()) - 1) < 1e-6
    joined = mem.sql("SELECT e.rank, e.share, s.uri FROM ex e JOIN samples s USING (id)", ex=ex).fetchall()
    assert len(joined) == 50 and all(uri.startswith("fashion-mnist/train/") for _, _, uri in joined)


def flexible_prelude(ns: dict) -> None:
    """What the Flexible memory block names but does not make.

    ``new_vectors``, ``n``: 50 Bag test images, encoded. Rows ``user-17/...``: 20
    test images a user contributed. ``finer_labels``: the memory's footwear rows
    are first labelled only ``footwear``; this is their (uri, label) fine labels.
    """
    mem, encoder, test = ns["mem"], ns["encoder"], ns["test"]
    bags = test.images[test.labels == test.class_names.index("Bag")]
    ns["n"], ns["new_vectors"] = 50, encoder.encode(bags[:50])
    user = test.subset(range(1000, 1020))
    mem.add(encoder.encode(user.images), user.label_names,
            provenance={"uri": [f"user-17/{i}.png" for i in range(len(user))]}, message="a user's photos")
    footwear = "label IN ('Sandal', 'Sneaker', 'Ankle boot')"
    ns["finer_labels"] = mem.sql(f"SELECT uri, label FROM samples WHERE {footwear}").to_arrow_table()
    mem.relabel(f"SELECT id, 'footwear' AS label FROM samples WHERE {footwear}", message="labelled coarsely")


def test_the_flexible_memory_block_changes_the_rows_it_names(visual, monkeypatch):
    ns, workdir = visual
    monkeypatch.chdir(workdir)
    flexible_prelude(ns)
    mem = ns["mem"]
    start, footwear = mem.version, len(ns["finer_labels"])
    run(block("Flexible memory"), ns, "Flexible memory")
    assert ns["report"].rows == 20 and ns["report"].bytes_scanned > 0
    audit = mem.audit().to_pylist()
    done = [(a["operation"], a["rows_affected"]) for a in audit if a["version"] > start]
    assert [op for op, _ in done] == ["add", "forget", "estimate_quality", "prune", "reweight", "set_taxonomy",
                                      "relabel"]
    assert dict(done)["add"] == 50 and dict(done)["prune"] > 0
    # every footwear row the forget and the prune left is refined, and none stays coarse
    assert 0 < dict(done)["relabel"] <= footwear
    assert mem.sql("SELECT count(*) FROM samples WHERE label = 'footwear'").fetchall() == [(0,)]
    coarse = memstore.KNNClassifier(k=10, level=0).fit(mem).predict(ns["q"])
    assert set(coarse) <= set(ns["groups"])


# -- kNN-LM, in a fresh interpreter ----------------------------------------------------------
KNNLM_PRELUDE = '''
import memstore                                  # first, as a user would; then transformers
from transformers import GPT2Config, GPT2LMHeadModel
import torch
from memstore.data import load_pydoc_topics, train_tokenizer

# texts, val_texts, test_texts: Python's documentation topics (shipped with Python), split by topic
docs = [d.text[:4000] for d in load_pydoc_topics("all")]
texts, val_texts, test_texts = docs[:12], docs[12:14], docs[14:16]
tok = train_tokenizer(texts, vocab_size=400)
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=32, n_layer=2, n_head=2,
                                   bos_token_id=0, eos_token_id=0, pad_token_id=0)).eval()
input_ids = tok(test_texts[0][:300], return_tensors="pt").input_ids
ids = input_ids[:, :8]
'''

KNNLM_CHECKS = '''
import json, math
grid = lm.perplexity_grid(val_texts, tokenizer=tok, k=[8, 64, 1024], lmbda=[0.1, 0.25, 0.5], temperature=[1, 10])
out = {"rows": len(ds), "ppl": lm.perplexity(test_texts, tokenizer=tok), "grid_rows": grid.num_rows,
       "log_probs": list(lm.log_probs(input_ids).shape), "vocab": len(tok), "input": list(input_ids.shape),
       "generated": list(model.generate(ids, logits_processor=[memstore.KNNLogitsProcessor(lm)],
                                        max_new_tokens=20).shape),
       "explain": lm.explain(input_ids, tokenizer=tok).column_names,
       "torchvision": __import__("sys").modules.get("torchvision") is not None}
print("RESULT", json.dumps(out))
'''


def test_the_knnlm_block_runs_after_a_plain_import(tmp_path):
    """Prelude: a tiny GPT-2 (2 layers, 32-d) and a BPE tokenizer trained on Python's documentation topics.

    ``texts``, ``val_texts``, ``test_texts`` are topics; ``input_ids`` a (1, seq) test text, ``ids`` its
    first 8 tokens. Runs in a new interpreter that imports memstore, then transformers.
    """
    script = KNNLM_PRELUDE + block("kNN-LM") + KNNLM_CHECKS
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["rows"] > 1024                                         # k=1024 neighbours exist
    assert out["log_probs"] == out["input"] + [out["vocab"]]          # (batch, seq, vocab)
    assert out["grid_rows"] >= 3 * 3 * 2 and out["ppl"] > 1
    assert out["generated"] == [1, 8 + 20]
    assert {"document", "position", "context", "continuation"} <= set(out["explain"])
    assert out["torchvision"]                                          # transformers did import it


# -- RAC ------------------------------------------------------------------------------------
def rac_prelude(workdir: Path) -> dict:
    """``fashion-lt.mem`` and the names the RAC block uses, on scikit-learn's digits (8 x 8).

    The memory holds the 'frozen encoder' features of the training digits (a fixed random
    projection of the pixels, 32-d) and their labels. ``cnn`` is a small torch CNN;
    ``images``/``labels``/``features``/``ids`` 400 of the training digits and their rows,
    ``test_images``/``test_features`` 100 test digits, ``one_image``/``one_feature`` the first.
    """
    import torch

    from memstore.data import load_digits

    train, test = load_digits("train"), load_digits("test")
    projection = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)

    def encode(images):
        return images.reshape(len(images), -1).astype(np.float32) / 255 @ projection

    mem = memstore.open(workdir / "fashion-lt.mem")
    ids = mem.add(encode(train.images), train.label_names, message="features of a frozen encoder").ids

    class SmallCNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.out = torch.nn.Conv2d(1, 8, 3), torch.nn.Linear(8 * 6 * 6, 10)

        def forward(self, x):
            return self.out(torch.relu(self.conv(x[:, None] / 255)).flatten(1))

    torch.manual_seed(0)
    fit, test_images = slice(0, 400), test.images[:100]  # 400 rows train in seconds (20 epochs)
    return {"cnn": SmallCNN(), "images": train.images[fit], "labels": train.label_names[fit],
            "features": encode(train.images[fit]), "ids": ids[fit],
            "test_images": test_images, "test_features": encode(test_images),
            "one_image": test_images[:1], "one_feature": encode(test_images[:1])}


def test_the_rac_block_trains_predicts_and_explains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns = rac_prelude(tmp_path)
    run(block("RAC"), ns, "RAC")
    rac = ns["rac"]
    pred = rac.predict(ns["test_images"], queries=ns["test_features"])
    assert pred.shape == (100,) and set(pred) <= set(ns["labels"])
    base, retrieval = rac.decision_parts(ns["test_images"], queries=ns["test_features"])
    assert np.allclose(base + retrieval, rac.decision_function(ns["test_images"], queries=ns["test_features"]),
                       atol=1e-4)
    why = rac.explain(ns["one_image"], queries=ns["one_feature"])
    assert why.num_rows == 16 and "contribution" in why.column_names


# -- Neighbours as context ------------------------------------------------------------------
def test_the_neighbour_context_block_leaves_each_row_out_of_its_own_context(tmp_path, monkeypatch):
    """Prelude: ``mem`` of 200 seeded 8-d rows; ``batch_ids`` 8 of its ids; ``ds`` 200 dicts {id, x}."""
    import torch

    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(0).standard_normal((200, 8)).astype(np.float32)
    mem = memstore.open("context.mem")
    ids = mem.add(x, np.arange(200) % 5).ids
    ds = [{"id": int(i), "x": torch.from_numpy(v)} for i, v in zip(ids, x)]
    ns = {"memstore": memstore, "mem": mem, "batch_ids": ids[:8], "ds": ds}
    run(block("Neighbours as context"), ns, "Neighbours as context")
    ctx = ns["ctx"]
    assert tuple(ctx.context.shape) == (8, 4, 8) and ctx.ids.shape == (8, 4)
    assert not (ctx.ids == ids[:8, None]).any()
    batch = next(iter(ns["loader"]))
    assert tuple(batch["context"].shape) == (64, 4, 8)
    assert not (batch["context_ids"] == batch["id"][:, None]).any()


# -- Command line ---------------------------------------------------------------------------
CLI_DRIVER = '''
import json, shlex, sys
from memstore.cli import main
results = []
for line in json.load(sys.stdin):
    argv = shlex.split(line, comments=True)
    print("\\n### " + line, flush=True)
    try:
        main.main(args=argv[1:], prog_name="memstore")
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    results.append({"line": line, "code": code})
print("RESULT " + json.dumps(results))
'''


def cli_inputs(workdir: Path) -> None:
    """The files the command-line block names: 400 train rows of 16-d, 60 more in parquet, 5 queries.

    ``labels.txt``: cat/dog/fox/owl. ``more.parquet``: a weight column (a third under 0.2, for the
    prune), uris ``user-17/...`` (for the forget) and split ``web`` (for the reweight).
    ``groups.csv``: mammal and bird parents of every label.
    """
    rng = np.random.default_rng(0)
    np.save(workdir / "vectors.npy", rng.standard_normal((400, 16)).astype(np.float32))
    (workdir / "labels.txt").write_text("\n".join(["cat", "dog", "fox", "owl"] * 100) + "\n")
    more = rng.standard_normal((60, 16)).astype(np.float32)
    pq.write_table(pa.table({
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(more.ravel()), 16),
        "label": ["owl", "fox", "cat"] * 20, "weight": np.tile([1.0, 0.1, 1.0], 20),
        "uri": [f"user-17/{i}.jpg" for i in range(60)], "split": ["web"] * 60}), workdir / "more.parquet")
    np.save(workdir / "queries.npy", rng.standard_normal((5, 16)).astype(np.float32))
    (workdir / "groups.csv").write_text("node,parent\nmammal,\nbird,\ncat,mammal\ndog,mammal\nfox,mammal\n"
                                        "owl,bird\n")


def test_every_command_of_the_command_line_block_succeeds_and_does_something(tmp_path):
    lines = [line for line in block("Command line", "bash").splitlines() if line.strip()]
    assert all(line.startswith("memstore ") for line in lines)
    cli_inputs(tmp_path)
    binary = Path(sys.executable).parent / "memstore"
    first = subprocess.run([str(binary), *shlex.split(lines[0], comments=True)[1:]], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    proc = subprocess.run([sys.executable, "-c", CLI_DRIVER], cwd=tmp_path, input=json.dumps(lines[1:]),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.rsplit("RESULT ", 1)[1])
    failed = [r["line"] for r in results if r["code"] != 0]
    assert not failed, f"failed: {failed}\n{proc.stderr[-3000:]}"
    audit = memstore.open(tmp_path / "pets.mem").audit().to_pylist()
    changed = {}
    for a in audit:
        changed.setdefault(a["operation"], []).append(a["rows_affected"])
    assert changed["prune"] == [20] and changed["reweight"] == [40] and changed["relabel"] == [120]
    assert changed["restore"][0] > 0 and changed["forget"] == [60, 3]
    assert "set_taxonomy" in changed and "estimate_quality" in changed and "create_index" in changed
    assert changed["optimize"] == [0]                                 # a version, no rows changed
    at_clean = proc.stdout.split('### memstore sql pets.mem "SELECT count(*) FROM samples" --at clean')[1]
    assert "460" in at_clean.split("###")[0]                     # the rows when tagged, before the prune


def test_the_serve_block_starts_servers_that_answer_its_curl_lines(tmp_path):
    """Each `memstore serve` line is started (each on a free port; 0.0.0.0 becomes 127.0.0.1: tests stay
    on loopback), and each curl line gets JSON from the first server."""
    import socket

    lines = [line for line in block("Seeing inside", "bash").splitlines() if line.strip()]
    serves, curls = [x for x in lines if x.startswith("memstore serve")], [x for x in lines if x.startswith("curl")]
    assert len(serves) + len(curls) == len(lines) and serves and curls
    mem = memstore.open(tmp_path / "pets.mem")
    rng = np.random.default_rng(0)
    mem.add(rng.standard_normal((100, 8)).astype(np.float32), ["cat", "dog"] * 50)
    (tmp_path / "tokens.txt").write_text("alice:" + "s" * 32 + "\n")
    binary = Path(sys.executable).parent / "memstore"
    servers, ports = [], []
    try:
        for line in serves:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(str(s.getsockname()[1]))
            args = shlex.split(line.replace("8765", ports[-1]).replace("0.0.0.0", "127.0.0.1"))[1:]
            args += [] if "--port" in args else ["--port", ports[-1]]
            log = open(tmp_path / f"serve-{len(servers)}.log", "w")
            servers.append(subprocess.Popen([str(binary), *args], cwd=tmp_path, stdout=log, stderr=log))
        outputs = []
        for line in curls:
            for _ in range(300):
                done = subprocess.run(shlex.split(line.replace("8765", ports[0])), capture_output=True, text=True)
                if done.returncode != 7:  # 7: the server does not listen yet
                    break
                time.sleep(0.1)
            assert done.returncode == 0, (line, done.stderr)
            outputs.append(json.loads(done.stdout))
        assert all(r["label"] == "cat" for r in outputs[0]["rows"]) and len(outputs[0]["rows"]) == 5
        assert len(outputs[1]["neighbours"]) == 10 and outputs[1]["predicted"] in ("cat", "dog")
        assert outputs[2]["rows"] == [{"count_star()": 100}]
        # the second server wants the token of tokens.txt
        url = f"http://127.0.0.1:{ports[1]}/api/overview"
        for _ in range(300):
            refused = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url],
                                     capture_output=True, text=True)
            if refused.returncode != 7:
                break
            time.sleep(0.1)
        allowed = subprocess.run(["curl", "-s", url, "-H", "Authorization: Bearer " + "s" * 32], capture_output=True,
                                 text=True)
        assert refused.stdout == "401", (tmp_path / "serve-1.log").read_text()
        assert json.loads(allowed.stdout)["writable"] is True
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)


def test_the_connect_block_fits_a_head_on_a_served_memory(tmp_path):
    """Prelude: pets.mem (100 rows, tagged ``first``, then relabelled) served on a free port, which
    replaces 8765; ``queries`` 5 vectors. The head answers as one fitted on the local version."""
    sys.path.insert(0, str(ROOT / "tests"))
    from serving import serving

    from memstore.server import create_app

    rng = np.random.default_rng(0)
    mem = memstore.open(tmp_path / "pets.mem")
    mem.add(rng.standard_normal((100, 8)).astype(np.float32), ["cat", "dog"] * 50)
    mem.tag("first")
    mem.relabel("SELECT id, 'owl' AS label FROM samples WHERE id < 50")
    queries = rng.standard_normal((5, 8)).astype(np.float32)
    with serving(create_app(mem.path)) as url:
        code = block("Seeing inside").replace("http://127.0.0.1:8765", url)
        ns = {"queries": queries}
        run(code, ns, "Seeing inside")
        local = memstore.KNNClassifier(k=10).fit(mem.at("first"))
        assert ns["head"].predict(queries).tolist() == local.predict(queries).tolist()
        assert ns["head"].memory_version_ == 1
        assert set(ns["decision"]) == {"predicted", "probabilities", "neighbours"}
        assert len(ns["decision"]["neighbours"]) == 10


# -- the figures ----------------------------------------------------------------------------
def figures_module():
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "benchmarks" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_figures_match_the_results_files():
    _, stale = figures_module().render(README.read_text())
    assert not stale, f"README figure blocks {stale} are stale: run python benchmarks/readme_figures.py"


def test_the_check_names_a_block_whose_figure_was_changed(tmp_path, capsys):
    figures = figures_module()
    text = README.read_text()
    assert "| add (rows/s) | 64,640 |" in text
    changed = tmp_path / "README.md"
    changed.write_text(text.replace("| add (rows/s) | 64,640 |", "| add (rows/s) | 64,641 |"))
    assert figures.main(["--check", "--readme", str(changed)]) == 1
    assert "store" in capsys.readouterr().err
    assert figures.main(["--readme", str(changed)]) == 0            # rewriting repairs it
    assert changed.read_text() == text


def test_the_readme_states_the_row_count_from_which_search_uses_the_index():
    from memstore.index import ANN_AUTO_ROWS

    stated = re.search(r"`memstore\.index\.ANN_AUTO_ROWS` \(([\d,]+)\) rows on", README.read_text())
    assert stated and int(stated[1].replace(",", "")) == ANN_AUTO_ROWS
