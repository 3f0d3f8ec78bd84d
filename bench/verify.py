"""Benchmark: `agritrace verify` on a bundle of many entries (issue 4 target: 10,000 in <= 2 s).

Builds, in memory, a log holding one egg lot with N-1 temperature readings from 4 gateways (and
their registrations), a cosigned checkpoint and the lot's bundle, writes the bundle as JSON, then
times parsing and verifying it, as ``agritrace verify`` does. As a baseline in the same run it
times the irreducible part: verifying the N Ed25519 signatures alone with PyNaCl. Reports both and
their ratio (machines here are noisy; the ratio is the comparable number).

Run::

    .venv/bin/python -m bench.verify                 # 10,000 entries
    .venv/bin/python -m bench.verify --entries 1000  # quick

It is a script, not a test (tests/bench only checks that it runs).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import nacl.signing

from tracecore import smt
from tracecore.bundle import (
    Bundle,
    BundleEntry,
    IndexEvidence,
    IndexProof,
    Policy,
    forget_memos,
    parse_bundle,
    verify_bundle,
)
from tracecore.cose import parse_cose, sign_message
from tracecore.identifiers import ProductKey
from tracecore.indexstate import device_key, fold, product_key
from tracecore.keys import SignerKey
from tracecore.logentry import (
    GENESIS_PREV,
    ChainPosition,
    DeviceMessageEntry,
    DeviceRegistered,
    IndexRoot,
    parse_any_entry,
)
from tracecore.merkle import inclusion_proof, leaf_hash, node_hash
from tracecore.message import Event, Reading, Sensor
from tracecore.note import CheckpointBody, cosign, cosigner_verifier, sign_note

__all__ = ["Result", "build", "main", "measure"]

ORIGIN = "bench.agritrace/log"
T0 = 1_795_000_000_000
LOT = ProductKey.parse("01/06901234567892/10/L261127")
GATEWAYS = 4


def _key(label: str) -> SignerKey:
    return SignerKey(label, hashlib.sha256(label.encode()).digest())


class _Tree:
    """All complete-subtree hashes of a list of leaves, for proofs in memory."""

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.levels = [list(leaves)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append(
                [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
            )

    def subtree(self, level: int, idx: int) -> bytes:
        return self.levels[level][idx]

    def root(self, size: int) -> bytes:
        # RFC 9162 §2.1.1 fold of the binary decomposition of size.
        parts, start = [], 0
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                parts.append(self.subtree(level, start >> level))
                start += 1 << level
        value = parts[-1]
        for left in reversed(parts[:-1]):
            value = node_hash(left, value)
        return value


@dataclass(frozen=True, slots=True)
class World:
    """The generated bundle, its policy, and the raw messages (for the baseline)."""

    bundle_json: str
    policy: Policy
    messages: list[bytes]
    keys: dict[str, bytes]


def build(entries: int) -> World:
    """Generate a log of ``entries`` entries around one lot and return its bundle as JSON."""
    log, witness = _key(ORIGIN), _key("bench-witness")
    gateways = [_key(f"hens01-gw-{n}") for n in range(GATEWAYS)]
    items: list[tuple[bytes, bytes | None]] = [
        (DeviceRegistered(gw.name, "gansu-hens-01", gw.public_key, T0, T0).to_bytes(), None)
        for gw in gateways
    ]
    prev = GENESIS_PREV
    messages: list[bytes] = []
    for n in range(entries - len(items)):
        gw = gateways[n % GATEWAYS]
        seq = n // GATEWAYS + 1
        if n == 0:
            message: Event | Reading = Event(gw.name, seq, T0 + 1_000, (LOT,), "commissioning")
        else:
            sensors = (Sensor("Temperature", 4 + (n % 30) / 10, "CEL"),)
            message = Reading(gw.name, seq, T0 + 1_000 + n * 60_000, (LOT,), sensors)
        raw = sign_message(message, gw.signing_key)
        pseq = n + 1
        entry = DeviceMessageEntry(
            hashlib.sha256(raw).digest(),
            gw.name,
            seq,
            message.time + 100,
            (ChainPosition(LOT, pseq, prev),),
        ).to_bytes()
        prev = leaf_hash(entry)
        items.append((entry, raw))
        messages.append(raw)
    head = len(items) - 1
    # The product index over the log, its root logged as the checkpointer does (docs/log.md).
    values = fold((i, parse_any_entry(entry), entry) for i, (entry, _) in enumerate(items))
    index_map = smt.MemoryTree()
    index_map.apply({key: smt.value_hash(value.to_bytes()) for key, value in values.items()})
    items.append((IndexRoot(len(items), index_map.root, T0).to_bytes(), None))
    keys = sorted([product_key(LOT.path), *(device_key(gw.name) for gw in gateways)])
    proofs = tuple(IndexProof(k, values[k].to_bytes(), index_map.prove(k)) for k in keys)
    size = len(items)
    tree = _Tree([leaf_hash(entry) for entry, _ in items])
    text = CheckpointBody(ORIGIN, size, tree.root(size)).format()
    note = sign_note(text, [log]) + cosign(text, witness, 1_795_000_000) + "\n"
    bundle = Bundle(
        LOT,
        note,
        tuple(
            BundleEntry(
                i,
                entry,
                raw,
                tuple(inclusion_proof(i, size, tree.subtree)) if raw is None or i == head else None,
            )
            for i, (entry, raw) in enumerate(items)
        ),
        index=IndexEvidence(size - 1, proofs),
    )
    policy = Policy.parse(f"log {log.verifier}\nwitness w {cosigner_verifier(witness)}\nquorum 1")
    return World(bundle.to_json(), policy, messages, {g.name: g.public_key for g in gateways})


@dataclass(frozen=True, slots=True)
class Result:
    """Median seconds over the runs."""

    entries: int
    bundle_bytes: int
    verify_s: float
    baseline_s: float

    @property
    def ratio(self) -> float:
        """Full verification time over the bare signature checks."""
        return self.verify_s / self.baseline_s


def measure(world: World, runs: int) -> Result:
    """Time parse+verify of the bundle and, as baseline, the bare Ed25519 checks."""
    verify_times, baseline_times = [], []
    verify_keys = {name: nacl.signing.VerifyKey(key) for name, key in world.keys.items()}
    gateways = list(world.keys)
    signed = [(parse_cose(raw).to_be_signed(), parse_cose(raw).signature) for raw in world.messages]
    for _ in range(runs):
        # Cold, as `agritrace verify` runs in a fresh process: a warm run would reuse the
        # signature checks of the run before (tracecore.bundle memoizes pure functions).
        forget_memos()
        start = time.perf_counter()
        report = verify_bundle(parse_bundle(world.bundle_json), world.policy)
        verify_times.append(time.perf_counter() - start)
        if not report.ok:
            raise SystemExit(report.render())
        start = time.perf_counter()
        for n, (message, signature) in enumerate(signed):
            verify_keys[gateways[n % GATEWAYS]].verify(message, signature)
        baseline_times.append(time.perf_counter() - start)
    return Result(
        entries=len(world.messages) + GATEWAYS,
        bundle_bytes=len(world.bundle_json),
        verify_s=statistics.median(verify_times),
        baseline_s=statistics.median(baseline_times),
    )


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(prog="python -m bench.verify", description=__doc__)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    world = build(args.entries)
    result = measure(world, args.runs)
    out.write(
        "| entries | bundle | verify (parse + all checks) | baseline: Ed25519 only | ratio |\n"
    )
    out.write("|---:|---:|---:|---:|---:|\n")
    out.write(
        f"| {result.entries:,} | {result.bundle_bytes / 1e6:.1f} MB | {result.verify_s:.2f} s "
        f"| {result.baseline_s:.2f} s | {result.ratio:.1f}x |\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
