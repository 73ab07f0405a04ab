"""The page of memstore serve, used as a person would: Debian's chromium, headless, driven by Playwright.

The server runs in a thread of the test process (uvicorn on 127.0.0.1, a free port); the browser
starts with no sandbox and no background networking, and the page must load nothing from
outside (requests to any other host fail the test). Screenshots go to the test's directory.
"""

import contextlib
import io

import numpy as np
import pytest
from playwright.sync_api import expect, sync_playwright
from serving import serving

import memstore
from memstore.server import create_app

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def server(served):
    with serving(create_app(served.path, allow_writes=True)) as url:
        yield url


@contextlib.contextmanager
def browsing(url):
    """A page of headless chromium at ``url``; it must request nothing from any other host."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        outside = []
        local = (url, "data:", "blob:")  # thumbnails come inline; an upload's preview is a blob
        page.on("request", lambda r: None if r.url.startswith(local) else outside.append(r.url))
        page.set_default_timeout(20_000)
        page.goto(url + "/")
        yield page
        browser.close()
        assert not outside, f"the page loaded from outside: {outside}"


@pytest.fixture
def page(server):
    with browsing(server) as page:
        yield page


@pytest.fixture
def pictures(tmp_path, rng):
    """A memory of 150 8 x 8 images (three classes: a bright left half, top half or diagonal, in
    noise; three rows mislabelled), flattened by a torch encoder; quality estimated."""
    import torch

    from memstore.encoders import TorchEncoder

    mem = memstore.open(tmp_path / "pictures.mem")
    mem.encoder = TorchEncoder(torch.nn.Flatten(), dim=192, name="test/flatten", device="cpu")
    y = np.arange(150) % 3
    rows, cols = np.mgrid[:8, :8]
    shapes = np.stack([cols < 4, rows < 4, np.abs(rows - cols) < 2]) * 200
    mem.images = np.clip(shapes[y] + rng.integers(0, 60, (150, 8, 8)), 0, 255).astype(np.uint8)
    labels = np.array(["left", "top", "diagonal"])[y]
    labels[[0, 3, 6]] = "top"  # three wrong labels, for the quality page to find
    mem.add_images(mem.images, labels, encoder=mem.encoder)
    mem.estimate_quality(k=5)
    with serving(create_app(mem.path, encoder=mem.encoder)) as url, browsing(url) as page:
        page.memory = mem
        yield page


def test_overview_then_a_row_its_neighbours_and_its_decision(page, served, tmp_path):
    expect(page.locator("#facts")).to_contain_text("300")
    expect(page.locator("#labels tbody tr")).to_have_count(3)
    page.screenshot(path=tmp_path / "overview.png")
    page.click("nav >> text=Samples")
    page.fill("#where", "label = 'owl' AND id > 100")
    page.click("#samples-form button")
    owls = served.sql("SELECT count(*) FROM samples WHERE label = 'owl' AND id > 100").fetchall()[0][0]
    expect(page.locator("#samples-count")).to_contain_text(f"{owls} rows")
    first = served.sql("SELECT min(id) FROM samples WHERE label = 'owl' AND id > 100").fetchall()[0][0]
    page.locator("#samples tbody tr").first.click()
    expect(page.locator("#row-id")).to_have_text(str(first))
    expect(page.locator("#row-neighbours tbody tr")).to_have_count(10)
    expect(page.locator("#row-history tbody tr")).to_have_count(2)  # added, then quality estimated
    page.fill("#explain-k", "7")
    page.click("#explain")
    expect(page.locator("#prediction")).to_contain_text("predicted")
    expect(page.locator("#explanation tbody tr")).to_have_count(7)
    page.screenshot(path=tmp_path / "row.png", full_page=True)
    # a neighbour of the decision opens that row
    neighbour = page.locator("#explanation tbody tr").first.locator("td").nth(1).inner_text()
    page.locator("#explanation tbody tr").first.click()
    expect(page.locator("#row-id")).to_have_text(neighbour)


def test_sql_versions_and_a_diff(page, served, tmp_path):
    page.click("nav >> text=SQL")
    page.fill("#query", "SELECT label, count(*) AS n FROM samples GROUP BY label ORDER BY label")
    page.click("#sql-form button")
    expect(page.locator("#sql-result tbody tr")).to_have_count(3)
    expect(page.locator("#sql-count")).to_have_text("3 rows")
    page.fill("#query", "DELETE FROM samples")
    page.click("#sql-form button")
    expect(page.locator("#error")).to_contain_text("read-only")
    page.screenshot(path=tmp_path / "sql.png")
    page.click("nav >> text=Versions")
    expect(page.locator("#timeline tbody tr")).to_have_count(4)
    page.fill("#diff-a", "first")
    page.fill("#diff-b", "3")
    page.click("#diff-form button")
    relabelled = int((served.y[:5] != "owl").sum())
    expect(page.locator("#diff")).to_contain_text("From version 1 to 3")
    expect(page.locator("#diff tbody tr").nth(3)).to_contain_text(f"relabelled{relabelled}")
    page.screenshot(path=tmp_path / "versions.png")
    # the version picker: the samples of version 1 show the labels before the relabel
    page.select_option("#version", "first")
    page.click("nav >> text=Samples")
    expect(page.locator("#samples-count")).to_contain_text("version 1")
    expect(page.locator("#samples tbody tr").first.locator("td").nth(1)).to_have_text(served.y[0])


def _loaded_images(locator) -> int:
    return locator.evaluate_all("imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length")


def test_samples_as_thumbnails_a_row_with_its_pictures_and_an_uploaded_image(pictures, tmp_path):
    from PIL import Image

    page = pictures
    page.click("nav >> text=Samples")
    cards = page.locator("#samples-grid a.card")
    expect(cards).to_have_count(100)
    assert _loaded_images(page.locator("#samples-grid img")) == 100
    page.screenshot(path=tmp_path / "samples-grid.png")
    page.fill("#where", "label = 'diagonal'")
    page.click("#samples-form button")
    expect(page.locator("#samples-count")).to_contain_text("50 rows; 1-50 shown")  # not "150 rows; 1-100"
    cards.first.click()
    expect(page.locator("#row-id")).to_have_text("2")
    assert _loaded_images(page.locator("#row-picture img, #row-neighbours img")) == 11
    page.click("nav >> text=Overview")
    image = tmp_path / "query.png"
    Image.fromarray(page.memory.images[4]).save(image)  # row 4's own image: it is its own nearest row
    page.set_input_files("#upload", str(image))
    page.click("#upload-form button")
    expect(page.locator("#upload-prediction")).to_contain_text("predicted top")
    expect(page.locator("#upload-explanation tbody tr").first.locator("td").nth(2)).to_have_text("4")
    page.screenshot(path=tmp_path / "upload.png")
    page.click("nav >> text=Quality")
    expect(page.locator("#quality tbody tr").first).to_be_visible()
    assert _loaded_images(page.locator("#quality img")) >= 6


def test_a_link_to_a_row_shows_it_with_its_forget_button(page, server):
    page.goto(server + "/#row/7")  # the row loads beside the overview, not after it
    expect(page.locator("#row-id")).to_have_text("7")
    expect(page.locator("#row-neighbours tbody tr")).to_have_count(10)
    expect(page.locator("#forget-box")).to_be_visible()  # the server allows writes: known once the overview answers
