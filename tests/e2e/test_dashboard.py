"""The live dashboard in headless Chromium (selenium), on a 2-host lab through `autonet ui`.

What a user would look for: the lab's automatons and instances listed, every link drawn
in the graph with its protocol and port, and the page following the lab without a
reload when an automaton is scaled in or a host fails. Without the session token the
page shows its sign-in form and no data (the control: the same page with the token).
A screenshot is saved (in the test's tmp directory, or AUTONET_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.e2e.lab import Lab, interruptible, shop_with

pytestmark = pytest.mark.lab

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
T = TypeVar("T")

SHOP = shop_with("""
kind: Automaton
name: db
spec:
  network: blue-a
  command: [python3, -m, autonet.examples.echo, --port, "5432"]
  provides: [{protocol: pg, transport: tcp, port: 5432}]
  consumes: []
---
kind: Automaton
name: api
spec: {network: blue-a, command: [sleep, infinity], consumes: [pg]}
---
kind: Composition
name: shop
spec:
  links: [{from: client, to: web, protocol: http}, {from: api, to: db, protocol: pg}]
""")


def eventually(probe: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    """The probe's first truthy answer within `timeout` (the page polls every second)."""
    deadline = time.monotonic() + timeout
    last: T = probe()
    while not last and time.monotonic() < deadline:
        time.sleep(0.25)
        last = probe()
    assert last, f"the page never showed {what} (last seen: {last!r})"
    return last


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(hosts=2) as lab:
        lab.apply(SHOP)
        yield lab


@pytest.fixture(scope="module")
def dashboard(lab: Lab) -> Iterator[str]:
    """`autonet ui --port 0` for the lab: its printed URL (with the session token)."""
    env = {**os.environ, "AUTONET_LAB": lab.name}
    proc = subprocess.Popen(
        [sys.executable, "-m", "autonet.cli.main", "ui", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=interruptible,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/ui/#token=\S+)", line)
        assert match, f"autonet ui printed no URL: {line!r}"
        yield match.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,1100")
    with tempfile.TemporaryDirectory(prefix="an-chromium-") as profile:  # else it leaves one in /tmp
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def rows(browser: webdriver.Chrome, table: str) -> dict[str, str]:
    """The rows of a table on the page: name -> state."""
    found = browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
    return {row.get_attribute("data-name") or "": row.get_attribute("data-state") or "" for row in found}


def events(browser: webdriver.Chrome) -> list[str]:
    return [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#events li")]


def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("AUTONET_TEST_ARTIFACTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_without_the_token_the_page_shows_no_data(dashboard: str, browser: webdriver.Chrome) -> None:
    browser.get(dashboard.split("#")[0])
    eventually(lambda: browser.find_element(By.ID, "login").is_displayed(), "the sign-in form")
    assert browser.find_element(By.ID, "status").text == "not signed in"
    assert rows(browser, "instances") == {}
    browser.get(dashboard)  # the control: the same page with the token
    eventually(lambda: len(rows(browser, "instances")) == 6, "the instances once signed in")
    assert not browser.find_element(By.ID, "login").is_displayed()


def test_the_page_lists_the_lab_draws_every_link_and_follows_changes(
    lab: Lab, dashboard: str, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(dashboard)
    expected = {i["name"]: i["status"]["state"] for i in lab.instances()}
    assert len(expected) == 6
    eventually(lambda: rows(browser, "instances") == expected, f"the instances {expected}")
    assert set(rows(browser, "automatons")) == {"web", "db", "client", "api"}
    assert rows(browser, "hosts") == {"h1": "Ready", "h2": "Ready"}
    placed = {i["name"]: i["status"]["host"] for i in lab.instances()}
    for name, host in placed.items():
        cells = browser.find_element(By.CSS_SELECTOR, f'#instances tr[data-name="{name}"]').text
        assert host in cells and "Provisioned" in cells

    # The graph: one edge per link, labelled with the protocol and port the target provides.
    edges = eventually(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#graph svg g.edge"), "the graph's edges"
    )
    labels = sorted(edge.text.replace("\n", " ") for edge in edges)
    assert labels == ["http tcp/8080", "pg tcp/5432"]
    nodes = {node.text.split("\n")[0] for node in browser.find_elements(By.CSS_SELECTOR, "#graph svg g.node")}
    assert nodes == {"web", "db", "client", "api"}

    # An instance's flows: the client talks to web, and the page shows it when clicked.
    talk = lab.cli("exec", "client-0", "--", "python3", "-m", "autonet.examples.http_get", "http://web:8080/")
    assert talk.code == 0, talk.err
    browser.find_element(By.CSS_SELECTOR, '#instances tr[data-name="client-0"]').click()
    eventually(
        lambda: any("8080" in r.text for r in browser.find_elements(By.CSS_SELECTOR, "#flows tbody tr")),
        "client-0's flow to web on port 8080",
    )
    marker = browser.execute_script("window.notReloaded = true; return window.notReloaded")
    assert marker is True

    # Scale in: web-2 leaves the page, and the event list says so, without a reload.
    lab.ok("scale", "web", "2", "--wait")
    eventually(lambda: "web-2" not in rows(browser, "instances"), "web-2 gone after the scale-in")
    eventually(
        lambda: any("Instance web-2" in e and "Deleted" in e for e in events(browser)), "web-2's deletion"
    )
    ready = '#automatons tr[data-name="web"] td.ready'
    assert eventually(lambda: browser.find_element(By.CSS_SELECTOR, ready).text, "web's row") == "2/2"
    runs = browser.find_element(By.CSS_SELECTOR, '#automatons tr[data-name="web"] td.runs').text
    assert runs.startswith("python3 -m autonet.examples.http_echo")  # what the automaton runs

    # A host fails: it and its instances turn Lost on the page.
    on_h2 = sorted(name for name, host in placed.items() if host == "h2" and name != "web-2")
    assert on_h2, placed
    lab.ok("lab", "fail", "h2", "--name", lab.name)
    try:
        eventually(lambda: rows(browser, "hosts").get("h2") == "Lost", "h2 Lost", timeout=20)
        eventually(lambda: any("Host h2" in e and "Lost" in e for e in events(browser)), "h2's Lost event")
        browser.save_screenshot(str(artifacts(tmp_path) / "dashboard.png"))
        assert browser.execute_script("return window.notReloaded") is True  # the same page all along
    finally:
        lab.ok("lab", "heal", "h2", "--name", lab.name)
    eventually(lambda: rows(browser, "hosts").get("h2") == "Ready", "h2 Ready again", timeout=60)
    assert (artifacts(tmp_path) / "dashboard.png").stat().st_size > 10_000
