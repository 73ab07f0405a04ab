"""The page of memstore serve, used as a person would: Debian's chromium, headless, driven by Playwright.

The server runs in a thread of the test process (uvicorn on 127.0.0.1, a free port); the browser
starts with no sandbox and no background networking, and the page must load nothing from
outside (requests to any other host fail the test). Screenshots go to the test's directory.
"""

import socket
import threading
import time

import pytest
import uvicorn
from playwright.sync_api import expect, sync_playwright

from memstore.server import create_app

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def server(served):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(served.path, allow_writes=True), host="127.0.0.1", port=port,
                            log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    for _ in range(200):
        if running.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(timeout=30)


@pytest.fixture
def page(server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        outside = []
        page.on("request", lambda r: None if r.url.startswith(server) else outside.append(r.url))
        page.set_default_timeout(20_000)
        page.goto(server + "/")
        yield page
        browser.close()
        assert not outside, f"the page loaded from outside: {outside}"


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
