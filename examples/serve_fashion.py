"""Fashion-MNIST in `memstore serve`, seen through a real browser: the screenshots of the README.

A memory of Fashion-MNIST training images (EfficientNet-Lite0 features, ImageNet weights,
frozen; a thumbnail per row) takes the steps a curator would: quality estimated (label-error
candidates), the worst candidates down-weighted, a tag. ``memstore serve``'s app then runs on
loopback and Debian's chromium (headless, Playwright) goes through every page: overview,
samples as thumbnails, a row with its neighbours and the kNN decision, query by an uploaded
test image, label-error candidates, a version diff and the SQL console. Each page is
screenshotted to examples/results/serve_<page>.png, and the time each took to show (from the
click to the page filled, images loaded) goes to examples/results/serve_fashion.{json,md}.

    python examples/serve_fashion.py [--rows 6000] [--memory fashion-serve.mem]

Without Debian's dataset-fashion-mnist it falls back to scikit-learn's digits (8 x 8).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import memstore
from memstore import data

HERE = Path(__file__).parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests"))
from serving import serving  # noqa: E402  (uvicorn in a thread, on loopback)

CHROMIUM = "/usr/bin/chromium"


def dataset(rows: int):
    try:
        train, test = data.load_fashion_mnist("train"), data.load_fashion_mnist("test")
    except data.DatasetNotFoundError as exc:
        print(f"note: {exc}; using scikit-learn's digits instead")
        train, test = data.load_digits("train"), data.load_digits("test")
    return train.subset(np.arange(min(rows, len(train)))), test


def build(path: Path, train) -> memstore.Memory:
    mem = memstore.open(path)
    start = time.perf_counter()
    mem.add_images(train, message=f"{len(train)} training images", progress=True)
    print(f"encoded and added {len(train)} images in {time.perf_counter() - start:.0f} s")
    mem.tag("raw")
    mem.estimate_quality(k=10, message="label-error candidates")
    mem.reweight("SELECT id, 0.2 AS weight FROM samples WHERE wrong_count >= 8",
                 message="down-weight the rows most often a wrong-label neighbour")
    mem.tag("curated")
    return mem


def tour(url: str, query_image: Path, shown: tuple[str, str], rows: int) -> dict:
    """Every page, as a person would go through it; the seconds each took to show."""
    from playwright.sync_api import expect, sync_playwright

    timings = {}

    def shot(name, start, full_page=False):
        timings[name] = round(time.perf_counter() - start, 3)
        page.screenshot(path=RESULTS / f"serve_{name}.png", full_page=full_page)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.set_default_timeout(60_000)
        start = time.perf_counter()
        page.goto(url + "/")
        expect(page.locator("#labels tbody tr").first).to_be_visible()
        shot("overview", start)

        start = time.perf_counter()
        page.click("nav >> text=Samples")
        page.fill("#where", f"label = '{shown[0]}' OR label = '{shown[1]}'")
        page.click("#samples-form button")
        expect(page.locator("#samples-count")).not_to_contain_text(f"{rows:,} rows")  # the filtered page
        expect(page.locator("#samples-count")).to_contain_text("1-100 shown")
        page.wait_for_function("[...document.querySelectorAll('#samples-grid img')]"
                               ".filter(i => i.complete && i.naturalWidth).length === 100")
        shot("samples", start)

        start = time.perf_counter()
        page.locator("#samples-grid a.card").nth(3).click()
        expect(page.locator("#row-neighbours tbody tr")).to_have_count(10)
        page.click("#explain")
        expect(page.locator("#explanation tbody tr")).to_have_count(10)
        shot("row", start, full_page=True)

        start = time.perf_counter()
        page.click("nav >> text=Overview")
        page.set_input_files("#upload", str(query_image))
        page.click("#upload-form button")
        expect(page.locator("#upload-explanation tbody tr")).to_have_count(10)
        page.locator("#upload-box").scroll_into_view_if_needed()
        shot("upload", start)

        start = time.perf_counter()
        page.click("nav >> text=Quality")
        expect(page.locator("#quality tbody tr").first).to_be_visible()
        shot("quality", start)

        start = time.perf_counter()
        page.click("nav >> text=Versions")
        page.fill("#diff-a", "raw")
        page.fill("#diff-b", "curated")
        page.click("#diff-form button")
        expect(page.locator("#diff")).to_contain_text("reweighted")
        shot("versions", start)

        start = time.perf_counter()
        page.click("nav >> text=SQL")
        page.fill("#query", "SELECT label, count(*) AS rows, round(avg(wrong_count), 2) AS mean_wrong, "
                            "count(*) FILTER (WHERE weight < 1) AS down_weighted FROM samples "
                            "GROUP BY label ORDER BY mean_wrong DESC")
        page.click("#sql-form button")
        expect(page.locator("#sql-result tbody tr").first).to_be_visible()
        shot("sql", start)
        browser.close()
    return timings


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=6_000, help="training images in the memory")
    ap.add_argument("--memory", type=Path, default=None,
                    help="keep the memory here, and reuse it if it is already there (encoding is the slow part)")
    args = ap.parse_args(argv)
    from PIL import Image

    from memstore.server import create_app

    train, test = dataset(args.rows)
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        kept = args.memory is not None and args.memory.exists()
        mem = memstore.open(args.memory, create=False) if kept else build(args.memory or Path(tmp) / "fashion.mem", train)
        query = Path(tmp) / "query.png"
        Image.fromarray(test.images[0]).save(query)  # a test image: not in the memory
        with serving(create_app(mem.path)) as url:
            timings = tour(url, query, (train.class_names[7], train.class_names[8]), len(mem))  # Sneaker, Bag
        result = {"rows": len(mem), "versions": mem.version, "dataset": train.name,
                  "candidates": mem.sql("SELECT count(*) FROM samples WHERE weight < 1").fetchall()[0][0],
                  "seconds_to_show": timings}
    (RESULTS / "serve_fashion.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "serve_fashion.md").write_text(
        f"`memstore serve` over {result['rows']:,} {result['dataset']} rows ({result['versions']} versions), "
        "in headless chromium: seconds from the click to the page filled (images loaded), as Playwright's "
        "expect saw it (it polls: an upper bound; benchmarks/bench_server.py measures per frame)\n\n"
        "| page | seconds |\n|---|---|\n" + "".join(f"| {k} | {v:.2f} |\n" for k, v in timings.items()))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
