"""Device-initiated key rotations through the ingest core, on both engines (docs/protocol.md §5)."""

from __future__ import annotations

import dataclasses
from typing import Any

import nacl.signing
import pytest
from ingest_kit import HOUR, RECEIVED, T0, FakeDevice, World, product, seed
from sqlalchemy import Engine

from ingest import BatchResult, Processor
from ingest import processor as processor_module
from ingest.checkpointer import checkpoint_once
from tracecore.bundle import Policy, verify_bundle
from tracecore.cose import parse_message, sign_message
from tracecore.errors import RejectReason
from tracecore.identifiers import ProductKey
from tracecore.keys import device_kid
from tracecore.logentry import DeviceRegistered, KeyRotated, parse_any_entry, parse_entry
from tracecore.message import KeyRotation, sign_rotation_pop
from tracecore.receipt import parse_receipt
from tracecore.storage import device_keys, register_device, revoke_key, session_scope
from tracecore.storage.evidence import build_bundle
from tracecore.storage.logwriter import append_registry_entry, log_session

LOT = product("LOT1")
NOW = RECEIVED + 10_000  # the server's clock when the rotation is processed
ORIGIN = "agritrace-test-log"


def rotation(
    device: FakeDevice,
    new_key: nacl.signing.SigningKey,
    *,
    seq: int | None = None,
    time: int = T0 + 5_000,
    pop_key: nacl.signing.SigningKey | None = None,
) -> bytes:
    """Return a rotation of ``device`` onto ``new_key``, signed by the device's current key."""
    seq = device._seq(seq)
    old_kid = device_kid(bytes(device.key.verify_key))
    pop = sign_rotation_pop(pop_key or new_key, device.id, seq, time, old_kid)
    message = KeyRotation(device.id, seq, time, bytes(new_key.verify_key), pop)
    return sign_message(message, device.key)


def new_key(label: str) -> nacl.signing.SigningKey:
    """A fixed test key that no device holds yet."""
    return nacl.signing.SigningKey(seed(label))


def keys_of(world: World, device: str) -> list[tuple[bytes, int, int | None]]:
    """The device's key history: (public key, valid_from_ms, valid_until_ms), oldest first."""
    with session_scope(world.engine) as session:
        return [
            (bytes(k.public_key), k.valid_from_ms, k.valid_until_ms)
            for k in device_keys(session, device)
        ]


def reasons(world: World) -> list[tuple[str, str]]:
    """Every stored rejection as (reason, detail)."""
    return [(row.reason, row.detail) for row in world.rows("rejections", "id")]


@pytest.fixture
def rotated(world: World) -> tuple[World, bytes, nacl.signing.SigningKey]:
    """dev-a has commissioned LOT and rotated onto a new key at NOW; the rotation's bytes."""
    dev = world.devices["dev-a"]
    assert world.send(dev, dev.event("commissioning", LOT)).accepted == 1
    fresh = new_key("dev-a-second")
    raw = rotation(dev, fresh)
    result = world.send(dev, raw, now_ms=NOW)
    assert (result.accepted, dict(result.rejected)) == (1, {}), reasons(world)
    return world, raw, fresh


def test_rotation_accepted_with_receipt_entry_and_new_key(
    rotated: tuple[World, bytes, nacl.signing.SigningKey],
) -> None:
    """An accepted rotation: a receipted device_message entry, then key_rotated, keys switched."""
    world, raw, fresh = rotated
    old = bytes(world.devices["dev-a"].key.verify_key)
    rows = world.rows("log_entries", "index")
    message_row, rotated_row = rows[-2], rows[-1]
    assert message_row.kind == "device_message"
    assert bytes(message_row.raw) == raw
    entry = parse_entry(bytes(message_row.entry))
    assert (entry.device, entry.seq, entry.chains) == ("dev-a", 2, ())
    assert rotated_row.kind == "key_rotated"
    assert rotated_row.index == message_row.index + 1
    fact = parse_any_entry(bytes(rotated_row.entry))
    assert fact == KeyRotated("dev-a", bytes(fresh.verify_key), NOW, NOW)
    assert keys_of(world, "dev-a") == [
        (old, T0 - 24 * HOUR, NOW),
        (bytes(fresh.verify_key), NOW, None),
    ]
    [stored] = [r for r in world.rows("receipts") if r.seq == 2]
    receipt = parse_receipt(bytes(stored.raw))
    receipt.verify(world.log_key.public_key)
    assert receipt.matches(parse_message(raw))
    assert receipt.receipt.index == message_row.index


def test_rotation_is_one_transaction(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure before the commit leaves no entry, no key change and no receipt behind."""
    dev = world.devices["dev-a"]
    before = (world.count("log_entries"), keys_of(world, "dev-a"))

    def fail(conn: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(world.processor, "_before_commit", fail)
    with pytest.raises(RuntimeError, match="power cut"):
        world.send(dev, rotation(dev, new_key("dev-a-second")), now_ms=NOW)
    assert (world.count("log_entries"), keys_of(world, "dev-a")) == before
    assert world.count("receipts") == 0


def test_resent_rotation_is_a_duplicate(
    rotated: tuple[World, bytes, nacl.signing.SigningKey],
) -> None:
    """The same bytes again get the same receipt, and no second entry or key."""
    world, raw, _ = rotated
    dev = world.devices["dev-a"]
    entries, keys = world.count("log_entries"), keys_of(world, "dev-a")
    [stored] = [bytes(r.raw) for r in world.rows("receipts") if r.seq == 2]
    result = world.send(dev, raw, now_ms=NOW + HOUR)
    assert (result.accepted, result.duplicates, dict(result.rejected)) == (0, 1, {})
    assert result.receipts == [("dev-a", stored)]
    assert (world.count("log_entries"), keys_of(world, "dev-a")) == (entries, keys)


def test_after_rotation_new_key_signs_and_old_key_is_revoked(
    rotated: tuple[World, bytes, nacl.signing.SigningKey],
) -> None:
    """The new key's readings are receipted; the old key's at or after the rotation are not."""
    world, _, fresh = rotated
    dev = world.devices["dev-a"]
    old_key = dev.key
    dev.key = fresh
    result = world.send(dev, dev.reading(LOT, time=NOW + 1), now_ms=NOW + 2)
    assert (result.accepted, dict(result.rejected)) == (1, {}), reasons(world)
    receipt = parse_receipt(result.receipts[0][1])
    receipt.verify(world.log_key.public_key)
    dev.key = old_key
    result = world.send(dev, dev.reading(LOT, time=NOW), now_ms=NOW + 3)
    assert dict(result.rejected) == {RejectReason.REVOKED_KEY: 1}
    # Before the rotation time the old key still signs (a reading from the outbox).
    result = world.send(dev, dev.reading(LOT, time=NOW - 1), now_ms=NOW + 4)
    assert (result.accepted, dict(result.rejected)) == (1, {})


def test_second_rotation_by_the_old_key_is_refused(
    rotated: tuple[World, bytes, nacl.signing.SigningKey],
) -> None:
    """An old key cannot rotate again, even timed inside its own window (a forked rotation)."""
    world, _, _ = rotated
    dev = world.devices["dev-a"]
    entries = world.count("log_entries")
    for label, time in (("attacker-1", NOW - 60_000), ("attacker-2", T0), ("late", NOW + 9)):
        raw = rotation(dev, new_key(label), time=time)
        result = world.send(dev, raw, now_ms=NOW + HOUR)
        assert dict(result.rejected) == {RejectReason.BAD_ROTATION: 1}
    details = [detail for reason, detail in reasons(world) if reason == "bad_rotation"]
    assert len(details) == 3, details
    assert all("rotated out" in d for d in details), details
    assert world.count("log_entries") == entries
    assert [k[0] for k in keys_of(world, "dev-a")][-1] == bytes(new_key("dev-a-second").verify_key)


def test_bad_pop_is_refused(world: World) -> None:
    """A pop by another key, or over another new key, is refused and nothing changes."""
    dev = world.devices["dev-a"]
    keys = keys_of(world, "dev-a")
    wrong_signer = rotation(dev, new_key("n1"), pop_key=new_key("someone-else"))
    # A valid pop of n2 moved onto n3's rotation: it names n3 but proves n2.
    seq = dev._seq(None)
    kid = device_kid(bytes(dev.key.verify_key))
    pop = sign_rotation_pop(new_key("n2"), dev.id, seq, T0, kid)
    moved = sign_message(
        KeyRotation(dev.id, seq, T0, bytes(new_key("n3").verify_key), pop), dev.key
    )
    result = world.send(dev, wrong_signer, moved, now_ms=NOW)
    assert dict(result.rejected) == {RejectReason.BAD_ROTATION: 2}
    assert all("pop does not verify" in detail for _, detail in reasons(world))
    assert keys_of(world, "dev-a") == keys
    assert world.count("log_entries") == 0


def test_new_key_taken_or_same_is_refused(world: World) -> None:
    """A key of another device, or the signing key itself, cannot be rotated to."""
    dev = world.devices["dev-a"]
    other = world.devices["dev-b"].key
    result = world.send(dev, rotation(dev, other), rotation(dev, dev.key), now_ms=NOW)
    assert dict(result.rejected) == {RejectReason.BAD_ROTATION: 2}
    [(_, taken), (_, same)] = reasons(world)
    assert "registered already" in taken
    assert "'dev-b'" in taken
    assert "that signs the rotation" in same


def test_revoked_key_cannot_rotate(world: World) -> None:
    """A revoked key hands over to nothing, even with a rotation timed before the revocation."""
    dev = world.devices["dev-a"]
    with session_scope(world.engine) as session:
        revoke_key(session, "dev-a", revoked_since_ms=T0 + HOUR, reason="stolen")
    result = world.send(dev, rotation(dev, new_key("n1"), time=T0), now_ms=NOW)
    assert dict(result.rejected) == {RejectReason.BAD_ROTATION: 1}
    assert "revoked" in reasons(world)[0][1]


def test_rotation_time_follows_the_devices_latest_message(world: World) -> None:
    """Accepted messages timed after the server clock keep a valid key: the rotation waits."""
    dev = world.devices["dev-a"]
    world.send(dev, dev.event("commissioning", LOT))
    ahead = NOW + 120_000  # a device clock 2 minutes ahead (allowed, docs/protocol.md §5)
    assert world.send(dev, dev.reading(LOT, time=ahead), now_ms=NOW).accepted == 1
    fresh = new_key("n1")
    assert world.send(dev, rotation(dev, fresh, time=ahead + 5), now_ms=NOW).accepted == 1
    [*_, (_, _, until), (_, start, _)] = keys_of(world, "dev-a")
    assert until == start == ahead + 6


def test_old_key_message_after_rotation_in_same_batch_is_revoked(world: World) -> None:
    """In one batch: the rotation, then an old-key reading timed after it, is revoked_key."""
    dev = world.devices["dev-a"]
    world.send(dev, dev.event("commissioning", LOT))
    raw = rotation(dev, new_key("n1"), time=T0 + 1)
    late = dev.reading(LOT, time=NOW + 1_000)
    result = world.send(dev, raw, late, now_ms=NOW)
    assert result.accepted == 1
    assert dict(result.rejected) == {RejectReason.REVOKED_KEY: 1}


def test_rotation_by_another_worker_holds_for_a_batch_checked_before(
    engine: Engine, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys read before the write lock are read again under it: a worker's stale view loses."""
    dev = world.devices["dev-a"]
    world.send(dev, dev.event("commissioning", LOT))
    late = dev.inbound(dev.reading(LOT, time=NOW + 1_000), NOW)
    spin = dev.inbound(rotation(dev, new_key("n1"), time=T0 + 1), NOW)
    other = Processor(engine, world.log_key)
    real_check = processor_module._Run.check
    results: list[BatchResult] = []

    def check(run: Any, eng: Engine, topics: Any) -> Any:
        # Worker 1 has checked the late reading (rules 1-5: the old key is valid); worker 2
        # commits the rotation before worker 1 takes the write lock.
        checked = real_check(run, eng, topics)
        monkeypatch.setattr(processor_module._Run, "check", real_check)
        results.append(other.process([spin], NOW))
        return checked

    monkeypatch.setattr(processor_module._Run, "check", check)
    try:
        result = world.processor.process([late], NOW)
    finally:
        other.close()
    assert [r.accepted for r in results] == [1]
    assert dict(result.rejected) == {RejectReason.REVOKED_KEY: 1}, reasons(world)


def test_bundle_verifies_messages_signed_after_rotation(engine: Engine, world: World) -> None:
    """A product's bundle with readings under the old and the rotated-to key verifies offline."""
    dev = FakeDevice("dev-logged", "farm-a", new_key("dev-logged"))
    with log_session(engine) as session:
        key = register_device(session, dev.id, "farm-a", bytes(dev.key.verify_key), T0 - HOUR)
        fact = DeviceRegistered(dev.id, "farm-a", key.public_key, key.valid_from_ms, T0 - HOUR)
        append_registry_entry(session, fact, T0 - HOUR)
    assert world.send(dev, dev.event("commissioning", LOT), now_ms=T0).accepted == 1
    assert world.send(dev, dev.reading(LOT, time=T0 + 1), now_ms=T0 + 2).accepted == 1
    fresh = new_key("dev-logged-2")
    assert world.send(dev, rotation(dev, fresh, time=T0 + 3), now_ms=NOW).accepted == 1
    dev.key = fresh
    assert world.send(dev, dev.reading(LOT, time=NOW + 1), now_ms=NOW + 2).accepted == 1
    assert checkpoint_once(engine, world.log_key, ORIGIN, NOW + 3) is not None
    with session_scope(engine) as session:
        bundle = build_bundle(session, ProductKey.parse_canonical(LOT))
    policy = Policy(log=world.log_key.verifier)
    report = verify_bundle(bundle, policy)
    assert report.ok, report
    kinds = [parse_any_entry(item.entry).__class__.__name__ for item in bundle.entries]
    assert kinds.count("KeyRotated") == 1
    assert kinds.count("DeviceMessageEntry") == 3
    # Without the key_rotated entry the new key's reading cannot be checked.
    cut = dataclasses.replace(
        bundle,
        entries=tuple(
            item
            for item in bundle.entries
            if not isinstance(parse_any_entry(item.entry), KeyRotated)
        ),
    )
    assert not verify_bundle(cut, policy).ok


def test_two_workers_rotating_at_once_accept_one(
    engine: Engine, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two rotations by the same key checked at once: the second to commit is refused."""
    dev = world.devices["dev-a"]
    first = dev.inbound(rotation(dev, new_key("n1"), time=T0 + 1), NOW)
    second = dev.inbound(rotation(dev, new_key("n2"), time=T0 + 2), NOW)
    other = Processor(engine, world.log_key)
    real_check = processor_module._Run.check
    results: list[BatchResult] = []

    def check(run: Any, eng: Engine, topics: Any) -> Any:
        checked = real_check(run, eng, topics)
        monkeypatch.setattr(processor_module._Run, "check", real_check)
        results.append(other.process([second], NOW))
        return checked

    monkeypatch.setattr(processor_module._Run, "check", check)
    try:
        result = world.processor.process([first], NOW)
    finally:
        other.close()
    assert [r.accepted for r in results] == [1]
    assert dict(result.rejected) == {RejectReason.BAD_ROTATION: 1}
    assert [k[0] for k in keys_of(world, "dev-a")][-1] == bytes(new_key("n2").verify_key)
    assert [row.kind for row in world.rows("log_entries", "index")] == [
        "device_message",
        "key_rotated",
    ]


def test_forged_rotation_is_bad_signature_not_bad_rotation(world: World) -> None:
    """The usual checks come first: a rotation not signed by the key its kid names is forged."""
    dev = world.devices["dev-a"]
    genuine = rotation(dev, new_key("n1"))
    signed = parse_message(genuine)
    forged = bytearray(genuine)
    forged[-1] ^= 0x01  # the envelope's signature, not the pop
    thief = FakeDevice("dev-a", "farm-a", new_key("thief"))
    by_thief = rotation(thief, new_key("n2"))
    result = world.send(dev, bytes(forged), by_thief, now_ms=NOW)
    assert dict(result.rejected) == {
        RejectReason.BAD_SIGNATURE: 1,
        RejectReason.UNKNOWN_KEY: 1,
    }
    assert signed.kid == device_kid(bytes(dev.key.verify_key))
    assert world.count("log_entries") == 0
