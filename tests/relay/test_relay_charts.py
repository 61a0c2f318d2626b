"""Charts on the vehicle page (relay/charts.py): sessions and energy from the state history,
SVG geometry, and the page in a real browser (Debian's headless Chromium): it renders, fits the
Content-Security-Policy, and has a table for screen readers."""

from __future__ import annotations

import math
import os
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from relay_testkit import CarPublisher, base_url, login, wait_until

from relay import charts
from relay.charts import Sample
from relay.models import StateRecord, utcnow
from relay.server import Relay

NOW = datetime(2026, 11, 22, 12, 0)
SOC, CHARGING, POWER, AUX = charts.SOC, charts.CHARGING, charts.POWER, charts.AUX_V


def week_of_history(now: datetime, every: timedelta = timedelta(minutes=10)) -> list[Sample]:
    """A simulated week: the battery drains while driving, charges 30 -> 80 % at 7 kW every
    other evening, the 12 V battery sags overnight and dips below 11.8 V once."""
    out, t, soc, charged_on = [], now - timedelta(days=7), 75.0, None
    while t <= now:
        charging = t.weekday() % 2 == 0 and t.hour >= 19 and charged_on != t.date()
        if charging and soc >= 80:
            charging, charged_on = False, t.date()  # done for tonight
        soc = min(80.0, soc + 1.9) if charging else max(5.0, soc - 0.12)
        aux = 14.2 if charging else 12.5 - 0.4 * math.sin(t.hour / 24 * math.pi)
        if t.weekday() == 3 and t.hour == 4:
            aux = 11.6
        out.append(Sample(t, soc, charging, 7.0 if charging else -2.0, aux))
        t += every
    return out


# -- pure ---------------------------------------------------------------------------------------

def test_a_session_runs_from_the_first_charging_sample_to_the_first_that_is_not() -> None:
    t = NOW
    samples = [Sample(t, 30, False, 0), Sample(t + timedelta(minutes=10), 31, True, 12.0),
               Sample(t + timedelta(minutes=20), 33, True, 12.0),
               Sample(t + timedelta(minutes=30), 35, False, 0.0),
               Sample(t + timedelta(hours=3), 61, True, 7.0)]
    first, second = charts.charge_sessions(samples)
    assert (first.start, first.end) == (samples[1].ts, samples[3].ts)
    assert (first.soc_start, first.soc_end, first.ongoing) == (31, 35, False)
    # 10 min at 12 kW, then 12 kW falling to 0 over the next 10 min: 2 + 1 kWh
    assert first.energy_kwh == pytest.approx(3.0)
    assert second.ongoing and second.energy_kwh is None  # one sample: nothing to integrate


def test_power_is_not_integrated_across_a_gap_where_the_car_said_nothing() -> None:
    t = NOW
    samples = [Sample(t, 20, True, 10.0), Sample(t + timedelta(minutes=10), 22, True, 10.0),
               Sample(t + timedelta(hours=5), 70, True, 10.0), Sample(t + timedelta(hours=5, minutes=6), 71, False, 10.0)]
    (sess,) = charts.charge_sessions(samples)
    assert sess.energy_kwh == pytest.approx(10 / 6 + 1.0, abs=0.01)  # the 4 h 50 min gap left out
    assert sess.soc_added == pytest.approx(51)


def test_values_a_car_stored_before_the_checks_never_break_a_chart() -> None:
    bad = [charts.sample(NOW - timedelta(minutes=i), v, c, p, a) for i, (v, c, p, a) in
           enumerate([(float("inf"), 1, "x", None), (10**400, "yes", float("nan"), [1]),
                      (True, None, {}, -1e300), (55.5, True, 3.0, 12.4)])]
    assert [s.soc for s in bad] == [None, None, None, 55.5]
    assert [s.charging for s in bad] == [None, None, None, True]
    built = charts.build(sorted(bad, key=lambda s: s.ts), NOW)
    assert built.soc_day.summary.startswith("Battery between 56 % and 56 %")
    assert built.aux.summary.startswith("12 V battery between 12.4 V")


def test_the_line_breaks_where_the_car_was_silent_and_maps_0_and_100_percent_to_the_plot_edges() -> None:
    start = NOW - timedelta(days=1)
    points = [(start + timedelta(hours=1), 0.0), (start + timedelta(hours=2), 100.0),
              (start + timedelta(hours=9), 50.0), (start + timedelta(hours=10), 50.0)]
    paths = charts.line_paths(points, start, NOW, 0, 100, timedelta(hours=2))
    assert len(paths) == 2
    coords = [tuple(map(float, xy.split(","))) for xy in re.findall(r"[\d.]+,[\d.]+", paths[0])]
    assert coords[0][1] == charts.HEIGHT - charts.BOTTOM and coords[1][1] == charts.TOP
    assert charts.LEFT < coords[0][0] < coords[1][0] < charts.WIDTH - charts.RIGHT


def test_a_simulated_week_gives_sessions_energy_and_a_low_voltage_day() -> None:
    built = charts.build(week_of_history(NOW), NOW)
    sessions = built.energy.sessions
    assert 3 <= len(sessions) <= 4
    for s in sessions:  # 7 kW for the session's length, less the ramp down at the end
        hours = (s.end - s.start).total_seconds() / 3600
        assert s.energy_kwh == pytest.approx(7 * hours, abs=1.0) and s.soc_end == pytest.approx(80, abs=0.2)
    assert built.energy.unit == "kWh" and len(built.energy.bars) == len(sessions)
    assert len(built.soc_week.bands) == 4 and len(built.soc_week.table) in (28, 29)  # every 6 h
    assert len(built.soc_day.table) in (24, 25)  # every hour
    assert "below 11.8 V at times" in built.aux.summary
    assert [t.label for t in built.soc_day.x_ticks] == ["18:00", "00:00", "06:00"]
    assert len(built.soc_week.x_ticks) == 7 and built.soc_week.x_ticks[0].fmt == "day"


# -- the page ----------------------------------------------------------------------------------

def store_history(relay: Relay, samples: list[Sample]) -> None:
    with relay.ctx.sessions() as s, s.begin():
        s.add_all(StateRecord(vehicle_id="car-a", ts=x.ts, received_at=x.ts, signals={
            SOC: {"value": x.soc}, CHARGING: {"value": x.charging}, POWER: {"value": None if x.power_kw is None else x.power_kw * 1000},
            AUX: {"value": x.aux_v}, "Vehicle.Speed": {"value": 0}}) for x in samples)


def test_owner_sees_charts_with_tables_family_sees_none(relay: Relay) -> None:
    store_history(relay, week_of_history(utcnow()))
    page = login(relay, "alice").get("/v/car-a").text
    assert page.count("<svg") == 4 and page.count('role="img"') == 4
    assert 'id="chart-energy"' in page and "kWh added in all" in page
    assert page.count('class="band"') >= 3 and page.count("<table>") == 4
    assert "style=" not in page and "<script>" not in page  # nothing the CSP would block
    family = login(relay, "fay").get("/v/car-a").text
    assert "<svg" not in family and "Battery history" not in family


def test_state_published_by_a_car_shows_on_the_chart(relay: Relay, car: CarPublisher) -> None:
    now = utcnow()
    for i, (soc, charging) in enumerate([(40, True), (45, True), (52, False)]):
        ts = (now - timedelta(minutes=30 - 10 * i)).isoformat(timespec="milliseconds") + "Z"
        car.publish("carfriend/v1/car-a/state", {"vehicle_id": "car-a", "ts": ts, "full": True,
                    "signals": {SOC: {"value": soc}, CHARGING: {"value": charging}}})
    wait_until(lambda: relay.ingest.stored >= 3, 10, "three state documents stored")
    page = login(relay, "alice").get("/v/car-a").text
    assert "Battery between 40 % and 52 %, now 52 %; 1 charging session." in page


sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")


@pytest.mark.slow
def test_charts_render_in_chromium_on_a_phone(relay: Relay, tmp_path: Path) -> None:
    if not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    store_history(relay, week_of_history(utcnow()))
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True,
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                timezone_id="Asia/Tokyo", locale="en-GB")
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "404" not in m.text else None)
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
        page.set_default_timeout(15_000)
        page.goto(f"{base_url(relay)}/login?next=/v/car-a")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", "correct-horse-battery")
        page.click("button[type=submit]")
        page.wait_for_url("**/v/car-a")
        page.click("#charts > summary")
        figure = page.locator("#chart-soc-day svg")
        box = figure.bounding_box()
        assert box is not None and 300 <= box["width"] <= 390  # the phone's width, not cut off
        line = page.locator("#chart-soc-week path.line").first.bounding_box()
        assert line is not None and line["width"] > 250 and line["height"] > 40
        assert page.locator("#chart-energy rect.bar").count() >= 3
        assert page.locator("#chart-aux line.threshold").count() == 1
        # Axis labels and table times were turned into the reader's time zone by app.js.
        tick = page.locator("#chart-soc-day text.xlab").first
        utc = datetime.fromisoformat((tick.get_attribute("data-ts") or "").replace("Z", "+00:00"))
        assert tick.text_content() == utc.astimezone(ZoneInfo("Asia/Tokyo")).strftime("%H:%M")
        page.locator("#chart-soc-day details > summary").click()
        assert page.locator("#chart-soc-day table tbody tr").count() >= 24
        page.locator("#charts").screenshot(path=str(tmp_path / "charts.png"))
        if os.environ.get("CARFRIEND_SCREENSHOTS"):
            shutil.copy(tmp_path / "charts.png", Path(os.environ["CARFRIEND_SCREENSHOTS"]) / "charts.png")
        browser.close()
    assert not errors, errors  # a CSP violation would show up here
    assert (tmp_path / "charts.png").stat().st_size > 10_000


def test_history_stored_before_the_checks_still_renders(relay: Relay) -> None:
    """Infinity (which SQLite's JSON functions call malformed), a 401-digit integer, a lone
    surrogate and a value of the wrong shape, written straight into the history."""
    now = utcnow()
    # PostgreSQL's json refuses non-finite numbers, and its -> operator a lone surrogate's
    # escape: rows the ingest checks refuse cannot predate them there (PostgreSQL support came
    # after the checks), so the worst is a 401-digit number and a control character.
    pg = relay.engine.dialect.name == "postgresql"
    inf, nan = (10**401, 10**401) if pg else (float("inf"), float("nan"))
    lone = "\x01" if pg else "\ud800"
    with relay.ctx.sessions() as s, s.begin():
        for i, signals in enumerate([{SOC: {"value": inf}, CHARGING: {"value": lone}},
                                     {SOC: {"value": 10**401}, AUX: {"value": nan}},
                                     {SOC: "not an entry", POWER: {"value": [1, 2]}},
                                     {SOC: {"value": 42.0}, AUX: {"value": 12.3}}]):
            s.add(StateRecord(vehicle_id="car-a", ts=now - timedelta(minutes=4 - i),
                              received_at=now, signals=signals))
    r = login(relay, "alice").get("/v/car-a")
    assert r.status_code == 200, r.text[-300:]
    assert "now 42 %" in r.text and "now 12.3 V" in r.text
