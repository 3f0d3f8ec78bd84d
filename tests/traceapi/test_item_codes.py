"""Scans and exports treat a serialized item's codes with and without its lot as one item.

GS1 General Specifications §3.5.2: GTIN + serial identifies the item; the lot is an attribute.
``/01/{gtin}/21/{serial}`` finds the product registered as ``/01/{gtin}/10/{lot}/21/{serial}``
and the other way round; a code whose lot is not the registered one finds nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from trace_kit import CARTON, COLLECT, GTIN, LOG, LOT, World, make_world

from tracecore.bundle import Policy, parse_bundle, verify_bundle
from tracecore.identifiers import ProductKey
from tracecore.message import Event
from tracecore.storage.models import Product

JSON = {"Accept": "application/json"}
SHORT = ProductKey(GTIN, serial=CARTON.serial)  # the carton's code without its lot
WRONG_LOT = ProductKey(GTIN, lot="L999999", serial=CARTON.serial)
LOTLESS = ProductKey(GTIN, serial="S9")  # a carton registered without a lot


@pytest.fixture
def world(engine: Engine, app_client: Any) -> Iterator[World]:
    """The egg world of trace_kit, plus a carton ``LOTLESS`` commissioned without a lot."""
    with make_world(engine, app_client, copy_threshold=2) as built:
        built.send(
            COLLECT,
            lambda seq, time: Event(
                COLLECT.name, seq, time, (LOTLESS,), "commissioning", parents=(LOT,)
            ),
        )
        built.checkpoint()
        yield built


def test_code_without_the_lot_finds_the_carton(world: World) -> None:
    """/01/g/21/s answers for 01/g/10/l/21/s: verified, the registered key and what was scanned."""
    reply = world.client.get(f"/{SHORT.path}", headers=JSON)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["verdict"] == "verified", body["checks"]
    assert body["product"]["key"] == CARTON.path
    assert body["product"]["lot"] == CARTON.lot
    assert body["scanned"] == SHORT.path
    assert world.client.get(f"/{CARTON.path}", headers=JSON).json()["scanned"] is None
    page = world.client.get(f"/{SHORT.path}?lang=en").text
    assert f"The code scanned, {SHORT.path}, names the same item" in page
    assert "is not part of this item" not in page


def test_code_with_a_lot_finds_a_carton_registered_without_one(world: World) -> None:
    """A code with a lot finds the item registered without one, and says the lot is not in
    its record."""
    scanned = ProductKey(GTIN, lot="L1", serial=LOTLESS.serial)
    body = world.client.get(f"/{scanned.path}", headers=JSON).json()
    assert body["verdict"] == "verified", body
    assert (body["product"]["key"], body["scanned"]) == (LOTLESS.path, scanned.path)
    page = world.client.get(f"/{scanned.path}?lang=en").text
    assert "The lot printed on this code, L1, is not part of this item" in page


def test_code_with_another_lot_is_unknown_and_does_not_tell_the_lot(world: World) -> None:
    """A label printed with the carton's serial but a wrong lot is not the carton: 404 unknown,
    without naming the real lot (a forger would copy it), and no scan is counted for it."""
    reply = world.client.get(f"/{WRONG_LOT.path}", headers=JSON)
    assert reply.status_code == 404
    body = reply.json()
    assert (body["verdict"], body["product"]) == ("unknown", None)
    assert "registered in another lot" in body["detail"]
    assert CARTON.lot is not None
    assert CARTON.lot not in reply.text
    page = world.client.get(f"/{WRONG_LOT.path}?lang=en")
    assert page.status_code == 404
    assert "not in the lot printed on this code" in page.text
    assert CARTON.lot not in page.text
    scans = world.client.get(f"/{CARTON.path}", headers=JSON).json()["scans"]
    assert scans["scans"] == 1  # only this scan: the wrong-lot ones were not the carton's


def test_scans_of_both_forms_count_for_one_item(world: World) -> None:
    """Copy detection counts every form of the item's code together."""
    world.client.get(f"/{SHORT.path}", headers={**JSON, "X-Forwarded-For": "198.51.100.7"})
    body = world.client.get(f"/{CARTON.path}", headers=JSON).json()
    assert body["scans"]["scans"] == 2


def test_exports_accept_either_form(world: World) -> None:
    """Bundle, EPCIS export and lineage of the short form are the registered carton's."""
    bundle = parse_bundle(world.client.get(f"/v1/bundle/{SHORT.path}").text)
    assert bundle.product == CARTON
    assert verify_bundle(bundle, Policy(LOG.verifier, {}, 0)).ok
    admin = world.auth("admin")
    lineage = world.client.get(f"/v1/lineage/{SHORT.path}", headers=admin).json()
    assert lineage["product"] == CARTON.path
    assert lineage["back"] == [LOT.path]
    export = world.client.get(f"/v1/export/epcis/{SHORT.path}", headers=admin)
    assert export.status_code == 200, export.text
    assert export.text == world.client.get(f"/v1/export/epcis/{CARTON.path}", headers=admin).text
    for path in (f"/v1/bundle/{WRONG_LOT.path}", f"/v1/lineage/{WRONG_LOT.path}"):
        assert world.client.get(path, headers=admin).status_code == 404


def test_feedback_and_recalls_by_the_short_form_reach_the_carton(world: World) -> None:
    """Feedback and a recall naming the code without its lot are the registered carton's."""
    reply = world.client.post(f"/v1/feedback/{SHORT.path}", json={"rating": 2})
    assert reply.status_code == 201, reply.text
    assert reply.json()["product"] == CARTON.path
    listed = world.client.get(
        "/v1/feedback", params={"product": SHORT.path}, headers=world.auth("admin")
    ).json()
    assert [f["product"] for f in listed] == [CARTON.path]
    inspector = world.auth("inspector")
    recall = world.client.post(
        "/v1/recalls", json={"product": SHORT.path, "reason": "test"}, headers=inspector
    )
    assert recall.status_code == 201, recall.text
    assert recall.json()["product"] == CARTON.path
    world.checkpoint()
    assert world.client.get(f"/{CARTON.path}", headers=JSON).json()["verdict"] == "recalled"
    wrong = world.client.post(
        "/v1/recalls", json={"product": WRONG_LOT.path, "reason": "test"}, headers=inspector
    )
    assert wrong.status_code == 404


def test_code_without_a_lot_shared_by_old_products_is_ambiguous(world: World) -> None:
    """Products that shared a serial before the rule (migration 0008) keep their own codes;
    the code without a lot cannot tell them apart and says so."""
    other = ProductKey(GTIN, lot="L261128", serial=CARTON.serial)
    with world.engine.begin() as conn:
        conn.execute(
            insert(Product).values(
                key=other.path, owner_party_id="gansu-hens-01", created_ms=0, item_rank=1
            )
        )
    reply = world.client.get(f"/{SHORT.path}", headers=JSON)
    assert reply.status_code == 404
    assert "names 2 products registered" in reply.json()["detail"]
    assert "Scan the full code with its lot" in world.client.get(f"/{SHORT.path}?lang=en").text
    assert world.client.get(f"/{CARTON.path}", headers=JSON).json()["verdict"] == "verified"
