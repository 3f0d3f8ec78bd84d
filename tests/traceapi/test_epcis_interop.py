"""EPCIS exports of a simulated supply chain, checked with other people's tools.

The egg and beef scenarios of the simulator (firmware_sim, what ``agritrace demo`` runs) are
signed and ingested through the real processor; the EPCIS export of every product at the end of
each chain (and of the products whose own events no chain reaches: the treated animal, the
blood samples) must pass :func:`epcis_kit.check_export`: the EPCIS 2.0 JSON schema, event IDs
equal to what GS1's reference event hash generator computes, and JSON-LD expansion keeping every
value of every signed message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import epcis_kit
import pytest
from sqlalchemy import Engine, select
from sqlmodel import col
from trace_kit import LOG, T0, World, make_world, signer

from firmware_sim.scenarios import Scenario, ScenarioConfig, build_scenario
from ingest import Inbound, Processor
from tracecore.bundle import parse_message_cached
from tracecore.cose import sign_message
from tracecore.logentry import DeviceRegistered
from tracecore.message import DeviceMessage, Event
from tracecore.storage import (
    Device,
    LogEntry,
    Party,
    create_party,
    make_engine,
    register_device,
    session_scope,
    upgrade,
)
from tracecore.storage.logwriter import append_registry_entry, log_session
from tracecore.topics import up_topic

DAY_MS = 86_400_000
MINUTE_MS = 60_000


def _ingest(world: World, scenario: Scenario) -> None:
    """Register the scenario's parties and devices, then sign and ingest its timeline."""
    with session_scope(world.engine) as session:
        for party in scenario.parties:
            if session.get(Party, party.id) is None:  # carrier and retailer serve both chains
                create_party(session, party.id, party.name, party.kind, T0)
    keys = {device.id: signer(device.id) for device in scenario.devices}
    with log_session(world.engine) as session:
        for device in scenario.devices:
            key = keys[device.id]
            if session.get(Device, device.id) is not None:
                continue
            row = register_device(session, device.id, device.party, key.public_key, T0)
            entry = DeviceRegistered(device.id, device.party, key.public_key, row.valid_from_ms, T0)
            append_registry_entry(session, entry, T0)
    start = world.now[0] + MINUTE_MS
    batch = []
    for planned in scenario.timeline:
        seq = world.seqs.get(planned.device, 0) + 1
        world.seqs[planned.device] = seq
        time = start + planned.at_ms
        raw = sign_message(planned.message(seq, time), keys[planned.device].signing_key)
        batch.append(Inbound(up_topic(planned.device), raw, time))
    world.now[0] = batch[-1].received_ms + MINUTE_MS
    processor = Processor(world.engine, LOG)
    try:
        result = processor.process(batch, world.now[0])
    finally:
        processor.close()
    assert result.accepted == len(batch), result


@pytest.fixture(scope="module")
def chains(
    tmp_path_factory: pytest.TempPathFactory, app_client: Any
) -> Iterator[tuple[World, list[Scenario]]]:
    """One egg farm for a day and one beef farm for a cycle, ingested and checkpointed."""
    directory = tmp_path_factory.mktemp("epcis-chains")
    engine: Engine = make_engine(f"sqlite:///{directory / 'agritrace.sqlite3'}")
    upgrade(engine)
    scenarios = [
        build_scenario("egg", ScenarioConfig(prefix="x-", cases_per_lot=2), DAY_MS),
        build_scenario("beef", ScenarioConfig(prefix="x-", animals=2), 3 * DAY_MS),
    ]
    with make_world(engine, app_client) as world:
        for scenario in scenarios:
            _ingest(world, scenario)
        world.checkpoint()
        yield world, scenarios
    engine.dispose()


def _signed(engine: Engine) -> dict[int, DeviceMessage]:
    with session_scope(engine) as session:
        rows = session.execute(select(col(LogEntry.index), col(LogEntry.raw))).all()
    return {index: parse_message_cached(raw).message for index, raw in rows if raw is not None}


def _exported_products(scenarios: list[Scenario]) -> list[str]:
    """Products no event derives another from (the ends of the chains), plus every product
    only an ancestor's export would miss: here all are reached from the ends, so the ends."""
    products: set[str] = set()
    parents: set[str] = set()
    for scenario in scenarios:
        for planned in scenario.timeline:
            products.update(key.path for key in planned.products)
            parents.update(key.path for key in planned.parents)
    return sorted(products - parents)


def test_every_export_of_the_simulated_chains_passes_every_check(
    chains: tuple[World, list[Scenario]],
) -> None:
    """Schema, reference event hashes and JSON-LD expansion, on every end product's export."""
    world, scenarios = chains
    signed = _signed(world.engine)
    schema = epcis_kit.validator()
    exported = _exported_products(scenarios)
    kinds: set[tuple[str, ...]] = set()
    seen: set[int] = set()
    hashed: set[str] = set()
    for path in exported:
        reply = world.client.get(f"/v1/export/epcis/{path}", headers=world.auth("inspector"))
        assert reply.status_code == 200, (path, reply.text)
        document = reply.json()
        epcis_kit.check_export(document, signed, schema, hashed)
        for event in document["epcisBody"]["eventList"]:
            seen.add(event["agritrace:logIndex"])
            kinds.add(
                (
                    event["type"],
                    event["bizStep"],
                    event.get("action", ""),
                    *sorted(k for k in event if k.endswith("List") and event[k]),
                )
            )
    # Every kind of event the export writes came by (and so was checked).
    steps = {kind[1] for kind in kinds}
    assert {"commissioning", "shipping", "receiving", "sensor_reporting", "inspecting"} <= steps
    assert {"killing", "storing", "retail_selling", "other"} <= steps
    lists = {name for kind in kinds for name in kind[3:]}
    assert {
        "epcList",
        "quantityList",
        "inputEPCList",
        "inputQuantityList",
        "outputEPCList",
        "outputQuantityList",
        "sensorElementList",
        "sourceList",
        "destinationList",
        "bizTransactionList",
    } <= lists
    assert ("ObjectEvent", "commissioning", "ADD", "epcList") in kinds
    # Every signed event of the chains is in some export (readings of products no export
    # reaches aside, there are none).
    devices = {device.id for scenario in scenarios for device in scenario.devices}
    events = {i for i, m in signed.items() if isinstance(m, Event) and m.device in devices}
    assert events - seen == set(), {i: signed[i] for i in events - seen}
