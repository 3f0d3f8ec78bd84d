"""One GTIN + serial, one product: ingest refuses a second key of a serialized item (GS1 rule).

GS1 General Specifications §3.5.2: GTIN + serial identifies an item; the lot is not part of it
(§3.4.1). So ``01/{gtin}/10/L1/21/S7``, ``01/{gtin}/10/L2/21/S7`` and ``01/{gtin}/21/S7`` are one
item, and once one of them is commissioned, a message naming another is a ``serial_conflict``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ingest_kit import HOUR, RECEIVED, FakeDevice, World, product, table
from sqlalchemy import Engine

from ingest import BatchResult, IngestConfig, Processor
from tracecore.errors import RejectReason
from tracecore.identifiers import ProductKey

GTIN = "09506000134369"
LOT1 = product("L1", gtin=GTIN)
LOT2 = product("L2", gtin=GTIN)


def item(serial: str, lot: str | None = None) -> str:
    """The canonical key of a carton ``serial`` of the test GTIN, in lot ``lot`` or none."""
    return ProductKey(GTIN, lot=lot, serial=serial).path


def rejections(world: World) -> list[tuple[str, str | None, int | None, str]]:
    """(reason, device, seq, detail) of every stored rejection, in order."""
    return [(r.reason, r.device_id, r.seq, r.detail) for r in world.rows("rejections", "id")]


def product_keys(world: World) -> set[str]:
    """The keys of every stored product."""
    return {row.key for row in world.rows("products")}


def commission(world: World, *keys: str, parents: tuple[str, ...] = ()) -> BatchResult:
    """Commission ``keys`` (from ``parents``) with farm-a's device."""
    dev = world.devices["dev-a"]
    return world.send(dev, dev.event("commissioning", *keys, parents=parents))


def test_same_serial_in_another_lot_is_refused(world: World) -> None:
    """Commissioning S7 in lot L2 after S7 in lot L1 is refused; nothing of it is stored."""
    assert commission(world, item("S7", "L1")).accepted == 1
    before = world.count("log_entries")
    refused = commission(world, item("S7", "L2"))
    assert (refused.accepted, refused.receipts) == (0, [])
    assert refused.rejected == {RejectReason.SERIAL_CONFLICT: 1}
    [(reason, device, seq, detail)] = rejections(world)
    assert (reason, device, seq) == ("serial_conflict", "dev-a", 2)
    assert item("S7", "L2") in detail
    assert f"GTIN + serial {item('S7')!r} is already registered as {item('S7', 'L1')!r}" in detail
    assert product_keys(world) == {item("S7", "L1")}
    assert world.count("log_entries") == before


def test_short_and_long_forms_of_one_item_exclude_each_other(world: World) -> None:
    """01/g/21/s and 01/g/10/l/21/s are one item: whichever comes second is refused."""
    assert commission(world, item("S1", "L1")).accepted == 1
    assert commission(world, item("S1")).rejected == {RejectReason.SERIAL_CONFLICT: 1}
    assert commission(world, item("S2")).accepted == 1
    assert commission(world, item("S2", "L1")).rejected == {RejectReason.SERIAL_CONFLICT: 1}
    assert product_keys(world) == {item("S1", "L1"), item("S2")}


def test_the_same_key_again_is_still_unauthorized(world: World) -> None:
    """Commissioning an existing key is the old refusal (it exists), not a serial conflict."""
    assert commission(world, item("S7", "L1")).accepted == 1
    assert commission(world, item("S7", "L1")).rejected == {RejectReason.UNAUTHORIZED_PRODUCT: 1}


def test_other_serials_and_other_gtins_are_free(world: World) -> None:
    """Another serial in the same lot, or the same serial of another GTIN, is another item."""
    other_gtin = ProductKey("09506000134352", lot="L2", serial="S7").path
    result = commission(world, item("S7", "L1"), item("S8", "L1"), other_gtin)
    assert result.accepted == 1
    assert product_keys(world) == {item("S7", "L1"), item("S8", "L1"), other_gtin}


def test_second_commissioning_in_the_same_batch_is_refused(world: World) -> None:
    """Within one batch, the first commissioning of an item wins, the second is refused."""
    dev = world.devices["dev-a"]
    result = world.send(
        dev,
        dev.event("commissioning", item("S7", "L1")),
        dev.event("commissioning", item("S7", "L2")),
        dev.event("commissioning", item("S7")),
    )
    assert result.accepted == 1
    assert result.rejected == {RejectReason.SERIAL_CONFLICT: 2}
    assert product_keys(world) == {item("S7", "L1")}


def test_two_keys_of_one_item_in_one_message_are_refused(world: World) -> None:
    """A commissioning naming S7 in two lots names one item twice: refused as a whole."""
    refused = commission(world, item("S7", "L1"), item("S7", "L2"), item("S8", "L1"))
    assert refused.rejected == {RejectReason.SERIAL_CONFLICT: 1}
    [(_, _, _, detail)] = rejections(world)
    assert "are one item" in detail
    assert world.count("products") == 0


def test_reading_naming_another_form_is_refused_not_parked(world: World) -> None:
    """A reading for 01/g/21/S7 when the item is 01/g/10/L1/21/S7 can never be applied: it is
    refused at once, not parked for a commissioning that would be refused too."""
    assert commission(world, item("S7", "L1")).accepted == 1
    dev = world.devices["dev-a"]
    result = world.send(dev, dev.reading(item("S7")), dev.reading(item("S7", "L2")))
    assert (result.accepted, result.parked) == (0, 0)
    assert result.rejected == {RejectReason.SERIAL_CONFLICT: 2}
    assert world.send(dev, dev.reading(item("S7", "L1"))).accepted == 1


def test_parent_naming_another_form_is_refused(world: World) -> None:
    """A transformation whose parent is another key of a registered item is refused."""
    assert commission(world, item("S7", "L1")).accepted == 1
    refused = commission(world, product("OUT", gtin="09506000134352"), parents=(item("S7"),))
    assert refused.rejected == {RejectReason.SERIAL_CONFLICT: 1}


def test_parked_commissioning_of_a_taken_item_is_refused_when_released(world: World) -> None:
    """A carton parked for its lot is refused when the lot arrives if its item was taken
    meanwhile under another lot."""
    assert commission(world, item("S7", "L1"), parents=(LOT1,)).parked == 1
    assert commission(world, LOT2).accepted == 1
    assert commission(world, item("S7", "L2"), parents=(LOT2,)).accepted == 1
    released = commission(world, LOT1)
    assert (released.accepted, released.unparked) == (1, 1)
    assert released.rejected == {RejectReason.SERIAL_CONFLICT: 1}
    assert world.count("parked_messages") == 0
    assert product_keys(world) == {LOT1, LOT2, item("S7", "L2")}


def test_parked_message_whose_item_was_taken_expires_as_serial_conflict(world: World) -> None:
    """A reading parked for 01/g/21/S7, then 01/g/10/L1/21/S7 commissioned: at expiry the
    reason says no commissioning of the short form could ever come."""
    dev = world.devices["dev-a"]
    assert world.send(dev, dev.reading(item("S7")), dev.reading(item("S9"))).parked == 2
    assert commission(world, item("S7", "L1")).accepted == 1
    result = world.processor.expire_parked(RECEIVED + 24 * HOUR)
    assert result.rejected == {RejectReason.SERIAL_CONFLICT: 1, RejectReason.UNKNOWN_PRODUCT: 1}
    by_reason = {reason: detail for reason, _, _, detail in rejections(world)}
    assert f"is registered as {item('S7', 'L1')!r}" in by_reason["serial_conflict"]
    assert item("S9") in by_reason["unknown_product"]


def test_products_sharing_an_item_before_the_rule_keep_working(world: World) -> None:
    """Products of one item stored before migration 0008 (ranked) still take messages; a
    further key of that item is refused."""
    products = table("products")
    with world.engine.begin() as conn:
        for rank, lot in enumerate(("L1", "L2")):
            conn.execute(
                products.insert().values(
                    key=item("S7", lot),
                    owner_party_id="farm-a",
                    holder_party_id="farm-a",
                    created_ms=RECEIVED,
                    item_rank=rank,
                )
            )
    dev = world.devices["dev-a"]
    appends = [dev.event("commissioning", item("S7", lot)) for lot in ("L1", "L2")]
    assert world.send(dev, *appends).accepted == 2  # pre-registered, commissioned by the owner
    readings = [dev.reading(item("S7", lot)) for lot in ("L1", "L2")]
    assert world.send(dev, *readings).accepted == 2
    refused = world.send(dev, dev.event("commissioning", item("S7", "L3")))
    assert refused.rejected == {RejectReason.SERIAL_CONFLICT: 1}
    [(_, _, _, detail)] = rejections(world)
    assert f"{item('S7', 'L1')!r}, {item('S7', 'L2')!r}" in detail


def test_two_workers_commissioning_one_serial_at_once_one_wins(
    world: World, engine_factory: Callable[[], Engine]
) -> None:
    """Two processors (own engines) commissioning the same serials under different lots at the
    same moment: for each serial exactly one product exists, the other message is refused."""
    rounds = 12
    devices = [world.device(f"dev-w{i}", "farm-a") for i in range(2)]
    processors = [
        Processor(engine_factory(), world.log_key, IngestConfig(verify_threads=1)) for _ in devices
    ]
    start = threading.Barrier(2)
    results: list[list[BatchResult]] = [[], []]
    errors: list[BaseException] = []

    def work(n: int, processor: Processor, device: FakeDevice) -> None:
        try:
            for r in range(rounds):
                raw = device.event("commissioning", item(f"R{r}", f"W{n}"))
                start.wait(timeout=30)
                results[n].append(processor.process([device.inbound(raw)], RECEIVED))
        except Exception as exc:  # noqa: BLE001  (reported to the test thread below)
            errors.append(exc)
            start.abort()

    threads = [
        threading.Thread(target=work, args=(n, p, d))
        for n, (p, d) in enumerate(zip(processors, devices, strict=True))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for processor in processors:
        processor.close()
    assert errors == []
    for r in range(rounds):
        outcomes = sorted((results[0][r].accepted, results[1][r].accepted))
        assert outcomes == [0, 1], (r, results[0][r], results[1][r])
        refused = results[0][r].rejected + results[1][r].rejected
        assert refused == {RejectReason.SERIAL_CONFLICT: 1}
    keys = product_keys(world)
    assert len(keys) == rounds
    assert {ProductKey.parse_canonical(k).serial for k in keys} == {f"R{r}" for r in range(rounds)}
