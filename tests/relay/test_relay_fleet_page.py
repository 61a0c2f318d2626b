"""The fleet page at fleet size: paginated by vehicle id, totals over every page, each query
bounded (no page loads every vehicle), the live stream follows its page."""

from __future__ import annotations

import re
import uuid

from relay_testkit import PASSWORD, SseReader, add_message, login, wait_until

from relay.admin import add_user, add_vehicles, grant
from relay.models import utcnow
from relay.server import Relay


def test_the_fleet_page_is_paginated_and_counts_every_page(relay: Relay) -> None:
    ids = [f"fleet-{i:03d}" for i in range(247)]
    with relay.ctx.sessions() as s:
        add_vehicles(s, relay.config, ids)
        add_user(s, "oscar", PASSWORD)
        grant(s, "oscar", "operator", "fleet-200")
    for vid in ("fleet-001", "fleet-246"):  # an alert on the first and on the last page
        add_message(relay, vehicle_id=vid, msg_id=str(uuid.uuid4()), ts=utcnow(),
                    kind="battery.low", severity="warning", visibility="private", text="low",
                    data={})
    olga = login(relay, "olga")
    first = olga.get("/fleet").text
    total = 247 + 3  # and car-a, car-b, car-pub
    assert f"<strong>{total}</strong> vehicles" in first and "<strong>2</strong> alerts" in first
    assert first.count('<a href="/v/') == 100 and "page 1 of 3" in first
    last = olga.get("/fleet?page=3").text
    assert last.count('<a href="/v/') == total - 200 and 'rel="prev"' in last
    assert "fleet-246" in last and "fleet-001" not in last
    assert olga.get("/fleet?page=99999999").status_code == 200  # clamped, not an error
    # An operator of one car sees that car only, and no relay-wide counters.
    own = login(relay, "oscar").get("/fleet").text
    assert re.findall(r'<a href="/v/([^"]+)"', own) == ["fleet-200"]
    assert "This relay instance" not in own
    # The live stream of page 3 shows page 3.
    live = SseReader(login(relay, "olga"), "/fleet/events?page=3")
    try:
        wait_until(lambda: live.of("fleet"), 10, "the fleet stream")
        assert "fleet-246" in live.of("fleet")[0] and "fleet-001" not in live.of("fleet")[0]
    finally:
        live.close()
