"""The inspector API: search, lineage back and forward, the KDE spreadsheet, EPCIS 2.0 export."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sqlalchemy import Engine
from trace_kit import (
    CARTON,
    CLIMATE,
    COLLECT,
    FARM,
    FLOCK,
    GTIN,
    LOG,
    LOT,
    PACKER,
    T0,
    World,
    make_world,
)

from traceapi.exports import spreadsheet_text
from tracecore.identifiers import ProductKey
from tracecore.message import Event, Reading, Sensor

SCHEMA = Path(__file__).parents[3] / "shared" / "vectors" / "epcis" / "EPCIS-JSON-Schema.json"


@pytest.fixture
def world(engine: Engine, app_client: Any) -> Iterator[World]:
    """The egg world, plus the lot shipped to the packer."""
    with make_world(engine, app_client) as built:
        built.send(
            COLLECT,
            lambda seq, time: Event(
                COLLECT.name,
                seq,
                time,
                (LOT,),
                "shipping",
                location="临夏 Linxia",
                data={"destination": PACKER, "count": 720},
            ),
        )
        built.checkpoint()
        yield built


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    """The EPCIS 2.0 JSON schema from ../shared/vectors, with format checks on."""
    schema = json.loads(SCHEMA.read_text())
    return jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


def test_the_validator_rejects_the_invalid_vectors(validator: jsonschema.Draft7Validator) -> None:
    """The schema check is real: each published invalid example fails it."""
    invalid = sorted((SCHEMA.parent / "invalid").glob("*.json"))
    assert len(invalid) >= 5
    for path in invalid:
        assert list(validator.iter_errors(json.loads(path.read_text()))), path.name


def test_epcis_export_validates_and_holds_events_and_sensor_readings(
    world: World, validator: jsonschema.Draft7Validator
) -> None:
    """The carton's EPCIS document validates; readings are sensorElementList entries."""
    reply = world.client.get(f"/v1/export/epcis/{CARTON.path}", headers=world.auth("inspector"))
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("application/ld+json")
    document = reply.json()
    errors = [e.message for e in validator.iter_errors(document)]
    assert errors == []
    events = document["epcisBody"]["eventList"]
    kinds = [(e["type"], e["bizStep"]) for e in events]
    assert kinds.count(("ObjectEvent", "sensor_reporting")) == 5
    assert ("TransformationEvent", "commissioning") in kinds  # the carton from the lot
    assert ("ObjectEvent", "shipping") in kinds
    reports = [
        r["value"]
        for e in events
        for element in e.get("sensorElementList", [])
        for r in element["sensorReport"]
    ]
    assert sorted(reports) == [5.5, 6.0, 6.2, 8.4, 21.0]
    carton = next(e for e in events if e["type"] == "TransformationEvent" and "outputEPCList" in e)
    assert carton["outputEPCList"] == [f"https://id.gs1.org/{CARTON.path}"]
    assert carton["inputQuantityList"] == [{"epcClass": f"https://id.gs1.org/{LOT.path}"}]
    assert document["agritrace:verdict"] == "verified"
    times = [e["eventTime"] for e in events]
    assert times == sorted(times)


def test_epcis_of_another_partys_product_is_403(world: World) -> None:
    """A party token may export its own products only."""
    assert (
        world.client.get(f"/v1/export/epcis/{LOT.path}", headers=world.auth("farm")).status_code
        == 200
    )
    assert (
        world.client.get(f"/v1/export/epcis/{LOT.path}", headers=world.auth("packer")).status_code
        == 403
    )


def test_kde_csv_has_one_row_per_event_and_product(world: World) -> None:
    """The spreadsheet lists each business event by or shipped to the party, sortable by time."""
    reply = world.client.get(f"/v1/export/kde.csv?party={PACKER}", headers=world.auth("inspector"))
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/csv")
    text = reply.content.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1  # the packer did nothing yet; the lot was shipped to it
    (row,) = rows
    assert row["business_step"] == "shipping"
    assert row["traceability_lot"] == "06901234567892/L261127"
    assert (row["from_party"], row["to_party"]) == (FARM, PACKER)
    assert (row["quantity"], row["unit"]) == ("720", "EA")
    assert row["location"] == "临夏 Linxia"
    everything = world.client.get(f"/v1/export/kde.csv?party={FARM}", headers=world.auth("admin"))
    farm_rows = list(csv.DictReader(io.StringIO(everything.content.decode("utf-8-sig"))))
    assert [r["business_step"] for r in farm_rows] == ["commissioning"] * 3 + ["shipping"]
    assert [r["event_time_utc"] for r in farm_rows] == sorted(
        r["event_time_utc"] for r in farm_rows
    )
    window = world.client.get(
        f"/v1/export/kde.csv?party={FARM}&from={T0 + 7_500}", headers=world.auth("admin")
    )
    assert [
        r["product"] for r in csv.DictReader(io.StringIO(window.content.decode("utf-8-sig")))
    ] == [
        CARTON.path,
        LOT.path,
    ]


def test_search_by_owner_step_and_time(world: World) -> None:
    """Products by owner, by a business step within a time range, paged."""
    admin = world.auth("inspector")
    keys = [p["key"] for p in world.client.get(f"/v1/products?party={FARM}", headers=admin).json()]
    assert keys == [FLOCK.path, LOT.path, CARTON.path]
    shipped = world.client.get("/v1/products?step=shipping", headers=admin).json()
    assert [p["key"] for p in shipped] == [LOT.path]
    assert world.client.get(f"/v1/products?step=shipping&to={T0}", headers=admin).json() == []
    page = world.client.get(f"/v1/products?party={FARM}&limit=1&offset=1", headers=admin).json()
    assert [p["key"] for p in page] == [LOT.path]
    assert world.client.get("/v1/products?step=flying", headers=admin).status_code == 422
    mine = world.client.get("/v1/products", headers=world.auth("packer")).json()
    assert mine == []


def test_lineage_one_step_and_all_the_way(world: World) -> None:
    """One step back from the carton is the lot; all the way back adds the flock; forward too."""
    inspector = world.auth("inspector")
    one = world.client.get(f"/v1/lineage/{CARTON.path}", headers=inspector).json()
    assert (one["back"], one["forward"]) == ([LOT.path], [])
    full = world.client.get(f"/v1/lineage/{CARTON.path}?depth=all", headers=inspector).json()
    assert full["back"] == [LOT.path, FLOCK.path]
    down = world.client.get(
        f"/v1/lineage/{FLOCK.path}?direction=forward&depth=all", headers=inspector
    ).json()
    assert down == {"product": FLOCK.path, "back": [], "forward": [LOT.path, CARTON.path]}
    missing = world.client.get("/v1/lineage/01/06901234567892/10/NOPE", headers=inspector)
    assert missing.status_code == 404


def test_readings_after_shipping_are_in_the_story(world: World) -> None:
    """Sanity for the export: a later reading joins the EPCIS document after a checkpoint."""
    world.send(
        CLIMATE,
        lambda seq, time: Reading(
            CLIMATE.name, seq, time, (LOT,), (Sensor("Temperature", 4.0, "CEL"),)
        ),
    )
    world.checkpoint()
    reply = world.client.get(f"/v1/export/epcis/{LOT.path}", headers=world.auth("inspector"))
    values = [
        r["value"]
        for e in reply.json()["epcisBody"]["eventList"]
        for element in e.get("sensorElementList", [])
        for r in element["sensorReport"]
    ]
    assert 4.0 in values


def test_contract_search_and_credit_score(world: World) -> None:
    """Stored results are searchable; failures, recalls and complaints lower the farm's score."""
    from ingest.contracting import evaluate_pending  # noqa: PLC0415 (the evaluator fills results)
    from tracecore.bundle import Policy  # noqa: PLC0415

    inspector = world.auth("inspector")
    clean = world.client.get(f"/v1/parties/{FARM}/credit", headers=inspector).json()
    assert clean["score"] == 100
    world.now[0] += 2 * 86_400_000
    world.send(
        CLIMATE,
        lambda seq, time: Reading(
            CLIMATE.name, seq, time, (LOT,), (Sensor("Temperature", 9.0, "CEL"),)
        ),
    )
    world.checkpoint()
    evaluate_pending(world.engine, Policy(LOG.verifier, {}, 0), world.now[0])
    failing = world.client.get(
        "/v1/products?contract=egg-cold-chain&status=fail", headers=inspector
    ).json()
    assert [p["key"] for p in failing] == [LOT.path, CARTON.path]
    world.client.post(f"/v1/feedback/{CARTON.path}", json={"rating": 1, "complaint": "warm"})
    world.client.post(
        "/v1/recalls", json={"product": LOT.path, "reason": "warm storage"}, headers=inspector
    )
    credit = world.client.get(f"/v1/parties/{FARM}/credit", headers=inspector).json()
    assert [d["points"] for d in credit["deductions"]] == [10, 20, 2]
    assert credit["score"] == 68
    assert (
        world.client.get(f"/v1/parties/{FARM}/credit", headers=world.auth("farm")).status_code
        == 200
    )
    assert (
        world.client.get(f"/v1/parties/{FARM}/credit", headers=world.auth("packer")).status_code
        == 403
    )
    world.checkpoint()
    page = world.client.get(f"/{CARTON.path}?lang=en").text
    assert "Credit 68/100" in page


def test_kde_csv_cells_are_never_live_formulas(world: World) -> None:
    """Device text starting = + - @ TAB CR (or ') gets one ' in front; numbers stay numbers."""
    formula = '=HYPERLINK("http://evil.example","x")'
    lots = {"=2+5": formula, "%A1": "@SUM(1)", "+x": "'=1", "-y": "-2", "ok": "临夏 Linxia"}
    for n, (lot, location) in enumerate(lots.items(), 1):
        # A serial of its own per lot: GTIN + serial alone names an item (docs/identifiers.md).
        key = ProductKey.from_parts(GTIN, lot=lot, serial=f"-{n}")
        world.send(
            COLLECT,
            lambda seq, time, key=key, location=location: Event(
                COLLECT.name,
                seq,
                time,
                (key,),
                "commissioning",
                location=location,
                data={"net_kg": -3.5},
            ),
        )
    world.checkpoint()
    reply = world.client.get(f"/v1/export/kde.csv?party={FARM}", headers=world.auth("admin"))
    rows = {
        r["product"]: r
        for r in csv.DictReader(io.StringIO(reply.content.decode("utf-8-sig")))
        if r["serial"] in {f"'-{n}" for n in range(1, len(lots) + 1)}
    }
    assert len(rows) == len(lots)
    exported = {r["lot"]: r["location"] for r in rows.values()}
    assert exported == {
        "'=2+5": "'" + formula,
        "%A1": "'@SUM(1)",
        "'+x": "''=1",  # a leading ' is escaped too: drop exactly one to get the value
        "'-y": "'-2",
        "ok": "临夏 Linxia",
    }
    for row in rows.values():
        assert row["traceability_lot"].startswith(f"{GTIN}/")  # starts with a digit: as it is
        assert (row["quantity"], row["unit"]) == ("-3.5", "KGM")  # a number stays a number
        assert row["product"].startswith("01/")


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("\t=1", "'\t=1"),  # TAB and CR: OWASP lists them; devices cannot send them today
        ("\r=1", "'\r=1"),
        ("=1", "'=1"),
        ("'", "''"),
        ("a=1", "a=1"),
        ("", ""),
    ],
)
def test_spreadsheet_text_quotes_formula_starts_only(value: str, cell: str) -> None:
    """Each OWASP formula start (and ') gets one quote; the value is the cell minus that quote."""
    assert spreadsheet_text(value) == cell
    assert (cell[1:] if cell.startswith("'") else cell) == value
