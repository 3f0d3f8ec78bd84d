"""Signature checks and receipt signatures in worker processes answer as they do in threads."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import nacl.signing
import psutil
import pytest
from ingest_kit import RECEIVED, T0, World, product, seed
from sqlalchemy import Engine

from ingest import IngestConfig, Processor
from ingest.signatures import SignaturePool, VerifyTask
from tracecore.cose import parse_message, sign_message
from tracecore.errors import RejectReason, WorkerDied
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey
from tracecore.message import Reading, Sensor
from tracecore.receipt import Receipt, parse_receipt, sign_receipt

LOT = product("sig-lot")
_DEVICE = nacl.signing.SigningKey(seed("sig-device"))
_OTHER = nacl.signing.SigningKey(seed("sig-other"))
_LOG = nacl.signing.SigningKey(seed("log"))


def _task(raw: bytes, public_key: bytes) -> VerifyTask:
    signed = parse_message(raw)
    return (signed.kid, signed.protected, signed.payload, signed.signature, public_key)


def _reading(seq: int) -> bytes:
    lot = ProductKey.parse(LOT)
    message = Reading("dev-sig", seq, T0, (lot,), (Sensor("Temperature", 4.0, "CEL"),))
    return sign_message(message, _DEVICE)


@pytest.fixture(scope="module")
def process_pool() -> Iterator[SignaturePool]:
    """One worker process, started once for the module (spawn takes a moment)."""
    pool = SignaturePool(_LOG, processes=1)
    yield pool
    pool.close()


def _cases() -> list[VerifyTask]:
    good = _reading(1)
    flipped = good[:-1] + bytes([good[-1] ^ 1])
    return [
        _task(good, bytes(_DEVICE.verify_key)),
        _task(flipped, bytes(_DEVICE.verify_key)),  # bad_signature
        _task(good, bytes(_OTHER.verify_key)),  # the kid names another key
    ]


def test_a_worker_process_gives_the_verdicts_of_a_thread(process_pool: SignaturePool) -> None:
    """Good, tampered and wrong-key messages get the same answers in a process and a thread."""
    threads = SignaturePool(_LOG, processes=0)
    try:
        expected = threads.verify(_cases()).result()
    finally:
        threads.close()
    assert process_pool.verify(_cases()).result() == expected
    assert expected[0] is None
    assert expected[1] is not None
    assert expected[1][0] == RejectReason.BAD_SIGNATURE
    assert expected[2] is not None
    assert expected[2][0] == RejectReason.UNKNOWN_KEY


def test_a_worker_process_signs_the_receipt_sign_receipt_gives(
    process_pool: SignaturePool,
) -> None:
    """The receipt bytes from a worker are sign_receipt's, and verify under the log key."""
    receipts = [
        Receipt("dev-sig", n, n + 10, bytes([n]) * 32, bytes([n + 1]) * 32, T0) for n in (1, 2)
    ]
    signed = process_pool.sign(receipts).result()
    assert signed == [sign_receipt(r, _LOG) for r in receipts]
    for raw, receipt in zip(signed, receipts, strict=True):
        parse_receipt(raw).verify(bytes(_LOG.verify_key))
        assert parse_receipt(raw).receipt == receipt


def test_receipts_are_signed_before_the_checks_queued_ahead_of_them(
    process_pool: SignaturePool,
) -> None:
    """A commit waiting for its receipts does not wait for the next batch's queued checks."""
    finished: list[str] = []
    checks = [process_pool.verify(_cases() * 40) for _ in range(20)]  # about 0.2 s of work, queued
    for n, future in enumerate(checks):
        future.add_done_callback(lambda _f, n=n: finished.append(f"check {n}"))
    receipt = Receipt("dev-sig", 1, 11, bytes(32), bytes(32), T0)
    signing = process_pool.sign([receipt])
    signing.add_done_callback(lambda _f: finished.append("receipts"))
    worker = process_pool._workers[0]  # which checks were still queued behind the receipts
    with worker._lock:
        still_queued = [f for _, f in worker._waiting["verify"]]
    assert still_queued  # (a busy machine only makes the queue longer)
    assert signing.result(timeout=60) == [sign_receipt(receipt, _LOG)]
    for future in checks:
        future.result(timeout=60)
    queued_labels = {f"check {n}" for n, f in enumerate(checks) if f in still_queued}
    assert finished.index("receipts") < min(finished.index(label) for label in queued_labels)


def _workers() -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process().children()
        if any("spawn_main" in part for part in child.cmdline())
    ]


def test_a_killed_worker_is_replaced(process_pool: SignaturePool) -> None:
    """After its worker dies, the pool fails the tasks it had and then works again."""
    process_pool.verify(_cases()).result()  # the worker is up
    for worker in _workers():
        os.kill(worker.pid, signal.SIGKILL)
    answers = []
    for _ in range(5):  # the death is noticed by the next task or the one after
        try:
            answers = process_pool.verify(_cases()).result()
            break
        except WorkerDied:
            continue
    assert answers
    assert answers[0] is None
    assert answers[1] is not None


def test_processor_with_a_signature_process_accepts_and_refuses(
    engine: Engine, log_key: SignerKey
) -> None:
    """A batch through a processor whose checks run in a process: good accepted, forged refused."""
    processor = Processor(engine, log_key, IngestConfig(signature_processes=1))
    world = World(engine=engine, log_key=log_key, processor=processor)
    try:
        world.party("farm-a")
        dev = world.device("dev-a", "farm-a")
        assert world.send(dev, dev.event("commissioning", LOT)).accepted == 1
        good = dev.reading(LOT)
        forged = dev.reading(LOT)
        forged = forged[:-1] + bytes([forged[-1] ^ 1])
        result = world.send(dev, good, forged, now_ms=RECEIVED + 1)
        assert (result.accepted, dict(result.rejected)) == (1, {RejectReason.BAD_SIGNATURE: 1})
        (receipt,) = [raw for _, raw in result.receipts]
        parse_receipt(receipt).verify(bytes(log_key.signing_key.verify_key))
    finally:
        processor.close()
