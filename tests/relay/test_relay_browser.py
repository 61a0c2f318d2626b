"""In a real browser (Debian's headless Chromium, driven by Playwright): the owner logs in, sees a
charge.started arrive live, presses "Later", and sees the command result and the car's answer.

Needs `apt-get install chromium` and `pip install playwright` (never `playwright install`: the
system browser is used)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from relay_testkit import PASSWORD, CarPublisher, base_url
from responder import StandInCar

from relay.admin import add_vehicles, grant
from relay.server import Relay
from relay.signing import load_key

ROOT = Path(__file__).resolve().parents[2]
AGENT_CONFIG = ROOT / "config" / "vehicles" / "carfriend-ev.toml"

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# The relay on one database: these tests are about the browser, the agent or the broker.
pytestmark = [pytest.mark.slow, pytest.mark.backends("sqlite")]


@pytest.fixture
def page() -> Iterator[sync_api.Page]:
    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        browser.close()


def test_owner_answers_later_in_the_browser_and_sees_the_result(
        relay: Relay, car: CarPublisher, page: sync_api.Page) -> None:
    standin = StandInCar(relay.config.mqtt.host, relay.config.mqtt.port, "car-a",
                         load_key(relay.config.keys.dir, "car-a"))
    try:
        page.goto(f"{base_url(relay)}/v/car-a")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/v/car-a")
        page.wait_for_function("document.querySelector('#timeline .empty') !== null")
        # The page is open and listening; the car now says something.
        car.message("car-a", "charge.started", severity="info", question=["ok", "later"],
                    text="I'm charging. The charge will be completed by 2:15 a.m. Is that OK?",
                    data={"eta": "2026-11-22T02:15:00.000Z"})
        bubble = page.locator("article[data-kind='charge.started']")
        bubble.wait_for()
        assert "Is that OK?" in bubble.inner_text()
        bubble.get_by_role("button", name="Later").click()
        mine = page.locator("article.bubble.me")
        mine.wait_for()
        page.wait_for_selector("article.bubble.me[data-status='completed']")
        assert "Later" in mine.inner_text() and "Done" in mine.inner_text()
        page.get_by_text("OK, I'll start charging at 11:00 p.m.").wait_for()
        assert bubble.locator(".answers").count() == 0  # answered: no buttons any more
        assert standin.received[0][0] == "reply" and standin.received[0][2] is True
    finally:
        standin.close()


def test_owner_answers_the_real_agent_in_the_browser(relay: Relay, page: sync_api.Page,
                                                     tmp_path: Path) -> None:
    """The same with the real agent and simulator (`carfriend run --simulate`) as the car."""
    vid = "carfriend-ev-0001"
    with relay.ctx.sessions() as s:
        add_vehicles(s, relay.config, [vid], name="Kit", generate_key=True)
        grant(s, "alice", "owner", vid)
    page.goto(f"{base_url(relay)}/v/{vid}")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/v/{vid}")
    page.wait_for_function("document.querySelector('#timeline .empty') !== null")
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "CARFRIEND_MQTT__HOST": relay.config.mqtt.host,
           "CARFRIEND_MQTT__PORT": str(relay.config.mqtt.port),
           "CARFRIEND_STORAGE__STATE_DIR": str(tmp_path / "agent-state"),
           "CARFRIEND_COMMAND_KEY": load_key(relay.config.keys.dir, vid).decode()}
    with (tmp_path / "agent.log").open("wb") as log:
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "run", "--config", str(AGENT_CONFIG),
             "--simulate", "plugged-in-at-home", "--speed", "30"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            bubble = page.locator("article[data-kind='charge.started']")
            bubble.wait_for(timeout=60_000)
            assert "Is that OK?" in bubble.inner_text()
            bubble.get_by_role("button", name="Later").click()
            page.wait_for_selector("article.bubble.me[data-status='completed']", timeout=60_000)
            assert "Later" in page.locator("article.bubble.me").inner_text()
            page.locator("article[data-kind='charge.scheduled']").wait_for(timeout=30_000)
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
