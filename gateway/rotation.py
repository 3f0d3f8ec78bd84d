"""A device rotates its own key: the gateway's side of docs/protocol.md §5 and §8, "Key rotation".

:func:`rotate_device_key` makes a new key, stores it, sends a ``key_rotation`` message signed by
the device's current key through the fleet's outbox, waits for its receipt and then signs with
the new key. Every step is crash-safe; the files in the keys directory say where it stands:

==================================  ==========================================================
``{device}.key``                    the key the device signs with (the old one until the end)
``{device}.pending.key``            the new key, written (mode 0600, fsynced) before anything
                                    is sent: the service may register it, so it must never be
                                    lost
``{device}.rotation.json``          which outbox message is the rotation (``seq``, ``time``,
                                    SHA-256 of its bytes, old and new kid), written in the
                                    outbox transaction that stores the message
``{device}.key.retired-{old kid}``  the old key, kept after the switch (never deleted)
==================================  ==========================================================

The switch, when the receipt is in the outbox: the old key file is linked to its retired name,
the pending key replaces ``{device}.key`` (one atomic rename), the fleet signs with the new key,
the record is removed. ``{device}.key`` exists at every moment, old or new.

After a restart, :func:`resume_rotation` (called once the device is added to the fleet, before
anything is sent) finds the state again: a receipted rotation is finished, an unreceipted one is
waited for (its message is still in the outbox and is resent), a rotation whose message was never
committed leaves only the pending key, which the next :func:`rotate_device_key` sends. The new
key never signs before the receipt: until then the service does not know it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import weakref
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

from gateway.outbox import StoredReceipt
from gateway.runtime import Fleet
from tracecore.cose import sign_message
from tracecore.errors import KeyFileError
from tracecore.keys import SignerKey, device_kid, generate_signer, read_key_file, write_key_file
from tracecore.message import KeyRotation, sign_rotation_pop

__all__ = [
    "RotationResult",
    "RotationState",
    "pending_key_path",
    "resume_rotation",
    "retired_key_path",
    "rotate_device_key",
]

_PENDING: Final = ".pending"
_RECORD: Final = ".rotation.json"


class RotationState(StrEnum):
    """Where a device's rotation stands, as :func:`resume_rotation` found it."""

    NONE = "none"  # no rotation under way
    UNSENT = "unsent"  # a pending key, but no rotation message committed to the outbox
    IN_FLIGHT = "in_flight"  # the rotation is in the outbox, waiting for its receipt
    FINISHED = "finished"  # its receipt was in the outbox: the switch is done now


@dataclass(frozen=True, slots=True)
class RotationResult:
    """A receipted rotation: the message's ``seq``, the old and new kid, and the receipt."""

    device_id: str
    seq: int
    old_kid: bytes
    new_kid: bytes
    receipt: StoredReceipt


@dataclass(slots=True)
class _InFlight:
    """A rotation waiting for its receipt; ``done`` is set when the switch is made."""

    record: dict[str, object]
    done: asyncio.Event = field(default_factory=asyncio.Event)
    result: RotationResult | None = None


#: The rotations in flight of each fleet (one per device at most).
_IN_FLIGHT: weakref.WeakKeyDictionary[Fleet, dict[str, _InFlight]] = weakref.WeakKeyDictionary()


def pending_key_path(keys_dir: Path, device_id: str) -> Path:
    """The file of a device's new key while its rotation is under way."""
    return keys_dir / f"{device_id}{_PENDING}.key"


def retired_key_path(keys_dir: Path, device_id: str, kid: bytes) -> Path:
    """The file a rotated-out key is kept in."""
    return keys_dir / f"{device_id}.key.retired-{kid.hex()}"


async def rotate_device_key(
    fleet: Fleet, device_id: str, keys_dir: Path, *, now_ms: int | None = None
) -> RotationResult:
    """Rotate the key of ``device_id`` of a running ``fleet``; return once the switch is made.

    ``keys_dir`` holds the device's key file (``{device_id}.key``); ``now_ms`` is the
    rotation's ``time`` (default: the device's clock). If a rotation of the device is already
    in flight, waits for that one instead of starting another (call :func:`resume_rotation`
    at start-up, so that one found receipted is finished then and not followed by a second
    rotation here). Bound the wait with
    ``asyncio.timeout``: a cancelled wait leaves the rotation in flight, and the switch is made
    when its receipt arrives (or by :func:`resume_rotation` after a restart). A rotation the
    service refuses (``bad_rotation``, docs/protocol.md §6) gets no receipt and stays in the
    outbox like any refused message.
    """
    state = resume_rotation(fleet, device_id, keys_dir)
    flights = _IN_FLIGHT.setdefault(fleet, {})
    if state is not RotationState.IN_FLIGHT:
        await _send_rotation(fleet, device_id, keys_dir, now_ms)
    flight = flights[device_id]
    await flight.done.wait()
    assert flight.result is not None  # noqa: S101 (set before done)
    return flight.result


def resume_rotation(fleet: Fleet, device_id: str, keys_dir: Path) -> RotationState:
    """Find a device's rotation after a restart and carry it on; return where it stands.

    Call once the device is added to the fleet (with the key in ``{device_id}.key``) and
    before the fleet sends anything for it. Raises :class:`KeyFileError` when the key files
    contradict each other (they were changed by hand).
    """
    flights = _IN_FLIGHT.setdefault(fleet, {})
    if device_id in flights:
        return RotationState.IN_FLIGHT
    pending_path = pending_key_path(keys_dir, device_id)
    record_path = keys_dir / f"{device_id}{_RECORD}"
    record = _read_record(record_path)
    if not pending_path.exists():
        if record is None:
            return RotationState.NONE
        if device_kid(fleet.devices[device_id].key.public_key).hex() == record["new_kid"]:
            _remove(record_path)  # the switch was made; only the record was left
            return RotationState.NONE
        raise KeyFileError(f"{record_path} names a rotation but {pending_path} is missing")
    new_key = read_key_file(keys_dir, device_id, pending_path.stem)
    if record is None or record.get("new_kid") != device_kid(new_key.public_key).hex():
        if record is not None:
            _remove(record_path)
        return RotationState.UNSENT
    return _resume_sent(fleet, device_id, keys_dir, new_key, record)


def _resume_sent(
    fleet: Fleet, device_id: str, keys_dir: Path, new_key: SignerKey, record: dict[str, object]
) -> RotationState:
    """A recorded rotation: in the outbox (wait), receipted (switch) or never committed."""
    flights = _IN_FLIGHT.setdefault(fleet, {})
    seq, sha = int(str(record["seq"])), bytes.fromhex(str(record["msg_sha256"]))
    item = fleet.outbox.get(device_id, seq)
    if item is not None and hashlib.sha256(item.raw).digest() == sha:
        _await_receipt(fleet, device_id, keys_dir, new_key, record)
        return RotationState.IN_FLIGHT
    for receipt in fleet.outbox.receipts(device_id):
        if receipt.seq == seq and receipt.msg == sha:
            flights[device_id] = _InFlight(record)
            _switch(fleet, device_id, keys_dir, new_key, receipt)
            return RotationState.FINISHED
    _remove(keys_dir / f"{device_id}{_RECORD}")  # its outbox transaction did not commit
    return RotationState.UNSENT


async def _send_rotation(fleet: Fleet, device_id: str, keys_dir: Path, now_ms: int | None) -> None:
    """Store the new key (or reuse the pending one) and put the rotation in the outbox."""
    device = fleet.devices[device_id]
    old = device.key
    pending_path = pending_key_path(keys_dir, device_id)
    if pending_path.exists():  # made before a crash, never sent: the same key goes now
        new_key = read_key_file(keys_dir, device_id, pending_path.stem)
    else:
        new_key = generate_signer(device_id)
        write_key_file(keys_dir, new_key, pending_path.stem)
        _sync_dir(keys_dir)
    time_ms = device.clock() if now_ms is None else now_ms
    old_kid = device_kid(old.public_key)
    record_path = keys_dir / f"{device_id}{_RECORD}"
    flights = _IN_FLIGHT.setdefault(fleet, {})
    numbered: list[int] = []

    def build(seq: int) -> KeyRotation:
        pop = sign_rotation_pop(new_key.signing_key, device_id, seq, time_ms, old_kid)
        rotation = KeyRotation(device_id, seq, time_ms, new_key.public_key, pop)
        record: dict[str, object] = {
            "seq": seq,
            "time": time_ms,
            "msg_sha256": hashlib.sha256(sign_message(rotation, old.signing_key)).hexdigest(),
            "old_kid": old_kid.hex(),
            "new_kid": device_kid(new_key.public_key).hex(),
        }
        # Inside the outbox transaction, before its commit: a committed rotation always has
        # its record; a record whose message did not commit is found out by resume_rotation.
        _write_record(record_path, record)
        numbered.append(seq)
        _await_receipt(fleet, device_id, keys_dir, new_key, record)
        return rotation

    try:
        # Signed by the device's current (old) key; in the outbox when this returns.
        await fleet.send(device_id, build)
    except BaseException:
        # Not committed: the number may go to another message, whose receipt must not switch
        # the key. Committed (the wait to queue it was cut short): it stays in flight.
        if numbered and fleet.outbox.get(device_id, numbered[0]) is None:
            fleet.on_settled(device_id, numbered[0], None)
            flights.pop(device_id, None)
        raise


def _await_receipt(
    fleet: Fleet, device_id: str, keys_dir: Path, new_key: SignerKey, record: dict[str, object]
) -> None:
    """Register the rotation in flight: its receipt (and only its) makes the switch."""
    sha = bytes.fromhex(str(record["msg_sha256"]))

    def settled(receipt: StoredReceipt) -> None:
        if receipt.msg == sha:
            _switch(fleet, device_id, keys_dir, new_key, receipt)

    _IN_FLIGHT.setdefault(fleet, {})[device_id] = _InFlight(record)
    fleet.on_settled(device_id, int(str(record["seq"])), settled)


def _switch(
    fleet: Fleet, device_id: str, keys_dir: Path, new_key: SignerKey, receipt: StoredReceipt
) -> None:
    """The rotation is receipted: keep the old key file, make the new one current, sign with it."""
    flight = _IN_FLIGHT.get(fleet, {}).get(device_id)
    current = keys_dir / f"{device_id}.key"
    old_key = fleet.devices[device_id].key
    old_kid = device_kid(old_key.public_key)
    retired = retired_key_path(keys_dir, device_id, old_kid)
    if not retired.exists():
        retired.hardlink_to(current)  # the old key stays readable under its retired name
    pending_key_path(keys_dir, device_id).replace(current)  # atomic: old or new, never none
    _sync_dir(keys_dir)
    fleet.replace_key(device_id, new_key)
    _remove(keys_dir / f"{device_id}{_RECORD}")
    if flight is not None:
        flight.result = RotationResult(
            device_id, receipt.seq, old_kid, device_kid(new_key.public_key), receipt
        )
        flight.done.set()
        _IN_FLIGHT[fleet].pop(device_id, None)


def _read_record(path: Path) -> dict[str, object] | None:
    try:
        value = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"cannot read the rotation record {path}: {exc}") from exc
    if not isinstance(value, dict) or not {"seq", "msg_sha256", "new_kid"} <= set(value):
        raise KeyFileError(f"{path} is not a rotation record")
    return value


def _write_record(path: Path, record: dict[str, object]) -> None:
    """Write the record durably and atomically (a temporary file, fsync, rename)."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(record, sort_keys=True).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    temporary.replace(path)
    _sync_dir(path.parent)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    _sync_dir(path.parent)


def _sync_dir(directory: Path) -> None:
    """fsync a directory, so that a created, renamed or removed name survives a power cut."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
