"""The browser side of notifications in Debian's headless Chromium (Playwright): the service
worker registers, the permission flow of "Notify me", a real Web Push (sent by the relay to the
local push service, decrypted there) delivered into the service worker, which shows it; an
answer button sends the signed reply the stand-in car confirms; a tap opens the conversation."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from notify_kit import PushService, subscribe
from relay_testkit import PASSWORD, CarPublisher, base_url, login, wait_until
from responder import StandInCar

from relay.server import Relay
from relay.signing import load_key

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-component-update", "--disable-sync"]
pytestmark = pytest.mark.slow


@pytest.fixture
def browser() -> Iterator[Any]:
    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS, headless=True)
        yield b
        b.close()


def poll(page: Any, expression: str, timeout_s: float = 15.0) -> Any:
    """page.evaluate until truthy (wait_for_function evaluates strings, which the relay's CSP
    rightly forbids)."""
    return wait_until(lambda: page.evaluate(expression), timeout_s, expression[:60])


def log_in(page: Any, relay: Relay, path: str) -> None:
    page.goto(f"{base_url(relay)}/login?next={path}")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")


def test_notify_me_asks_for_permission_and_says_why_it_failed(nrelay: Relay, browser: Any) -> None:
    url = base_url(nrelay)
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(15_000)
    log_in(page, nrelay, "/settings")
    scope = page.evaluate("navigator.serviceWorker.ready.then(r => r.active.scriptURL)")
    assert scope == f"{url}/sw.js"
    button = page.locator("#notify-me")
    button.wait_for()
    context.grant_permissions([], origin=url)  # the user says no
    page.evaluate("() => { window.realAsk = Notification.requestPermission; "
                  "Object.defineProperty(Notification, 'requestPermission', "
                  "{value: async () => 'denied', configurable: true, writable: true}); }")
    button.click()
    page.locator("#push-error").wait_for()
    assert "blocked" in page.locator("#push-error").inner_text()
    context.grant_permissions(["notifications"], origin=url)  # now yes
    page.evaluate("() => { Notification.requestPermission = window.realAsk; }")
    button.click()
    poll(page, "!document.querySelector('#push-error').hidden && "
               "document.querySelector('#push-error').textContent.includes('push service') "
               "|| document.querySelector('#notify-me').dataset.state === 'on'")
    # Headless Chromium has no push service to subscribe with (no network): the page says so,
    # or (should a build have one) the device is now subscribed.
    print("after permission:", page.locator("#push-error").inner_text(),
          page.locator("#notify-me").get_attribute("data-state"))
    manifest = page.evaluate("fetch('/manifest.webmanifest').then(r => r.json())")
    assert manifest["display"] == "standalone" and len(manifest["icons"]) == 2
    context.close()


def test_a_push_is_shown_answered_from_its_button_and_opens_the_conversation(
        nrelay: Relay, browser: Any, push: PushService, car: CarPublisher) -> None:
    url = base_url(nrelay)
    context = browser.new_context(viewport={"width": 390, "height": 844})
    context.grant_permissions(["notifications"], origin=url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    log_in(page, nrelay, "/settings")
    page.evaluate("navigator.serviceWorker.ready")
    cdp = context.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    cdp.on("ServiceWorker.workerRegistrationUpdated", lambda e: registrations.extend(e["registrations"]))
    cdp.send("ServiceWorker.enable")
    for _ in range(100):  # Playwright's sync API delivers events only while it is called
        if registrations:
            break
        page.wait_for_timeout(100)
    assert registrations, "the service worker registration"
    # The relay sends to this test's push service (a subscription made with the test's keys,
    # for the logged-in user): decrypted there, it is what the browser's push service delivers.
    assert subscribe(login(nrelay, "alice"), push.subscription("alice-phone")).json()["ok"]
    standin = StandInCar(nrelay.config.mqtt.host, nrelay.config.mqtt.port, "car-a",
                         load_key(nrelay.config.keys.dir, "car-a"))
    try:
        car.message("car-a", "charge.started", severity="info", question=["ok", "later"],
                    text="The charge will be completed by 2:15 a.m. Is that OK?")
        wait_until(lambda: push.to("/push/alice-phone"), 5, "the push")
        body = push.to("/push/alice-phone")[0]
        plain = push.decrypt("alice-phone", body)
        reg = registrations[-1]
        cdp.send("ServiceWorker.deliverPushMessage", {
            "origin": url + "/", "registrationId": reg["registrationId"],
            "data": json.dumps(plain)})
        (note,) = poll(page,
            "navigator.serviceWorker.ready.then(r => r.getNotifications()).then(ns => ns.length && "
            "ns.map(n => ({title: n.title, body: n.body, actions: n.actions.map(a => a.action), data: n.data})))")
        assert note["body"] == plain["body"] and note["actions"] == ["ok", "later"]
        sw = context.service_workers[0]
        result = sw.evaluate("data => handleClick(data, 'later')", note["data"])
        assert result["ok"], result
        wait_until(lambda: standin.received, 10, "the car got the reply")
        name, command, signature_ok = standin.received[0]
        assert name == "reply" and signature_ok and command["args"]["answer"] == "later"
        poll(page, "navigator.serviceWorker.ready.then(r => r.getNotifications()).then(ns => "
                   "ns.some(n => n.body === 'You answered: Later'))")
        # A tap (no action) opens the conversation at the message. Chromium lets a worker open
        # a window only inside a real notificationclick, which headless cannot produce: the
        # worker's openWindow is recorded instead, and the page it names is opened here.
        opened = sw.evaluate("""data => {
            const calls = [];
            self.clients.openWindow = async (u) => { calls.push(u); return null; };
            return handleClick(data, '').then(() => calls);
        }""", note["data"])
        assert len(opened) == 1 and opened[0].startswith(f"{url}/v/car-a#m-")
        page.goto(opened[0])
        seq = opened[0].rsplit("#m-", 1)[1]
        page.locator(f"article#m-{seq}[data-kind='charge.started']").wait_for()
        page.get_by_text("OK, I'll start charging at 11:00 p.m.").wait_for()
        # An answer that fails (here: logged out) opens the conversation instead.
        page.evaluate("() => fetch('/logout', {method: 'POST', body: new URLSearchParams("
                      "{csrf: document.querySelector('meta[name=csrf]').content})})")
        page.goto(f"{url}/login")
        opened = sw.evaluate("""data => {
            const calls = [];
            self.clients.openWindow = async (u) => { calls.push(u); return null; };
            return handleClick(data, 'ok').then((r) => [r, calls]);
        }""", note["data"])
        assert opened[0]["opened"] and len(opened[1]) == 1 and len(standin.received) == 1
    finally:
        standin.close()
        context.close()

