"""`memstore serve` on a large memory: each page through the API and in a real browser.

    python benchmarks/bench_server.py                      # 1,000,000 x 128, 100,000 rows relabelled
    python benchmarks/bench_server.py --rows 200000 --changed 20000

A memory of ``--rows`` random vectors (10 labels, a uri and a real thumbnail per row: the
Fashion-MNIST training images, cycled) is built by adds of 100,000 rows, then ``--changed``
random rows are relabelled in one write (the version diff measured below spans them) and a
few rows are added. ``memstore serve`` runs as its own process (as a user starts it) and is
measured two ways:

- through the API (httpx, as the page's fetch calls it): the first call of each endpoint
  (cold: what the server builds once, such as the search over every vector) and the median
  of ``REPEAT`` calls after it;
- in headless chromium (Playwright, Debian's /usr/bin/chromium): from navigation or click to
  the page filled: the overview, the samples page as 100 thumbnails (images decoded), a row
  with its neighbours, and the version diff.

Goal (issue 18): each under 300 ms, the diff under 1 s. Writes benchmarks/results/server-<rows>.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

import memstore
from bench_store import write_results

RESULTS = Path(__file__).resolve().parent / "results"
REPEAT = 5
ADD_ROWS = 100_000
CHROMIUM = "/usr/bin/chromium"


def thumbnails(n_distinct: int = 10_000) -> list[bytes]:
    """Real thumbnails: Fashion-MNIST training images as add_images keeps them (noise without it)."""
    from memstore import data
    from memstore.thumbnails import DEFAULT_SIZE, make_thumbnails

    try:
        images = data.load_fashion_mnist("train").images[:n_distinct]
    except data.DatasetNotFoundError:
        images = np.random.default_rng(0).integers(0, 256, (n_distinct, 28, 28), dtype=np.uint8)
    return make_thumbnails(images[..., None], DEFAULT_SIZE).to_pylist()


def build(path: Path, rows: int, dim: int, changed: int) -> tuple[memstore.Memory, int, int]:
    """The memory; returns it and the versions before and after the relabel of ``changed`` rows."""
    rng = np.random.default_rng(0)
    pictures = thumbnails()
    centres = rng.standard_normal((100, dim)).astype(np.float32)
    mem = memstore.open(path)
    start = time.perf_counter()
    for first in range(0, rows, ADD_ROWS):
        n = min(ADD_ROWS, rows - first)
        which = rng.integers(0, len(centres), n)
        x = centres[which] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
        ids = np.arange(first, first + n)
        mem.add(x, (which % 10).astype(str), provenance={
            "uri": [f"img/{i:07d}.png" for i in ids], "split": "train",
            "thumbnail": pa.array([pictures[i % len(pictures)] for i in ids], pa.binary())})
    before = mem.version
    relabel = rng.choice(rows, changed, replace=False)
    mem.relabel(pa.table({"id": pa.array(relabel, pa.int64()),
                          "label": pa.array(rng.integers(0, 10, changed).astype(str))}))
    after = mem.version
    mem.add(rng.standard_normal((10, dim)).astype(np.float32), ["0"] * 10)
    print(f"built {len(mem):,} rows x {dim} in {time.perf_counter() - start:.0f} s", flush=True)
    return mem, before, after


def serve(path: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "memstore.cli", "serve", str(path), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    import httpx

    for _ in range(600):
        try:
            httpx.get(url + "/api/versions", timeout=60)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"memstore serve did not start: {process.stderr.read().decode()[-2000:]}")


def api(url: str, calls: dict) -> dict:
    """name -> (first call ms, median of REPEAT more ms, response bytes)."""
    import httpx

    out = {}
    with httpx.Client(base_url=url, timeout=600) as client:
        for name, (method, path, kwargs) in calls.items():
            times = []
            for _ in range(1 + REPEAT):
                start = time.perf_counter()
                answer = client.request(method, path, **kwargs)
                times.append(1e3 * (time.perf_counter() - start))
                answer.raise_for_status()
            out[name] = {"first_ms": round(times[0], 1), "median_ms": round(statistics.median(times[1:]), 1),
                         "bytes": len(answer.content)}
            print(name, out[name], flush=True)
    return out


def browser(url: str, row_id: int, before: int, after: int) -> dict:
    """Milliseconds from navigation (or click) to the page filled, each page measured REPEAT times (median)."""
    from playwright.sync_api import sync_playwright

    clock = {}

    def until(page, condition: str, arg=None):
        """Wait for a JS condition, checked every animation frame: Playwright's ``expect`` retries
        after 100, 250, 500 and 1000 ms, which would round every time up to its next retry."""
        page.wait_for_function(condition, arg=arg, polling="raf")

    rows_of = "([sel, n]) => document.querySelectorAll(sel + ' tbody tr').length === n"
    loaded = ("n => [...document.querySelectorAll('#samples-grid img')]"
              ".filter(i => i.complete && i.naturalWidth).length === n")

    def fresh(page, hash_):  # a new page load, the clock started just before it
        page.goto("about:blank")
        clock['start'] = time.perf_counter()
        page.goto(f"{url}/#{hash_}")

    def overview(page):
        fresh(page, "overview")
        until(page, rows_of, ["#labels", 10])

    def samples(page):
        overview(page)
        clock['start'] = time.perf_counter()
        page.click("nav >> text=Samples")
        until(page, loaded, 100)

    def row(page):
        fresh(page, f"row/{row_id}")
        until(page, rows_of, ["#row-neighbours", 10])

    def version_diff(page):
        fresh(page, "versions")
        until(page, "() => document.querySelectorAll('#timeline tbody tr').length > 0")
        page.fill("#diff-a", str(before))
        page.fill("#diff-b", str(after))
        clock['start'] = time.perf_counter()
        page.click("#diff-form button")
        until(page, "() => document.querySelector('#diff').textContent.includes('relabelled')")

    steps = {"overview": overview, "samples, 100 thumbnails": samples, "a row and its neighbours": row,
             "version diff": version_diff}
    out = {}
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking"])
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(120_000)
        for name, step in steps.items():
            times = []
            for _ in range(1 + REPEAT):
                step(page)
                times.append(1e3 * (time.perf_counter() - clock['start']))
            paint = page.evaluate("performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null")
            out[name] = {"first_ms": round(times[0], 1), "median_ms": round(statistics.median(times[1:]), 1)}
            if paint is not None and name == "overview":
                out[name]["first_contentful_paint_ms"] = round(paint, 1)
            print(name, out[name], flush=True)
        chromium.close()
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--changed", type=int, default=100_000, help="rows relabelled in the version the diff spans")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(dir=args.workdir, prefix="bench-server-"))
    try:
        mem, before, after = build(root / "served.mem", args.rows, args.dim, args.changed)
        row_id = args.rows // 2
        process, url = serve(mem.path)
        try:
            calls = {
                "overview": ("GET", "/api/overview", {}),
                "samples, 100 rows": ("GET", "/api/samples", {"params": {"limit": 100}}),
                "samples, 100 thumbnails": ("GET", "/api/samples", {"params": {"limit": 100, "thumbnails": True}}),
                "samples, filtered, sorted, deep page": ("GET", "/api/samples", {"params": {
                    "where": "label = '3'", "order": "uri", "descending": True, "offset": args.rows // 20,
                    "limit": 100}}),
                "a row and its neighbours": ("GET", f"/api/rows/{row_id}", {"params": {"k": 10}}),
                "a row's decision (explain)": ("GET", f"/api/rows/{row_id}/explain", {"params": {"k": 10}}),
                "a thumbnail file": ("GET", f"/api/rows/{row_id}/thumbnail", {}),
                f"version diff, {args.changed:,} relabelled": ("GET", "/api/diff", {"params": {"a": before, "b": after}}),
                "SQL: count by label": ("POST", "/api/sql", {"json": {
                    "query": "SELECT label, count(*) AS n FROM samples GROUP BY label ORDER BY n DESC"}}),
                "search, 1 query (API)": ("POST", "/api/search", {"json": {
                    "vectors": np.asarray(mem.samples.vectors[:1], float).tolist(), "k": 10}}),
            }
            result = {"rows": len(mem), "dim": args.dim, "changed": args.changed, "versions": mem.version,
                      "bytes_on_disk": mem.info()["bytes_on_disk"], "api": api(url, calls),
                      "browser": browser(url, row_id, before, after),
                      "machine": platform.processor() or platform.machine()}
        finally:
            process.terminate()
            process.wait(timeout=30)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    write_results(RESULTS / f"server-{args.rows}", result, markdown)
    print(markdown(result))
    return result


def markdown(result: dict) -> str:
    head = (f"`memstore serve` over {result['rows']:,} x {result['dim']} rows with thumbnails "
            f"({result['bytes_on_disk'] / 1e9:.1f} GB on disk); ms, first call and median of {REPEAT} after it\n\n"
            "| through | what | first ms | median ms |\n|---|---|---|---|\n")
    lines = [f"| API | {name} | {r['first_ms']:.0f} | {r['median_ms']:.0f} |" for name, r in result["api"].items()]
    lines += [f"| chromium | {name} | {r['first_ms']:.0f} | {r['median_ms']:.0f} |"
              for name, r in result["browser"].items()]
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
