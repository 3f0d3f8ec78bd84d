"""Buyer feedback: ratings and complaints, the no-JavaScript form, rate limits, who reads them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from trace_kit import CARTON, FARM, LOT, World, make_world


@pytest.fixture
def world(engine: Engine, app_client: Any) -> Iterator[World]:
    """The egg world of trace_kit, three submissions an hour per client."""
    with make_world(engine, app_client, feedback_per_hour=3) as built:
        yield built


def test_json_feedback_is_stored_and_read_by_owner_and_inspector(world: World) -> None:
    """A complaint is visible to the inspector and the owning farm, not to another party."""
    reply = world.client.post(
        f"/v1/feedback/{CARTON.path}", json={"rating": 1, "complaint": "蛋壳有裂纹 cracked shells"}
    )
    assert reply.status_code == 201, reply.text
    assert reply.json()["product"] == CARTON.path
    world.client.post(f"/v1/feedback/{LOT.path}", json={"rating": 5})
    for who in ("inspector", "farm", "admin"):
        rows = world.client.get("/v1/feedback?complaints=true", headers=world.auth(who)).json()
        assert [r["complaint"] for r in rows] == ["蛋壳有裂纹 cracked shells"], who
    everything = world.client.get(f"/v1/feedback?party={FARM}", headers=world.auth("inspector"))
    assert len(everything.json()) == 2
    assert world.client.get("/v1/feedback", headers=world.auth("packer")).json() == []
    denied = world.client.get(f"/v1/feedback?party={FARM}", headers=world.auth("packer"))
    assert denied.status_code == 403


def test_page_form_posts_and_comes_back_with_thanks(world: World) -> None:
    """The page's form (URL-encoded, no JavaScript) redirects back to the page with a thank-you."""
    reply = world.client.post(
        f"/v1/feedback/{CARTON.path}",
        content="rating=2&complaint=%E5%A4%AA%E8%B4%B5&lang=en",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status_code == 303
    assert reply.headers["location"] == f"/{CARTON.path}?lang=en&feedback=thanks"
    page = world.client.get(reply.headers["location"]).text
    assert "Thank you" in page
    rows = world.client.get("/v1/feedback", headers=world.auth("inspector")).json()
    assert rows[0]["complaint"] == "太贵"
    assert rows[0]["rating"] == 2


def test_feedback_is_rate_limited_per_client(world: World) -> None:
    """The fourth submission within an hour is 429 with Retry-After; an hour later it is fine."""
    codes = [
        world.client.post(f"/v1/feedback/{CARTON.path}", json={"rating": 4}).status_code
        for _ in range(4)
    ]
    assert codes == [201, 201, 201, 429]
    limited = world.client.post(f"/v1/feedback/{CARTON.path}", json={"rating": 4})
    assert limited.headers["retry-after"] == "3600"
    world.now[0] += 3_600_001
    assert world.client.post(f"/v1/feedback/{CARTON.path}", json={"rating": 4}).status_code == 201


def test_a_spoofed_leftmost_forwarded_entry_does_not_lift_the_limit(
    engine: Engine, app_client: Any
) -> None:
    """Behind one proxy, a client that varies the entries it sends itself is still one client."""
    with make_world(engine, app_client, feedback_per_hour=5, trusted_proxies=1) as world:
        codes = [
            world.client.post(
                f"/v1/feedback/{CARTON.path}",
                json={"rating": 1},
                headers={"X-Forwarded-For": f"198.51.100.{n}, 203.0.113.7"},
            ).status_code
            for n in range(30)
        ]
        assert codes == [201] * 5 + [429] * 25
        # A different client (as the proxy saw it) has its own allowance.
        other = world.client.post(
            f"/v1/feedback/{CARTON.path}",
            json={"rating": 1},
            headers={"X-Forwarded-For": "203.0.113.8"},
        )
        assert other.status_code == 201


@pytest.mark.parametrize(
    "body",
    [{"rating": 0}, {"rating": 6}, {"rating": "5"}, {"rating": 3, "complaint": "x" * 2001}, {}],
)
def test_bad_feedback_is_422_and_not_stored(world: World, body: dict[str, Any]) -> None:
    """Ratings outside 1-5, wrong types or an overlong complaint are refused and not stored."""
    reply = world.client.post(f"/v1/feedback/{CARTON.path}", json=body)
    assert reply.status_code == 422
    assert "rating" in reply.json()["detail"]
    assert world.client.get("/v1/feedback", headers=world.auth("admin")).json() == []


def test_feedback_on_an_unknown_product_is_404(world: World) -> None:
    """Nobody can leave feedback on a product that does not exist."""
    reply = world.client.post("/v1/feedback/01/06901234567892/10/NOPE", json={"rating": 5})
    assert reply.status_code == 404
