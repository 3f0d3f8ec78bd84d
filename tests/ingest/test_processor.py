"""The ingest processing core on both engines: reason codes, duplicates, parking, sequencing."""

from __future__ import annotations

import hashlib
import logging

import pytest
from ingest_kit import HOUR, RECEIVED, T0, World, product, table
from sqlalchemy import Engine

from ingest import Inbound, IngestConfig, Processor
from ingest import signatures as signatures_module
from ingest.signatures import Verdict, VerifyTask
from tracecore.cose import parse_message
from tracecore.errors import RejectReason
from tracecore.logentry import GENESIS_PREV, parse_entry
from tracecore.merkle import leaf_hash
from tracecore.receipt import parse_receipt
from tracecore.storage import register_device, revoke_key, session_scope
from tracecore.storage.models import REJECTION_PREFIX_BYTES
from tracecore.storage.queries import device_gaps, list_rejections, rejection_counts
from tracecore.topics import up_topic

LOT = product("LOT1")
LOT2 = product("LOT2")


def commission(world: World, *keys: str, device: str = "dev-a") -> None:
    """Commission ``keys`` with a device and check it was accepted."""
    dev = world.devices[device]
    result = world.send(dev, dev.event("commissioning", *keys))
    assert result.accepted == 1, result


def only_rejection(world: World, reason: RejectReason) -> object:
    """Return the single stored rejection and check its reason."""
    rows = world.rows("rejections")
    assert len(rows) == 1, rows
    assert rows[0].reason == reason.value
    return rows[0]


def test_accepts_reading_and_returns_verifiable_receipt(world: World) -> None:
    """A valid reading gets one log entry and a receipt that verifies and matches it."""
    commission(world, LOT)
    dev = world.devices["dev-a"]
    raw = dev.reading(LOT)
    result = world.send(dev, raw)
    assert (result.accepted, result.duplicates, result.parked) == (1, 0, 0)
    assert not result.rejected
    [(device, receipt_bytes)] = result.receipts
    assert device == "dev-a"
    receipt = parse_receipt(receipt_bytes)
    receipt.verify(world.log_key.public_key)
    assert receipt.matches(parse_message(raw))
    entry_row = world.rows("log_entries", "index")[-1]
    assert bytes(entry_row.raw) == raw
    assert receipt.receipt.index == entry_row.index == 1
    assert receipt.receipt.entry == bytes(entry_row.leaf_hash) == leaf_hash(entry_row.entry)
    assert receipt.receipt.time == RECEIVED == entry_row.received_ms
    entry = parse_entry(bytes(entry_row.entry))
    assert entry.msg == parse_message(raw).sha256 == bytes(entry_row.raw_sha256)
    assert (entry.device, entry.seq, entry.received) == ("dev-a", 2, RECEIVED)
    [stored] = [r for r in world.rows("receipts") if r.seq == 2]
    assert bytes(stored.raw) == receipt_bytes


def test_malformed_bytes_rejected_byte_exact(world: World) -> None:
    """Bytes that are not a message are stored as malformed, byte for byte, with the topic."""
    raw = b"\x00\xffnot cbor\x00"
    result = world.process(Inbound(up_topic("dev-a"), raw, RECEIVED))
    assert result.rejected == {RejectReason.MALFORMED: 1}
    row = only_rejection(world, RejectReason.MALFORMED)
    assert bytes(row.raw) == raw
    assert row.topic == up_topic("dev-a")
    assert row.device_id == "dev-a"
    assert row.received_ms == RECEIVED
    assert "CBOR" in row.detail or "cbor" in row.detail


def test_wrong_topic_is_malformed(world: World) -> None:
    """A message on a topic that is not a device up topic is malformed."""
    dev = world.devices["dev-a"]
    raw = dev.reading(LOT)
    world.process(Inbound("agritrace/v1/devices/dev-a/down", raw, RECEIVED))
    row = only_rejection(world, RejectReason.MALFORMED)
    assert bytes(row.raw) == raw
    assert row.topic == "agritrace/v1/devices/dev-a/down"
    assert "topic" in row.detail


def test_unknown_device(world: World) -> None:
    """A message of a device nobody registered is unknown_device."""
    ghost = world.device("ghost-1", "farm-a", register=False)
    raw = ghost.reading(LOT)
    result = world.send(ghost, raw)
    assert result.rejected == {RejectReason.UNKNOWN_DEVICE: 1}
    row = only_rejection(world, RejectReason.UNKNOWN_DEVICE)
    assert bytes(row.raw) == raw
    assert (row.device_id, row.seq, row.topic) == ("ghost-1", 1, up_topic("ghost-1"))
    assert "ghost-1" in row.detail
    assert "not registered" in row.detail


def test_topic_mismatch(world: World) -> None:
    """A message of dev-a published on dev-b's topic is topic_mismatch."""
    dev = world.devices["dev-a"]
    raw = dev.reading(LOT)
    world.process(dev.inbound(raw, topic=up_topic("dev-b")))
    row = only_rejection(world, RejectReason.TOPIC_MISMATCH)
    assert bytes(row.raw) == raw
    assert row.topic == up_topic("dev-b")
    assert "'dev-a'" in row.detail
    assert "'dev-b'" in row.detail


def test_unknown_key(world: World) -> None:
    """A message signed with a key the device never registered is unknown_key."""
    impostor = world.device("dev-a", "farm-a", register=False)
    impostor.key = world.device("dev-x", "farm-a", register=False).key  # not dev-a's key
    raw = impostor.reading(LOT)
    world.send(impostor, raw)
    row = only_rejection(world, RejectReason.UNKNOWN_KEY)
    assert bytes(row.raw) == raw
    assert "has no key with kid" in row.detail


def test_revoked_key(world: World) -> None:
    """A message whose device time is after the key's revocation is revoked_key."""
    with session_scope(world.engine) as session:
        revoke_key(session, "dev-a", revoked_since_ms=T0 - HOUR, reason="stolen")
    dev = world.devices["dev-a"]
    raw = dev.reading(LOT)
    world.send(dev, raw)
    row = only_rejection(world, RejectReason.REVOKED_KEY)
    assert bytes(row.raw) == raw
    assert "revoked since" in row.detail


def test_bad_signature(world: World) -> None:
    """A message whose signature is altered is bad_signature."""
    dev = world.devices["dev-a"]
    good = dev.reading(LOT)
    raw = good[:-1] + bytes([good[-1] ^ 0x01])
    world.send(dev, raw)
    row = only_rejection(world, RejectReason.BAD_SIGNATURE)
    assert bytes(row.raw) == raw
    assert (row.device_id, row.seq) == ("dev-a", 1)
    assert "signature" in row.detail


def test_clock_skew(world: World) -> None:
    """A message more than 5 min ahead of the server clock is clock_skew; 5 min is fine."""
    commission(world, LOT)
    dev = world.devices["dev-a"]
    ok = dev.reading(LOT, time=RECEIVED + 5 * 60_000)
    ahead = dev.reading(LOT, time=RECEIVED + 5 * 60_000 + 1)
    result = world.send(dev, ok, ahead)
    assert result.accepted == 1
    row = only_rejection(world, RejectReason.CLOCK_SKEW)
    assert bytes(row.raw) == ahead
    assert "ahead of the server time" in row.detail


def test_duplicate_resends_the_stored_receipt(world: World) -> None:
    """The same bytes again make no new entry; the stored receipt is returned again."""
    commission(world, LOT)
    dev = world.devices["dev-a"]
    raw = dev.reading(LOT)
    first = world.send(dev, raw)
    entries = world.count("log_entries")
    again = world.send(dev, raw, now_ms=RECEIVED + 60_000)
    assert (again.accepted, again.duplicates) == (0, 1)
    assert again.receipts == first.receipts
    assert world.count("log_entries") == entries
    assert world.count("rejections") == 0


def test_resend_of_logged_bytes_skips_the_signature_check(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resend of logged bytes is answered without an Ed25519 check; new bytes still get one."""
    commission(world, LOT)
    dev = world.devices["dev-a"]
    logged = [dev.reading(LOT) for _ in range(3)]
    first = world.send(dev, *logged)
    checked: list[int] = []
    verify = signatures_module._verify_many

    def counting(tasks: list[VerifyTask]) -> list[Verdict]:
        checked.append(len(tasks))
        return verify(tasks)

    monkeypatch.setattr(signatures_module, "_verify_many", counting)
    fresh = dev.reading(LOT)
    again = world.send(dev, *logged, fresh, now_ms=RECEIVED + 60_000)
    assert (again.accepted, again.duplicates) == (1, 3)
    assert again.receipts[:3] == first.receipts
    assert sum(checked) == 1  # only the new message was verified


def test_resend_with_a_forged_signature_is_not_a_duplicate(world: World) -> None:
    """Same device+seq and payload but other signature bytes: checked, refused, not receipted."""
    commission(world, LOT)
    dev = world.devices["dev-a"]
    raw = dev.reading(LOT)
    world.send(dev, raw)
    forged = raw[:-1] + bytes([raw[-1] ^ 1])  # the signature's last byte
    result = world.send(dev, forged, now_ms=RECEIVED + 60_000)
    assert result.receipts == []
    assert result.duplicates == 0
    assert sum(result.rejected.values()) == 1


def test_duplicate_within_one_batch(world: World) -> None:
    """A message twice in one batch is logged once; both copies get the same receipt."""
    commission(world, LOT)
    dev = world.devices["dev-a"]
    raw = dev.reading(LOT)
    result = world.send(dev, raw, raw)
    assert (result.accepted, result.duplicates) == (1, 1)
    assert len(result.receipts) == 2
    assert result.receipts[0] == result.receipts[1]
    assert world.count("log_entries") == 2


def test_equivocation_rejected_and_alerted(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """Same device+seq with other bytes is equivocation: stored, alerted, logged at ERROR."""
    commission(world, LOT)
    dev = world.devices["dev-a"]
    first = dev.reading(LOT, seq=7, value=4.0)
    second = dev.reading(LOT, seq=7, value=9.0)
    world.send(dev, first)
    with caplog.at_level(logging.ERROR, logger="ingest.processor"):
        result = world.send(dev, second)
    assert result.rejected == {RejectReason.EQUIVOCATION: 1}
    assert len(result.alerts) == 1
    assert "dev-a" in result.alerts[0]
    row = only_rejection(world, RejectReason.EQUIVOCATION)
    assert bytes(row.raw) == second
    assert (row.device_id, row.seq) == ("dev-a", 7)
    sha_new = parse_message(second).sha256.hex()
    sha_old = parse_message(first).sha256.hex()
    assert sha_new in row.detail
    assert sha_old in row.detail
    assert any(
        r.levelno == logging.ERROR and sha_new in r.getMessage() and sha_old in r.getMessage()
        for r in caplog.records
    )
    assert world.count("log_entries") == 2


def test_equivocation_within_one_batch(world: World) -> None:
    """Two different messages with one seq in a batch: the first is logged, the second refused."""
    commission(world, LOT)
    dev = world.devices["dev-a"]
    first = dev.reading(LOT, seq=5, value=1.0)
    second = dev.reading(LOT, seq=5, value=2.0)
    result = world.send(dev, first, second)
    assert result.accepted == 1
    assert result.rejected == {RejectReason.EQUIVOCATION: 1}
    assert bytes(only_rejection(world, RejectReason.EQUIVOCATION).raw) == second


def test_out_of_order_accepted_and_gaps_reported(world: World) -> None:
    """Seqs arriving out of order are all accepted; the missing ones are reported as gaps."""
    commission(world, LOT)  # seq 1
    dev = world.devices["dev-a"]
    raws = [dev.reading(LOT, seq=s) for s in (9, 2, 5, 7)]
    result = world.send(dev, *raws)
    assert result.accepted == 4
    assert _gaps(world, "dev-a") == [(3, 4), (6, 6), (8, 8)]
    world.send(dev, dev.reading(LOT, seq=3), dev.reading(LOT, seq=4))
    assert _gaps(world, "dev-a") == [(6, 6), (8, 8)]
    assert _gaps(world, "dev-b") == []


def _gaps(world: World, device: str) -> list[tuple[int, int]]:
    with session_scope(world.engine) as session:
        return device_gaps(session, device)


def test_unauthorized_product(world: World) -> None:
    """A reading about a product another party holds is unauthorized_product."""
    commission(world, LOT)
    dev = world.devices["dev-b"]
    raw = dev.reading(LOT)
    world.send(dev, raw)
    row = only_rejection(world, RejectReason.UNAUTHORIZED_PRODUCT)
    assert bytes(row.raw) == raw
    assert "'packer-b' does not hold product" in row.detail
    assert "'farm-a'" in row.detail


def test_parked_then_applied_when_commissioning_arrives(world: World) -> None:
    """A reading before its commissioning is parked, then logged after the commissioning."""
    dev = world.devices["dev-a"]
    early = dev.reading(LOT, seq=2)
    parked = world.send(dev, early)
    assert (parked.parked, parked.accepted, parked.receipts) == (1, 0, [])
    assert world.count("parked_messages") == 1
    assert [r.product_key for r in world.rows("parked_products")] == [LOT]
    result = world.send(dev, dev.event("commissioning", LOT, seq=1), now_ms=RECEIVED + HOUR)
    assert (result.accepted, result.unparked, result.parked) == (2, 1, 0)
    assert [parse_receipt(r).receipt.seq for _, r in result.receipts] == [1, 2]
    for _, raw in result.receipts:
        parse_receipt(raw).verify(world.log_key.public_key)
    assert world.count("parked_messages") == 0
    assert world.count("parked_products") == 0
    links = world.rows("chain_links", "pseq")
    entries = {row.index: row for row in world.rows("log_entries")}
    assert [(link.pseq, entries[link.log_index].seq) for link in links] == [(1, 1), (2, 2)]
    assert bytes(links[0].prev_hash) == GENESIS_PREV
    assert bytes(links[1].prev_hash) == bytes(entries[links[0].log_index].leaf_hash)
    # The parked message keeps its own receive time in the entry and the receipt.
    assert entries[links[1].log_index].received_ms == RECEIVED


def test_parked_and_commissioned_in_the_same_batch(world: World) -> None:
    """A reading parked earlier in the same batch is applied right after the commissioning."""
    dev = world.devices["dev-a"]
    reading = dev.reading(LOT, seq=2)
    commissioning = dev.event("commissioning", LOT, seq=1)
    other = dev.reading(LOT, seq=3)
    result = world.send(dev, reading, commissioning, other)
    assert (result.accepted, result.parked, result.unparked) == (3, 0, 0)
    assert [parse_receipt(r).receipt.seq for _, r in result.receipts] == [1, 2, 3]
    assert world.count("parked_messages") == 0


def test_parked_duplicate_is_ignored(world: World) -> None:
    """The same parked message again stores nothing new and sends no receipt."""
    dev = world.devices["dev-a"]
    raw = dev.reading(LOT, seq=2)
    world.send(dev, raw)
    again = world.send(dev, raw)
    assert (again.duplicates, again.parked, again.receipts) == (1, 0, [])
    assert world.count("parked_messages") == 1
    assert world.count("rejections") == 0


def test_parked_message_expires_as_unknown_product(world: World) -> None:
    """A parked message whose product never comes is rejected as unknown_product, bytes kept."""
    dev = world.devices["dev-a"]
    raw = dev.reading(LOT)
    world.send(dev, raw)
    assert world.processor.expire_parked(RECEIVED + 24 * HOUR - 1).rejected == {}
    result = world.processor.expire_parked(RECEIVED + 24 * HOUR)
    assert result.rejected == {RejectReason.UNKNOWN_PRODUCT: 1}
    row = only_rejection(world, RejectReason.UNKNOWN_PRODUCT)
    assert bytes(row.raw) == raw
    assert (row.device_id, row.seq, row.topic) == ("dev-a", 1, up_topic("dev-a"))
    assert LOT in row.detail
    assert world.count("parked_messages") == 0
    assert world.count("parked_products") == 0
    # A late commissioning no longer applies it.
    late = world.send(dev, dev.event("commissioning", LOT), now_ms=RECEIVED + 25 * HOUR)
    assert (late.accepted, late.unparked) == (1, 0)


def test_multi_product_reading_is_one_entry_with_a_link_per_product(world: World) -> None:
    """A reading naming two products is one log entry with one chain link per product."""
    commission(world, LOT, LOT2)
    dev = world.devices["dev-a"]
    world.send(dev, dev.reading(LOT, LOT2))
    entry_row = world.rows("log_entries", "index")[-1]
    entry = parse_entry(bytes(entry_row.entry))
    assert [(c.product.path, c.pseq) for c in entry.chains] == [(LOT, 2), (LOT2, 2)]
    links = [r for r in world.rows("chain_links") if r.log_index == entry_row.index]
    assert sorted((r.product_key, r.pseq) for r in links) == sorted([(LOT, 2), (LOT2, 2)])
    first = world.rows("log_entries", "index")[0]
    for chain in entry.chains:
        assert chain.prev == bytes(first.leaf_hash)


def test_chain_integrity_recomputed_from_stored_entries(world: World) -> None:
    """For each product, every entry's prev is the leaf hash of the product's previous entry."""
    commission(world, LOT)
    commission(world, LOT2)
    dev = world.devices["dev-a"]
    batch = [dev.reading(LOT), dev.reading(LOT2), dev.reading(LOT, LOT2), dev.reading(LOT)]
    world.send(dev, *batch[:2])
    world.send(dev, *batch[2:])
    entries = world.rows("log_entries", "index")
    assert [row.index for row in entries] == list(range(len(entries)))  # no gaps
    heads: dict[str, tuple[int, bytes]] = {}
    for row in entries:
        entry = parse_entry(bytes(row.entry))
        assert leaf_hash(bytes(row.entry)) == bytes(row.leaf_hash)
        for chain in entry.chains:
            pseq, prev = heads.get(chain.product.path, (0, GENESIS_PREV))
            assert (chain.pseq, chain.prev) == (pseq + 1, prev)
            heads[chain.product.path] = (chain.pseq, leaf_hash(bytes(row.entry)))
    assert heads[LOT][0] == 4
    assert heads[LOT2][0] == 3


def test_failed_transaction_stores_nothing_and_returns_no_receipts(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error before the commit rolls the whole batch back: no rows, no receipts."""
    commission(world, LOT)
    dev = world.devices["dev-a"]
    before = {name: world.count(name) for name in ("log_entries", "chain_links", "receipts")}
    batch = [dev.reading(LOT), dev.reading(product("LOT9")), b"junk"]

    def boom(conn: object) -> None:
        raise RuntimeError("injected failure before commit")

    monkeypatch.setattr(world.processor, "_before_commit", boom)
    with pytest.raises(RuntimeError, match="injected"):
        world.send(dev, *batch)
    after = {name: world.count(name) for name in ("log_entries", "chain_links", "receipts")}
    assert after == before
    assert world.count("rejections") == 0
    assert world.count("parked_messages") == 0
    monkeypatch.undo()
    result = world.send(dev, *batch)  # the same batch again goes through normally
    assert (result.accepted, result.parked, sum(result.rejected.values())) == (1, 1, 1)
    assert world.rows("log_entries", "index")[-1].index == 1


def test_list_rejections_filters(world: World) -> None:
    """Stored rejections can be listed by reason and device, newest first, with a limit."""
    dev = world.devices["dev-a"]
    world.process(Inbound(up_topic("dev-a"), b"x", RECEIVED))
    world.process(Inbound(up_topic("dev-b"), b"y", RECEIVED))
    world.send(dev, dev.reading(LOT, time=RECEIVED + HOUR))
    with session_scope(world.engine) as session:
        malformed = list_rejections(session, reason=RejectReason.MALFORMED)
        assert [r.raw for r in malformed] == [b"y", b"x"]
        assert [r.raw for r in list_rejections(session, device_id="dev-b")] == [b"y"]
        skew = list_rejections(session, reason=RejectReason.CLOCK_SKEW, device_id="dev-a")
        assert [(r.reason, r.seq) for r in skew] == [("clock_skew", 1)]
        assert len(list_rejections(session, limit=1)) == 1


def test_registered_but_uncommissioned_product_waits_for_owner(world: World) -> None:
    """A product row without commissioning parks appends; only its owner may commission it."""
    products = table("products")
    with world.engine.begin() as conn:
        conn.execute(products.insert().values(key=LOT, owner_party_id="farm-a", created_ms=T0))
    dev_a, dev_b = world.devices["dev-a"], world.devices["dev-b"]
    assert world.send(dev_a, dev_a.reading(LOT)).parked == 1
    refused = world.send(dev_b, dev_b.event("commissioning", LOT))
    assert refused.rejected == {RejectReason.UNAUTHORIZED_PRODUCT: 1}
    result = world.send(dev_a, dev_a.event("commissioning", LOT))
    assert (result.accepted, result.unparked) == (2, 1)
    [row] = world.rows("products")
    assert (row.holder_party_id, row.commissioned_index) == ("farm-a", 0)


def test_checks_run_in_the_documented_order(world: World) -> None:
    """A message failing several rules gets the reason checked first (design.md order)."""
    dev_a = world.devices["dev-a"]
    ghost = world.device("ghost-2", "farm-a", register=False)
    # Unregistered payload device on another device's topic: unknown_device before mismatch.
    unknown = ghost.reading(LOT)
    # Bad signature and too far in the future: bad_signature before clock_skew.
    skewed = dev_a.reading(LOT, time=RECEIVED + HOUR)
    forged = skewed[:-1] + bytes([skewed[-1] ^ 0x80])
    world.process(ghost.inbound(unknown, topic=up_topic("dev-a")), dev_a.inbound(forged))
    reasons = sorted((r.reason, bytes(r.raw)) for r in world.rows("rejections"))
    assert reasons == sorted([("unknown_device", unknown), ("bad_signature", forged)])


def test_device_gaps_accepts_a_session(world: World) -> None:
    """device_gaps works on an ORM session as well as on an engine."""
    commission(world, LOT)
    dev = world.devices["dev-a"]
    world.send(dev, dev.reading(LOT, seq=4))
    with session_scope(world.engine) as session:
        assert device_gaps(session, "dev-a") == [(2, 3)]


# --- bounded rejections --------------------------------------------------------------------


def test_oversized_payload_keeps_a_bounded_prefix_its_length_and_hash(world: World) -> None:
    """A 10 MB payload is too_large: one row with a 1 KiB prefix, the full length and SHA-256."""
    raw = bytes(range(256)) * (10_000_000 // 256)
    result = world.process(Inbound(up_topic("dev-a"), raw, RECEIVED))
    assert result.rejected == {RejectReason.TOO_LARGE: 1}
    row = only_rejection(world, RejectReason.TOO_LARGE)
    assert bytes(row.raw) == raw[:REJECTION_PREFIX_BYTES]
    assert row.raw_length == len(raw)
    assert bytes(row.raw_sha256) == hashlib.sha256(raw).digest()
    assert (row.device_id, row.seq, row.received_count) == ("dev-a", None, 1)
    assert f"{len(raw)} bytes" in row.detail


def test_message_limit_is_a_setting_checked_before_parsing(engine: Engine, world: World) -> None:
    """A payload over the configured limit is too_large even if it is a valid message."""
    dev = world.devices["dev-a"]
    raw = dev.reading(LOT)
    processor = Processor(engine, world.log_key, IngestConfig(max_message_bytes=64 * 1024))
    try:
        padded = raw + b"\x00" * (64 * 1024 + 1 - len(raw))
        inside = b"\x00" * (64 * 1024)  # at the limit: read, and refused as malformed
        result = processor.process(
            [dev.inbound(padded), dev.inbound(inside), dev.inbound(raw)], RECEIVED
        )
    finally:
        processor.close()
    assert result.rejected == {RejectReason.TOO_LARGE: 1, RejectReason.MALFORMED: 1}
    assert result.parked == 1  # the genuine message went on (its lot is not commissioned)
    reasons = {row.reason: row for row in world.rows("rejections")}
    assert bytes(reasons["malformed"].raw) == inside  # within the limit: kept whole
    assert reasons["too_large"].raw_length == len(padded)


def test_limit_below_the_protocol_limit_is_refused() -> None:
    """A message limit under the protocol's 16 KiB would refuse valid messages: not allowed."""
    with pytest.raises(ValueError, match="at least 16384"):
        IngestConfig(max_message_bytes=16383)


def test_resends_of_refused_bytes_are_counted_on_one_row(world: World) -> None:
    """50 resends of the same refused bytes (across batches) are one row with count 50."""
    dev = world.devices["dev-a"]
    raw = dev.reading(LOT, time=RECEIVED + HOUR)  # clock_skew
    for batch in range(10):
        received = RECEIVED + batch * 1000
        world.process(*(dev.inbound(raw, received) for _ in range(5)), now_ms=received)
    row = only_rejection(world, RejectReason.CLOCK_SKEW)
    assert bytes(row.raw) == raw
    assert (row.received_count, row.received_ms, row.last_received_ms) == (
        50,
        RECEIVED,
        RECEIVED + 9000,
    )


def test_oversized_resends_are_counted_not_stored_again(world: World) -> None:
    """Every resend of an oversized payload adds to the count of its one row."""
    raw = b"\x01" * 200_000
    for n in range(3):
        world.process(Inbound(up_topic("dev-a"), raw, RECEIVED + n), now_ms=RECEIVED + n)
    row = only_rejection(world, RejectReason.TOO_LARGE)
    assert (row.received_count, row.last_received_ms) == (3, RECEIVED + 2)


def test_same_bytes_other_topic_or_reason_get_their_own_rows(world: World) -> None:
    """Repeats are counted per topic and reason: a refusal never loses its own reason."""
    dev = world.devices["dev-a"]
    raw = dev.reading(LOT, time=RECEIVED + HOUR)
    world.process(dev.inbound(raw), dev.inbound(raw, topic=up_topic("dev-b")))
    # The same bytes refused later for another reason (the key revoked meanwhile).
    with session_scope(world.engine) as session:
        revoke_key(session, "dev-a", revoked_since_ms=T0 - HOUR, reason="stolen")
    world.process(dev.inbound(raw))
    got = sorted((r.topic, r.reason, r.received_count) for r in world.rows("rejections"))
    assert got == [
        (up_topic("dev-a"), "clock_skew", 1),
        (up_topic("dev-a"), "revoked_key", 1),
        (up_topic("dev-b"), "topic_mismatch", 1),
    ]


def test_expired_parked_resends_are_counted(world: World) -> None:
    """A message parked, expired, resent and expired again is one unknown_product row, count 2."""
    dev = world.devices["dev-a"]
    raw = dev.reading(LOT)
    for n in range(2):
        start = RECEIVED + n * 48 * HOUR
        assert world.send(dev, raw, now_ms=start).parked == 1
        world.processor.expire_parked(start + 25 * HOUR)
    row = only_rejection(world, RejectReason.UNKNOWN_PRODUCT)
    assert (row.received_count, row.last_received_ms) == (2, RECEIVED + 48 * HOUR)


def test_rejection_counts_count_every_refusal(world: World) -> None:
    """The per-reason counts behind /metrics add up repeats, not rows."""
    dev = world.devices["dev-a"]
    world.process(*(dev.inbound(b"x") for _ in range(3)))
    with session_scope(world.engine) as session:
        counts = rejection_counts(session)
    assert counts[RejectReason.MALFORMED] == 3
    assert counts[RejectReason.TOO_LARGE] == 0


# --- key windows and a late device clock ---------------------------------------------------


def test_slow_clock_signs_right_after_registration(world: World) -> None:
    """A device clock up to 5 min behind is accepted from its registration on, not before."""
    new = world.device("dev-new", "farm-a", register=False)
    registered = RECEIVED  # the server stamps valid_from with its own clock
    with session_scope(world.engine) as session:
        register_device(session, "dev-new", "farm-a", bytes(new.key.verify_key), registered)
    commission(world, LOT)
    late = new.reading(LOT, time=registered - 5 * 60_000)
    too_late = new.reading(LOT, time=registered - 5 * 60_000 - 1)
    result = world.send(new, late, too_late, now_ms=registered + 1_000)
    assert result.accepted == 1
    row = only_rejection(world, RejectReason.REVOKED_KEY)
    assert bytes(row.raw) == too_late
    assert "clock tolerance" in row.detail


def test_revoked_key_gets_no_clock_tolerance(world: World) -> None:
    """After revocation nothing is accepted; a key revoked since issue signs nothing at all."""
    commission(world, LOT)
    dev = world.devices["dev-a"]
    revoked_at = RECEIVED + HOUR
    with session_scope(world.engine) as session:
        revoke_key(session, "dev-a", revoked_since_ms=revoked_at, reason="stolen")
        issued = T0 - 24 * HOUR  # the world's registration time of dev-c
        revoke_key(session, "dev-c", revoked_since_ms=issued, reason="stolen before use")
    now = revoked_at + 2 * HOUR
    before = dev.reading(LOT, time=revoked_at - 1)
    after = dev.reading(LOT, time=revoked_at)
    dev_c = world.devices["dev-c"]
    backdated = dev_c.reading(LOT, time=issued - 60_000)  # inside the tolerance of valid_from
    result = world.process(
        dev.inbound(before, now), dev.inbound(after, now), dev_c.inbound(backdated, now), now_ms=now
    )
    assert result.accepted == 1
    assert result.rejected == {RejectReason.REVOKED_KEY: 2}
    details = {bytes(r.raw): r.detail for r in world.rows("rejections")}
    assert f"revoked since {revoked_at}" in details[after]
    assert f"is valid from {issued}, message time" in details[backdated]


def test_a_batch_prepared_before_its_predecessor_commits_ends_as_if_after_it(
    world: World,
) -> None:
    """Prepared one ahead: the commissioning it names and the resend it holds count at commit."""
    dev = world.devices["dev-a"]
    commissioning = dev.event("commissioning", LOT)
    reading = dev.reading(LOT)
    first = world.processor.prepare([dev.inbound(commissioning)], RECEIVED)
    # Prepared while the commissioning is not yet committed: the product is unknown and the
    # resend is not yet in the log. Both are decided again at the commit, under the lock.
    second = world.processor.prepare(
        [dev.inbound(commissioning), dev.inbound(reading)], RECEIVED + 1
    )
    done = world.processor.commit(first)
    after = world.processor.commit(second)
    assert done.accepted == 1
    assert (after.accepted, after.duplicates, after.parked) == (1, 1, 0)
    assert after.receipts[0] == done.receipts[0]  # the resend gets the stored receipt
    assert world.count("log_entries") == 2
    with pytest.raises(ValueError, match="commits once"):
        world.processor.commit(second)
