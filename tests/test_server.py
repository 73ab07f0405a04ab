"""memstore serve: the JSON API over a memory, its bounds and its tokens (FastAPI's TestClient and a real server)."""

import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

import memstore
from memstore.cli import main
from memstore.server import app as server_app
from memstore.server import create_app


def ok(response):
    assert response.status_code == 200, response.text
    return response.json()


def test_overview_and_a_page_of_samples(served):
    client = TestClient(create_app(served.path))
    overview = ok(client.get("/api/overview"))
    assert overview["rows"] == 300 and overview["version"] == 3 and not overview["writable"]
    counts = dict(served.sql("SELECT label, count(*) FROM samples GROUP BY label").fetchall())
    assert {r["label"]: r["rows"] for r in overview["labels"]} == counts
    page = ok(client.get("/api/samples", params={"where": "label = 'owl' AND id > 10", "order": "uri",
                                                 "descending": True, "offset": 2, "limit": 5}))
    expected = served.sql("SELECT id FROM samples WHERE label = 'owl' AND id > 10 "
                          "ORDER BY uri DESC, id LIMIT 5 OFFSET 2").fetchall()
    assert [r["id"] for r in page["rows"]] == [i for (i,) in expected]
    assert page["total"] == served.sql("SELECT count(*) FROM samples WHERE label = 'owl' AND id > 10").fetchall()[0][0]
    assert "vector" not in page["rows"][0] and page["rows"][0]["uri"].startswith("img/")
    old = ok(client.get("/api/samples", params={"version": "first", "where": "id < 5"}))
    assert old["version"] == 1 and [r["label"] for r in old["rows"]] == served.y[:5].tolist()


def test_a_row_its_history_and_its_neighbours(served):
    client = TestClient(create_app(served.path))
    row = ok(client.get("/api/rows/3", params={"k": 4}))
    assert row["row"]["label"] == "owl" and row["row"]["uri"] == "img/3.png"
    assert [h["valid_from"] for h in row["history"]] == [1, 2, 3]  # added, relabelled, quality estimated
    assert row["history"][-1]["valid_to"] is None and row["history"][1]["label"] == "owl"
    # brute force: cosine distance to every other row
    x = served.x / np.linalg.norm(served.x, axis=1, keepdims=True)
    distance = 1 - x @ x[3]
    distance[3] = np.inf
    assert [n["id"] for n in row["neighbours"]] == np.argsort(distance, kind="stable")[:4].tolist()
    np.testing.assert_allclose([n["distance"] for n in row["neighbours"]], np.sort(distance)[:4], rtol=1e-5)
    assert client.get("/api/rows/100000").status_code == 404


def test_a_pruned_row_says_it_was_pruned(served):
    served.prune("SELECT id FROM samples WHERE id = 7")
    client = TestClient(create_app(served.path))
    gone = client.get("/api/rows/7")
    assert gone.status_code == 404 and "pruned" in gone.json()["detail"]
    assert ok(client.get("/api/rows/7", params={"version": "3"}))["row"]["id"] == 7


def test_a_decision_and_each_neighbours_share(served):
    """The explanation is the kNN head's leave-one-out decision for the row (Geirhos et al.'s attribution)."""
    client = TestClient(create_app(served.path))
    got = ok(client.get("/api/rows/42/explain", params={"k": 7, "voting": "distance"}))
    head = memstore.KNNClassifier(k=7, voting="distance").fit(served)
    everyone = head.explain()  # leave-one-out over every row
    expected = everyone.filter(everyone["query"].to_numpy() == 42)  # row 42 is at position 42
    assert [n["id"] for n in got["neighbours"]] == expected["id"].to_pylist() and 42 not in expected["id"].to_pylist()
    np.testing.assert_allclose([n["share"] for n in got["neighbours"]], expected["share"].to_numpy(), rtol=1e-6)
    assert got["predicted"] == expected["predicted"][0].as_py()
    proba = head.predict_proba(None)[42]
    assert got["probabilities"] == pytest.approx({c: p for c, p in zip(head.classes_, proba) if p > 0})


def test_label_error_candidates(served):
    client = TestClient(create_app(served.path))
    quality = ok(client.get("/api/quality", params={"limit": 3, "k": 2}))
    expected = served.sql("SELECT id FROM samples WHERE wrong_count > 0 ORDER BY wrong_count DESC, id LIMIT 3")
    assert quality["estimated"] and [r["id"] for r in quality["rows"]] == [i for (i,) in expected.fetchall()]
    assert all(len(r["neighbours"]) == 2 for r in quality["rows"])


def test_versions_and_a_diff(served):
    served.reweight("SELECT id, 0.5 AS weight FROM samples WHERE id BETWEEN 100 AND 109")
    served.prune("SELECT id FROM samples WHERE id >= 290")
    served.forget([0, 1])
    client = TestClient(create_app(served.path))
    versions = ok(client.get("/api/versions"))
    assert versions["head"] == 6 and [v["operation"] for v in versions["versions"]][:3] == ["forget", "prune", "reweight"]
    assert versions["tags"][0]["name"] == "first"
    d = ok(client.get("/api/diff", params={"a": "first", "b": "6", "limit": 3}))
    # rows 0 and 1 are forgotten: they are in no version, so only rows 2..4 can show as relabelled
    relabelled = int((served.y[2:5] != "owl").sum())
    assert d["counts"] == {"added": 0, "pruned": 10, "forgotten": 2, "relabelled": relabelled, "reweighted": 10}
    assert d["ids"]["pruned"] == [290, 291, 292] and d["truncated"]["pruned"]
    assert [c["operation"] for c in d["commits"]] == ["relabel", "estimate_quality", "reweight", "prune", "forget"]


def test_the_sql_console_is_read_only_and_bounded(served):
    client = TestClient(create_app(served.path))
    result = ok(client.post("/api/sql", json={"query": "SELECT * FROM samples ORDER BY id", "limit": 10}))
    assert result["total"] == 300 and result["truncated"] and len(result["rows"]) == 10
    assert result["omitted_columns"] == ["vector"] and "vector" not in result["rows"][0]
    refused = client.post("/api/sql", json={"query": "DELETE FROM samples"})
    assert refused.status_code == 403 and refused.json()["error"] == "ReadOnlyError"
    bad = client.post("/api/sql", json={"query": "SELECT nope FROM samples"})
    assert bad.status_code == 400 and "nope" in bad.json()["detail"]
    assert client.post("/api/sql", json={"query": "x" * 30_000}).status_code == 422
    assert client.get("/api/samples", params={"limit": 5_000}).status_code == 422
    assert client.get("/api/samples", params={"order": "vector; DROP"}).status_code == 400
    huge = client.post("/api/sql", content=b"{" + b" " * (server_app.MAX_BODY_BYTES + 1) + b"}",
                       headers={"content-type": "application/json"})
    assert huge.status_code == 413


def test_a_server_with_tokens_refuses_requests_without_one(served):
    client = TestClient(create_app(served.path, tokens={"alice": "a" * 32}))
    assert client.get("/api/overview").status_code == 401
    assert client.get("/api/overview", headers={"Authorization": "Bearer " + "b" * 32}).status_code == 401
    assert ok(client.get("/api/overview", headers={"Authorization": "Bearer " + "a" * 32}))["rows"] == 300
    assert ok(client.get("/api/overview", params={"token": "a" * 32}))["rows"] == 300


def test_forget_needs_allow_writes_and_is_audited_with_the_token(served):
    read_only = TestClient(create_app(served.path))
    assert read_only.post("/api/forget", json={"ids": [5]}).status_code == 403
    assert len(memstore.open(served.path)) == 300
    client = TestClient(create_app(served.path, tokens={"alice": "a" * 32}, allow_writes=True))
    auth = {"Authorization": "Bearer " + "a" * 32}
    report = ok(client.post("/api/forget", json={"ids": [5], "message": "asked"}, headers=auth))
    assert report["rows"] == 1
    mem = memstore.open(served.path)
    assert len(mem) == 299 and mem.sql("SELECT count(*) FROM history WHERE id = 5").fetchall() == [(0,)]
    assert mem.audit().to_pylist()[-1]["user"] == "token:alice"
    assert client.get("/api/rows/5", headers=auth).status_code == 404


def test_serve_refuses_other_hosts_without_a_token(served, monkeypatch):
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append(kw))  # never listens
    result = CliRunner().invoke(main, ["serve", str(served.path), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--token" in result.output and not started
    result = CliRunner().invoke(main, ["serve", str(served.path), "--host", "0.0.0.0", "--token", "t" * 32])
    assert result.exit_code == 0 and started == [{"host": "0.0.0.0", "port": 8765, "log_level": "warning"}]


def test_memstore_serve_answers_over_http(served, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "memstore.cli", "serve", str(served.path), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                response = httpx.get(url + "/api/overview", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert response.json()["rows"] == 300
        page = httpx.get(url + "/").text
        assert '<script src="/static/app.js">' in page
        assert "http://" not in page and "https://" not in page  # nothing from a CDN: it works offline
        assert httpx.get(url + "/static/app.js").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- images: thumbnails and query by example -------------------------------------------
@pytest.fixture
def pictured(tmp_path, rng):
    """A memory of 30 random 8 x 8 grayscale images, flattened to 192-d by a torch encoder."""
    import torch

    from memstore.encoders import TorchEncoder

    mem = memstore.open(tmp_path / "pictured.mem")
    mem.encoder = TorchEncoder(torch.nn.Flatten(), dim=192, name="test/flatten", device="cpu")
    mem.images = rng.integers(0, 256, (30, 8, 8), dtype=np.uint8)
    mem.add_images(mem.images, np.array(["a", "b", "c"])[np.arange(30) % 3], encoder=mem.encoder)
    return mem


def test_thumbnails_inline_in_pages_and_as_files(pictured):
    import base64

    client = TestClient(create_app(pictured.path))
    assert ok(client.get("/api/overview"))["thumbnails"] is True
    stored = dict(pictured.sql("SELECT id, thumbnail FROM samples").fetchall())
    page = ok(client.get("/api/samples", params={"thumbnails": True, "limit": 3}))
    assert [base64.b64decode(r["thumbnail"].split(",", 1)[1]) for r in page["rows"]] == [stored[i] for i in range(3)]
    assert page["rows"][0]["thumbnail"].startswith("data:image/webp;base64,")
    assert "thumbnail" not in ok(client.get("/api/samples"))["rows"][0]  # only when asked
    image = client.get("/api/rows/4/thumbnail")
    assert image.status_code == 200 and image.content == stored[4]
    assert image.headers["content-type"] == "image/webp" and image.headers["cache-control"] == "no-store"
    row = ok(client.get("/api/rows/4", params={"k": 3}))
    assert row["thumbnail"] and all(n["thumbnail"] for n in row["neighbours"]) and "thumbnail" not in row["row"]
    sql = ok(client.post("/api/sql", json={"query": "SELECT id, thumbnail FROM samples LIMIT 2"}))
    assert sql["omitted_columns"] == ["thumbnail"] and sql["rows"] == [{"id": 0}, {"id": 1}]


def test_a_memory_without_thumbnails_says_so(served):
    client = TestClient(create_app(served.path))
    assert ok(client.get("/api/overview"))["thumbnails"] is False
    missing = client.get("/api/rows/4/thumbnail")
    assert missing.status_code == 404 and "keeps none" in missing.json()["detail"]
    assert "thumbnail" not in ok(client.get("/api/samples", params={"thumbnails": True}))["rows"][0]


def test_an_uploaded_image_is_explained_by_the_rows_nearest_it(pictured):
    import io

    from PIL import Image

    client = TestClient(create_app(pictured.path, encoder=pictured.encoder))
    upload = io.BytesIO()
    Image.fromarray(pictured.images[7]).save(upload, format="PNG")  # row 7's image, lossless
    decision = ok(client.post("/api/explain-image", params={"k": 5}, content=upload.getvalue(),
                              headers={"Content-Type": "image/png"}))
    head = memstore.KNNClassifier(k=5).fit(pictured)
    want = head.explain(pictured.encoder.encode(pictured.images[7:8]))
    assert [n["id"] for n in decision["neighbours"]] == want["id"].to_pylist()
    assert decision["neighbours"][0]["id"] == 7 and decision["neighbours"][0]["distance"] < 1e-6
    assert decision["predicted"] == head.predict(pictured.encoder.encode(pictured.images[7:8]))[0]
    assert sum(decision["probabilities"].values()) == pytest.approx(1.0)
    assert decision["neighbours"][0]["thumbnail"].startswith("data:image/webp")


def test_uploads_that_cannot_be_explained_get_clear_errors(pictured, served):
    client = TestClient(create_app(pictured.path, encoder=pictured.encoder))
    garbage = client.post("/api/explain-image", content=b"not an image", headers={"Content-Type": "image/png"})
    assert garbage.status_code == 400 and "not an image" in garbage.json()["detail"]
    assert client.post("/api/explain-image", content=b"").status_code == 400
    unknown = TestClient(create_app(pictured.path)).post("/api/explain-image", content=b"x" * 10)
    assert unknown.status_code == 400
    from PIL import Image
    import io

    huge = io.BytesIO()
    Image.new("L", (8000, 6000)).save(huge, format="PNG")  # 48M pixels in about 50 KB
    refused = client.post("/api/explain-image", content=huge.getvalue())
    assert refused.status_code == 400 and "pixels" in refused.json()["detail"]
    no_encoder = TestClient(create_app(pictured.path)).post("/api/explain-image", content=_png())
    assert no_encoder.status_code == 400 and "test/flatten" in no_encoder.json()["detail"]


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("L", (8, 8)).save(out, format="PNG")
    return out.getvalue()


def test_a_body_without_a_length_is_refused(served):
    client = TestClient(create_app(served.path))

    def chunks():
        yield b'{"query": "SELECT 1"}'

    refused = client.post("/api/sql", content=chunks(), headers={"Content-Type": "application/json"})
    assert refused.status_code == 411


def test_the_overview_follows_writes_made_elsewhere(served):
    client = TestClient(create_app(served.path))
    first = ok(client.get("/api/overview"))
    served.relabel("SELECT id, 'emu' AS label FROM samples WHERE id < 30")  # another handle writes
    now = ok(client.get("/api/overview"))
    assert now["version"] == first["version"] + 1 and {"label": "emu", "rows": 30} in now["labels"]
    assert ok(client.get("/api/overview", params={"version": "first"}))["labels"] == \
        ok(client.get("/api/overview", params={"version": "1"}))["labels"]


# -- found by a red-team pass ----------------------------------------------------------
def test_a_comment_in_the_condition_cannot_lift_the_page_limit(served):
    client = TestClient(create_app(served.path))
    page = ok(client.get("/api/samples", params={"where": "true) --", "limit": 3}))
    assert len(page["rows"]) <= 3
    block = client.get("/api/samples", params={"where": "true) /*", "limit": 2})
    assert block.status_code == 400 or len(block.json()["rows"]) <= 2  # the count's query sees the comment too


def test_an_empty_page_is_an_empty_page(served):
    client = TestClient(create_app(served.path))
    assert ok(client.get("/api/samples", params={"where": "id > 100000"}))["rows"] == []
    assert ok(client.get("/api/samples", params={"offset": 5000}))["rows"] == []
    assert served.take([]).num_rows == 0 and "uri" in served.take([]).column_names


def test_blobs_and_a_text_column_named_thumbnail_are_not_images(tmp_path, rng):
    mem = memstore.open(tmp_path / "odd.mem")
    mem.add(rng.standard_normal((40, 4)).astype(np.float32), ["a", "b"] * 20,
            provenance={"thumbnail": [f"https://example.org/{i}.png" for i in range(40)],
                        "blob": [bytes([i, 255, 0]) for i in range(40)]})
    client = TestClient(create_app(mem.path))
    assert ok(client.get("/api/overview"))["thumbnails"] is False
    row = ok(client.get("/api/rows/3", params={"k": 3}))
    assert row["row"]["thumbnail"] == "https://example.org/3.png" and row["thumbnail"] is None
    decision = ok(client.get("/api/rows/3/explain", params={"k": 3}))
    assert decision["neighbours"][0]["blob"] == "<3 bytes>"
    assert decision["neighbours"][0]["thumbnail"].startswith("https://")
    nested = ok(client.post("/api/sql", json={"query": "SELECT [blob] AS blobs FROM samples LIMIT 1"}))
    assert nested["rows"] == [{"blobs": ["<3 bytes>"]}]
    mem.estimate_quality(k=5)
    candidates = ok(client.get("/api/quality", params={"limit": 3}))["rows"]
    assert candidates and all(r["thumbnail"].startswith("https://") for r in candidates)  # the user's column, kept
    report = mem.forget([5])  # a text column is not a thumbnail to look for
    assert report.thumbnails == 0 and not (mem.path / "forget.pending").exists()


def test_an_explain_of_too_many_neighbours_is_refused(served, rng):
    client = TestClient(create_app(served.path))
    big = client.post("/api/explain", json={"ids": list(range(150)), "k": 150})
    assert big.status_code == 413 and "20,000" in big.json()["detail"]


def test_a_version_that_only_looks_like_a_number_is_not_found(served):
    client = TestClient(create_app(served.path))
    assert client.get("/api/overview", params={"version": "²"}).status_code == 404
    assert client.get("/api/diff", params={"a": "²", "b": "1"}).status_code == 404


def test_the_tables_the_views_read_cannot_be_replaced(served):
    import pyarrow as pa

    with pytest.raises(memstore.InvalidInputError, match="_history"):
        served.sql("SELECT * FROM history", _history=pa.table({"id": [1]}))
