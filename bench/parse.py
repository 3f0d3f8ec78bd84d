"""Benchmark: parsing one device message, fast path against the strict parser, in µs.

Signs three typical messages (a reading with two sensors, a packing event with three products,
a parent, a location and a small ``data`` map, and a key rotation) and times, for each, in the
same process and interleaved round by round so a busy machine slows both alike:

* ``parse_message``: what ingest calls (the fast path for these messages);
* ``strict``: ``tracecore.cose._parse_message_strict``, the reference parser (what
  ``parse_message`` was before the fast path, and what it still runs for anything unusual);
* ``cbor2.loads``: cbor2's compiled decoder on the whole message, the floor.

Each figure is the best of ``--rounds`` rounds of ``--number`` calls (the minimum is the least
disturbed by other work). Run::

    .venv/bin/python -m bench.parse
    .venv/bin/python -m bench.parse --number 2000 --rounds 3   # quick

It is a script, not a test (tests/bench only checks that it runs).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

import cbor2
import nacl.signing

from tracecore.cose import _parse_message_fast, _parse_message_strict, parse_message, sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import device_kid
from tracecore.message import AnyMessage, Event, KeyRotation, Reading, Sensor, sign_rotation_pop

__all__ = ["Row", "main", "measure", "messages"]

T0 = 1_795_000_000_000
_KEY = nacl.signing.SigningKey(hashlib.sha256(b"bench.parse").digest())
_NEW_KEY = nacl.signing.SigningKey(hashlib.sha256(b"bench.parse new").digest())


def messages() -> dict[str, bytes]:
    """The typical messages, signed: name -> raw COSE_Sign1 bytes."""
    lot = ProductKey.parse_canonical("01/09506000134352/10/LOT-2611")
    cartons = tuple(ProductKey.parse_canonical(f"01/09506000134352/21/C{i}") for i in range(3))
    device = "pack-line-2"
    typical: dict[str, AnyMessage] = {
        "reading, 2 sensors": Reading(
            "barn-7-sensor",
            42,
            T0,
            (lot,),
            (Sensor("Temperature", 4.5, "CEL"), Sensor("RelativeHumidity", 71, "P1")),
        ),
        "event, 3 products + data": Event(
            device,
            43,
            T0,
            cartons,
            "packing",
            parents=(lot,),
            location="414/9506000134352",
            data={"weight_g": 630, "grade": "A", "checks": [True, 1.5], "line": {"id": "p2"}},
        ),
        "key rotation": KeyRotation(
            device,
            44,
            T0,
            bytes(_NEW_KEY.verify_key),
            sign_rotation_pop(_NEW_KEY, device, 44, T0, device_kid(bytes(_KEY.verify_key))),
        ),
    }
    return {name: sign_message(message, _KEY) for name, message in typical.items()}


@dataclass(frozen=True, slots=True)
class Row:
    """Best µs per call of each parser on one message."""

    name: str
    size: int
    fast_us: float
    strict_us: float
    floor_us: float

    @property
    def speedup(self) -> float:
        """How many times faster parse_message is than the strict parser."""
        return self.strict_us / self.fast_us


def _time(call: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number * 1e6


def measure(raw: bytes, name: str, number: int, rounds: int) -> Row:
    """Time the three parsers on ``raw``, interleaved; checks both parsers agree first."""
    if _parse_message_fast(raw) is None:
        raise SystemExit(f"{name}: the fast path does not take this message")
    if parse_message(raw) != _parse_message_strict(raw):
        raise SystemExit(f"{name}: the parsers disagree")
    best = [float("inf")] * 3
    calls = (
        lambda: parse_message(raw),
        lambda: _parse_message_strict(raw),
        lambda: cbor2.loads(raw),
    )
    for _ in range(rounds):
        for index, call in enumerate(calls):
            best[index] = min(best[index], _time(call, number))
    return Row(name, len(raw), best[0], best[1], best[2])


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(prog="python -m bench.parse", description=__doc__)
    parser.add_argument("--number", type=int, default=20_000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    out.write(
        "| message | bytes | parse_message | strict parser | speed-up | cbor2.loads alone |\n"
    )
    out.write("|---|---:|---:|---:|---:|---:|\n")
    for name, raw in messages().items():
        row = measure(raw, name, args.number, args.rounds)
        out.write(
            f"| {row.name} | {row.size} | {row.fast_us:.1f} µs | {row.strict_us:.1f} µs "
            f"| {row.speedup:.1f}x | {row.floor_us:.1f} µs |\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
