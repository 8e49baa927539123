"""The dashboard in a real browser: Debian's Chromium, headless, driven by selenium through Debian's chromedriver.

A 1 bootstrap + 3 worker network of real processes; the browser opens the bootstrap's ``/ui``, waits for the graph
to show the 4 nodes, sees tasks submitted through the API appear and complete in the task stream, and the test
checks that the console has no errors and that no request left 127.0.0.1 (Chrome's network log). Screenshots
(desktop and narrow) go to ``.cache/ui-screenshots/``; with ``P2P_FAST_UPDATE_SCREENSHOTS=1`` they are also copied to
``docs/img/`` (the README shows them). A token-protected node's page shows the token prompt and no data, refuses a
wrong token and opens with the right one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from harness import REPO, Cluster, NodeProcess, node_config, wait_until

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = REPO / ".cache" / "ui-screenshots"
DOCS_IMG = REPO / "docs" / "img"

pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason="needs Debian's chromium and chromium-driver (./test.sh installs them as root)")


def _browser(width: int, height: int) -> Any:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--metrics-recording-only", "--no-default-browser-check"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # The driver named explicitly: selenium must not go looking for (or download) one of its own.
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def _requested_urls(driver: Any) -> list[str]:
    """Every URL the page asked for, from Chrome's DevTools network log (performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            urls.append(msg["params"]["request"]["url"])
    return urls


def _js(driver: Any, expr: str) -> Any:
    """Read the page in one script call: the dashboard redraws often, so held element references go stale."""
    return driver.execute_script("return " + expr)


def _console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def _submit(node: NodeProcess, tasks: list[dict[str, Any]], token: str | None = None) -> list[str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.post(node.http + "/v1/tasks/batch", json={"tasks": tasks}, headers=headers, timeout=30)
    assert r.status_code == 202, r.text
    return r.json()["ids"]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    c = Cluster(tmp_path_factory.mktemp("ui"))
    try:
        boot = c.start("boot", node_config("bootstrap"))
        boot_addr = boot.addr()
        workers = [c.start(f"w{i}", node_config("worker", node={"capabilities": ["compute", "storage"]},
                                                network={"bootstrap_peers": [boot_addr]})) for i in range(3)]

        def live_workers() -> bool:
            doc = httpx.get(boot.http + "/v1/capabilities", timeout=5).json()
            return len(doc["network"].get("compute", [])) >= 3

        wait_until(live_workers, 60, "the bootstrap to see 3 live compute workers")
        yield {"boot": boot, "workers": workers, "cluster": c}
    finally:
        c.close()


def test_dashboard_shows_the_network_and_tasks_live(net: dict[str, Any]) -> None:
    boot, workers = net["boot"], net["workers"]
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(boot.http))
    driver = _browser(1400, 1600)
    try:
        driver.get(boot.http + "/ui")
        wait_until(lambda: _js(driver, "document.querySelector('#graph svg')?.dataset.nodes") == "4",
                   60, "the graph to show 4 nodes")
        shown = set(_js(driver, "[...document.querySelectorAll('#graph g.node')].map(g => g.dataset.peer)"))
        assert shown == {boot.peer_id, *(w.peer_id for w in workers)}
        wait_until(lambda: _js(driver, "document.getElementById('conn').textContent") == "live", 30,
                   "the event stream to be live")

        # Tasks submitted through the API after the page loaded: they reach the page by the event stream only.
        ids = _submit(boot, [{"type": "compute", "payload": f"sha256 20000 ui-{i}"} for i in range(12)]
                      + [{"type": "echo", "payload": f"echo-{i}"} for i in range(30)])

        def all_completed() -> bool:
            states = dict(_js(driver, "[...document.querySelectorAll('#tasks tbody tr')]"
                                      ".map(tr => [tr.dataset.id, tr.dataset.state])"))
            return all(states.get(i) == "completed" for i in ids)

        wait_until(all_completed, 90, "all 42 tasks to show as completed in the task stream")
        bars = int(_js(driver, "document.querySelector('#timeline svg').dataset.bars"))
        assert bars >= len(ids)
        lanes = set(_js(driver, "[...document.querySelectorAll('#timeline .lane-label')].map(e => e.textContent)"))
        assert {"…" + w.peer_id[-6:] for w in workers} <= lanes  # a lane per worker that ran tasks
        assert "batch of 42" in _js(driver, "document.getElementById('batches').textContent")
        wait_until(lambda: _js(driver, "document.querySelectorAll('#workers tbody tr').length") >= 3, 30,
                   "the workers table")
        wait_until(lambda: boot.peer_id in _js(driver, "document.getElementById('node-info').textContent"), 10,
                   "the node's ID")
        # Let a few stats samples draw the time series before the screenshots.
        wait_until(lambda: _js(driver, "Math.min(...[...document.querySelectorAll('#charts polyline')]"
                                       ".map(p => p.points.length))") >= 5 and
                   _js(driver, "document.querySelectorAll('#charts polyline').length") >= 4,
                   40, "the traffic charts to have a few samples")

        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / "dashboard-desktop.png"))
        driver.set_window_size(420, 1800)
        wait_until(lambda: driver.execute_script("return document.querySelector('#graph svg').viewBox.baseVal.width")
                   < 500, 10, "the narrow layout")
        driver.save_screenshot(str(SHOTS / "dashboard-narrow.png"))
        if os.environ.get("P2P_FAST_UPDATE_SCREENSHOTS") == "1":
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            for name in ("dashboard-desktop.png", "dashboard-narrow.png"):
                shutil.copyfile(SHOTS / name, DOCS_IMG / name)

        assert not _console_errors(driver), _console_errors(driver)
        urls = _requested_urls(driver)
        assert any(u.startswith(origin + "/v1/events") for u in urls), urls
        foreign = [u for u in urls if not (u.startswith(origin + "/") or u.startswith("data:"))]
        assert not foreign, f"requests that left 127.0.0.1: {foreign}"
        resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(r.startswith(origin + "/") for r in resources), resources
    finally:
        driver.quit()


def test_swagger_docs_load_from_the_node_alone(net: dict[str, Any]) -> None:
    """``/docs`` is Swagger UI from the fastapi-offline package's files: it renders every route, nothing from a CDN."""
    boot = net["boot"]
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(boot.http))
    driver = _browser(1200, 900)
    try:
        driver.get(boot.http + "/docs")
        wait_until(lambda: _js(driver, "document.querySelectorAll('.opblock').length") >= 10, 60,
                   "Swagger UI to list the operations")
        assert "/v1/events" in _js(driver, "document.body.textContent")
        assert not _console_errors(driver), _console_errors(driver)
        urls = _requested_urls(driver)
        assert any(u == origin + "/openapi.json" for u in urls), urls
        foreign = [u for u in urls if not (u.startswith(origin + "/") or u.startswith("data:"))]
        assert not foreign, f"requests that left 127.0.0.1: {foreign}"
    finally:
        driver.quit()


def test_token_protected_node_shows_the_prompt_not_data(net: dict[str, Any], tmp_path: Path) -> None:
    token = "ui-browser-test-token-0123456789"
    (tmp_path / "token").write_text(token)
    cluster: Cluster = net["cluster"]
    locked = cluster.start("locked", node_config("worker", http={"listen": "127.0.0.1:0",
                                                                 "token_file": str(tmp_path / "token")},
                                                 network={"bootstrap_peers": [net["boot"].addr()]}))
    driver = _browser(1200, 900)
    try:
        driver.get(locked.http + "/ui")
        prompt = driver.find_element(By.ID, "token-prompt")
        wait_until(prompt.is_displayed, 30, "the token prompt")
        assert not driver.find_element(By.ID, "app").is_displayed()
        body = driver.find_element(By.TAG_NAME, "body").text
        assert locked.peer_id not in body and "bootstrap" not in body.lower()
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / "dashboard-token-prompt.png"))

        field = driver.find_element(By.ID, "token-input")
        field.send_keys("not-the-right-token-at-all")
        driver.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait_until(lambda: "refused" in _js(driver, "document.getElementById('token-error').textContent"), 20,
                   "the wrong token refused")
        assert not driver.find_element(By.ID, "app").is_displayed()

        driver.find_element(By.ID, "token-input").send_keys(token)
        driver.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait_until(lambda: locked.peer_id in _js(driver, "document.getElementById('node-info').textContent"), 30,
                   "the node's data")
        wait_until(lambda: _js(driver, "document.getElementById('conn').textContent") == "live", 30,
                   "the event stream with the token")
        assert driver.execute_script("return sessionStorage.getItem('p2p-fast-api-token')") == token
        assert driver.execute_script("return localStorage.length") == 0  # kept in the tab only
        # The 401s of the refused token are the only errors the console may show.
        errors = [e for e in _console_errors(driver) if "401" not in e.get("message", "")]
        assert not errors, errors
    finally:
        driver.quit()
