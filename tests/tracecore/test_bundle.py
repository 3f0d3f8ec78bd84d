"""Tests of tracecore.bundle: the offline verifier on good and tampered bundles."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from dataclasses import dataclass, field

import pytest

from tracecore import smt
from tracecore.bundle import (
    Bundle,
    BundleEntry,
    Consistency,
    IndexEvidence,
    IndexProof,
    Policy,
    parse_bundle,
    verify_bundle,
)
from tracecore.cose import sign_message
from tracecore.errors import BundleError
from tracecore.identifiers import ProductKey
from tracecore.indexstate import fold
from tracecore.keys import SignerKey
from tracecore.logentry import (
    GENESIS_PREV,
    ChainPosition,
    DeviceMessageEntry,
    DeviceRegistered,
    IndexRoot,
    KeyRevoked,
    KeyRotated,
    RegistryEntry,
    parse_any_entry,
    parse_entry,
)
from tracecore.merkle import consistency_proof, inclusion_proof, leaf_hash, root_of
from tracecore.message import Event, Reading, Sensor
from tracecore.note import CheckpointBody, cosign, cosigner_verifier, sign_note

ORIGIN = "trace.gansu.example/log"
T0 = 1_795_000_000_000
LOT = ProductKey.parse("01/06901234567892/10/L261127")
CARTON = ProductKey.parse("01/06901234567892/10/L261127/21/C0001")


def _key(label: str) -> SignerKey:
    return SignerKey(label, hashlib.sha256(label.encode()).digest())


@dataclass
class World:
    """A small log: a farm's devices, an egg lot, a carton packed from it, a signed checkpoint."""

    log: SignerKey = field(default_factory=lambda: _key(ORIGIN))
    witnesses: tuple[SignerKey, ...] = (_key("witness-a"), _key("witness-b"))
    entries: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    heads: dict[ProductKey, tuple[int, int]] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)

    def registry(self, entry: RegistryEntry) -> int:
        """Append a registry fact; return its index."""
        self.entries.append((entry.to_bytes(), None))
        return len(self.entries) - 1

    def message(self, key: SignerKey, message: Reading | Event) -> int:
        """Append a signed device message with its chain positions; return its index."""
        raw = sign_message(message, key.signing_key)
        chains = []
        for product in message.products:
            pseq, head = self.heads.get(product, (0, -1))
            prev = GENESIS_PREV if head < 0 else leaf_hash(self.entries[head][0])
            chains.append(ChainPosition(product, pseq + 1, prev))
        entry = DeviceMessageEntry(
            msg=hashlib.sha256(raw).digest(),
            device=message.device,
            seq=message.seq,
            received=message.time + 500,
            chains=tuple(chains),
        )
        self.entries.append((entry.to_bytes(), raw))
        index = len(self.entries) - 1
        for position in chains:
            self.heads[position.product] = (position.pseq, index)
        return index

    def next_seq(self, device: str) -> int:
        """Return the device's next sequence number."""
        self.seqs[device] = self.seqs.get(device, 0) + 1
        return self.seqs[device]

    @property
    def leaves(self) -> list[bytes]:
        """Leaf hashes of the log."""
        return [leaf_hash(entry) for entry, _ in self.entries]

    def _subtree(self, level: int, idx: int) -> bytes:
        return root_of(self.leaves[idx << level : (idx + 1) << level])

    def checkpoint(self, size: int | None = None, cosigners: int = 2) -> str:
        """Return the signed, cosigned checkpoint note at ``size`` (default: all entries)."""
        size = len(self.entries) if size is None else size
        text = CheckpointBody(ORIGIN, size, root_of(self.leaves[:size])).format()
        note = sign_note(text, [self.log])
        lines = [cosign(text, w, 1_795_000_000 + n) for n, w in enumerate(self.witnesses)]
        return note + "".join(line + "\n" for line in lines[:cosigners])

    def index(self) -> IndexEvidence:
        """Log the product index's root over every entry (once), as the checkpointer does."""
        last = self.entries[-1][0]
        if not isinstance(parse_any_entry(last), IndexRoot):
            self.entries.append((self._root_entry(len(self.entries)).to_bytes(), None))
        root_index = len(self.entries) - 1
        values = fold(
            (i, parse_any_entry(e), e) for i, (e, _) in enumerate(self.entries[:root_index])
        )
        tree = smt.MemoryTree()
        tree.apply({k: smt.value_hash(v.to_bytes()) for k, v in values.items()})
        proofs = tuple(
            IndexProof(key, values[key].to_bytes(), tree.prove(key)) for key in sorted(values)
        )
        return IndexEvidence(root_index, proofs)

    def _root_entry(self, size: int) -> IndexRoot:
        values = fold((i, parse_any_entry(e), e) for i, (e, _) in enumerate(self.entries[:size]))
        hashes = {k: smt.value_hash(v.to_bytes()) for k, v in values.items()}
        return IndexRoot(size=size, root=smt.root_of(hashes), time=T0)

    def bundle(self, product: ProductKey, previous: int | None = None) -> Bundle:
        """Return the bundle of ``product`` with every entry, proofs on heads and registry,
        and the product index's proofs of every key."""
        evidence = self.index()
        size = len(self.entries)
        proven = {index for _, index in self.heads.values()}
        items = []
        for index, (entry, raw) in enumerate(self.entries):
            needs_proof = index in proven or raw is None
            proof = tuple(inclusion_proof(index, size, self._subtree)) if needs_proof else None
            items.append(BundleEntry(index, entry, raw, proof))
        consistency = None
        if previous is not None:
            proof = tuple(consistency_proof(previous, size, self._subtree))
            consistency = Consistency(previous, proof)
        return Bundle(product, self.checkpoint(), tuple(items), consistency, index=evidence)

    def policy(self, quorum: int = 2) -> Policy:
        """The trust policy of this world."""
        lines = [f"log {self.log.verifier}"]
        lines += [f"witness w{n} {cosigner_verifier(w)}" for n, w in enumerate(self.witnesses)]
        return Policy.parse("\n".join([*lines, f"quorum {quorum}"]))


COLLECT = _key("hens01-collect")
CLIMATE = _key("hens01-climate")
CLIMATE_NEW = _key("hens01-climate-2")
PACKER = _key("pack-line-1")


@pytest.fixture
def world() -> World:
    """A farm lot, a key rotation, readings, and a carton packed from the lot."""
    w = World()
    w.registry(DeviceRegistered("hens01-collect", "gansu-hens-01", COLLECT.public_key, T0, T0))
    w.registry(DeviceRegistered("hens01-climate", "gansu-hens-01", CLIMATE.public_key, T0, T0))
    w.registry(DeviceRegistered("pack-line-1", "gansu-hens-01", PACKER.public_key, T0, T0))
    w.message(
        COLLECT,
        Event("hens01-collect", w.next_seq("hens01-collect"), T0 + 1_000, (LOT,), "commissioning"),
    )
    for n in range(3):
        reading = Reading(
            "hens01-climate",
            w.next_seq("hens01-climate"),
            T0 + 60_000 * (n + 1),
            (LOT,),
            (Sensor("Temperature", 5.5 + n, "CEL"),),
        )
        w.message(CLIMATE if n < 2 else CLIMATE_NEW, reading)
        if n == 1:  # the gateway's key is rotated between the second and third reading
            w.registry(KeyRotated("hens01-climate", CLIMATE_NEW.public_key, T0 + 150_000, T0))
    w.message(
        PACKER,
        Event(
            "pack-line-1",
            w.next_seq("pack-line-1"),
            T0 + 400_000,
            (CARTON,),
            "commissioning",
            parents=(LOT,),
        ),
    )
    return w


def _failed(bundle: Bundle, policy: Policy, previous: str | None = None) -> set[str]:
    return {check.name for check in verify_bundle(bundle, policy, previous).failed}


def test_a_genuine_bundle_verifies(world: World) -> None:
    """Every check passes on an untouched bundle, including lineage and the rotated key."""
    report = verify_bundle(world.bundle(CARTON), world.policy())
    assert report.ok, report.render()
    names = [check.name for check in report.checks]
    assert names == [
        "checkpoint",
        "witnesses",
        "entries",
        "messages",
        "keys",
        "chains",
        "lineage",
        "inclusion",
        "index",
        "heads",
        "recalls",
        "registry",
    ]
    assert "VERIFIED" in report.render()


def test_json_round_trip(world: World) -> None:
    """A bundle written as JSON parses back to the same bundle."""
    bundle = world.bundle(CARTON, previous=3)
    assert parse_bundle(bundle.to_json()) == bundle


def _replace_entry(bundle: Bundle, index: int, **changes: object) -> Bundle:
    entries = tuple(
        dataclasses.replace(e, **changes) if e.index == index else e  # type: ignore[arg-type]
        for e in bundle.entries
    )
    return dataclasses.replace(bundle, entries=entries)


def _flip(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x01
    return bytes(changed)


def test_a_changed_message_byte_is_caught(world: World) -> None:
    """One bit of a device message changed: the message no longer hashes to its entry."""
    bundle = world.bundle(CARTON)
    target = bundle.entries[4]
    assert target.message is not None
    tampered = _replace_entry(bundle, 4, message=_flip(target.message, 40))
    assert "messages" in _failed(tampered, world.policy())


def test_a_changed_entry_breaks_the_chain(world: World) -> None:
    """A middle entry rewritten (another receive time) no longer links to the next one."""
    bundle = world.bundle(CARTON)
    entry = dataclasses.replace(_entry_of(bundle, 4), received=T0)
    tampered = _replace_entry(bundle, 4, entry=entry.to_bytes())
    assert "chains" in _failed(tampered, world.policy())


def _entry_of(bundle: Bundle, index: int) -> DeviceMessageEntry:
    return parse_entry(next(e.entry for e in bundle.entries if e.index == index))


def test_a_changed_head_entry_fails_inclusion(world: World) -> None:
    """The carton's head entry rewritten: its inclusion proof no longer reaches the root."""
    bundle = world.bundle(CARTON)
    head = world.heads[CARTON][1]
    original = _entry_of(bundle, head)
    rewritten = dataclasses.replace(original, received=original.received + 1)
    tampered = _replace_entry(bundle, head, entry=rewritten.to_bytes())
    assert "inclusion" in _failed(tampered, world.policy())


def test_a_changed_proof_hash_fails_inclusion(world: World) -> None:
    """One hash of an inclusion proof changed."""
    bundle = world.bundle(CARTON)
    head = world.heads[CARTON][1]
    proof = next(e.proof for e in bundle.entries if e.index == head)
    assert proof
    tampered = _replace_entry(bundle, head, proof=(_flip(proof[0], 0), *proof[1:]))
    assert _failed(tampered, world.policy()) == {"inclusion"}


def test_a_changed_checkpoint_text_fails_its_signature(world: World) -> None:
    """The checkpoint's size edited: the log signature no longer verifies."""
    bundle = world.bundle(CARTON)
    size = str(len(world.entries))
    text = bundle.checkpoint.replace(f"\n{size}\n", f"\n{int(size) + 1}\n", 1)
    failed = _failed(dataclasses.replace(bundle, checkpoint=text), world.policy())
    assert "checkpoint" in failed


def test_a_broken_cosignature_misses_the_quorum(world: World) -> None:
    """One cosignature corrupted: two are required, one verifies."""
    bundle = world.bundle(CARTON)
    lines = bundle.checkpoint.splitlines(keepends=True)
    name, blob = lines[-1].rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    lines[-1] = f"{name} {base64.b64encode(bytes(raw)).decode()}\n"
    tampered = dataclasses.replace(bundle, checkpoint="".join(lines))
    assert _failed(tampered, world.policy()) == {"witnesses"}
    assert verify_bundle(tampered, world.policy(quorum=1)).ok


def test_missing_cosignatures_fail_the_quorum(world: World) -> None:
    """A checkpoint with only the log's signature fails a quorum of 1."""
    bundle = dataclasses.replace(world.bundle(CARTON), checkpoint=world.checkpoint(cosigners=0))
    assert _failed(bundle, world.policy(quorum=1)) == {"witnesses"}


def test_a_dropped_entry_breaks_the_chain(world: World) -> None:
    """A reading removed from the lot's history leaves a hole in the chain."""
    bundle = world.bundle(CARTON)
    entries = tuple(e for e in bundle.entries if e.index != 4)
    assert "chains" in _failed(dataclasses.replace(bundle, entries=entries), world.policy())


def test_reordered_entries_are_caught(world: World) -> None:
    """Two readings swapped in position (indexes exchanged) break chain and inclusion."""
    bundle = world.bundle(CARTON)
    swapped = tuple(
        dataclasses.replace(e, index={4: 5, 5: 4}.get(e.index, e.index)) for e in bundle.entries
    )
    failed = _failed(dataclasses.replace(bundle, entries=swapped), world.policy())
    assert failed & {"chains", "inclusion"}


def test_a_changed_key_record_is_caught(world: World) -> None:
    """A registry entry swapped for another key: signatures and the proof both fail."""
    bundle = world.bundle(CARTON)
    forged = DeviceRegistered("hens01-collect", "gansu-hens-01", _key("evil").public_key, T0, T0)
    failed = _failed(_replace_entry(bundle, 0, entry=forged.to_bytes()), world.policy())
    assert {"keys", "inclusion"} <= failed


def test_a_message_after_revocation_fails_keys() -> None:
    """A key revoked since before a message's time makes that message untrusted."""
    w = World()
    w.registry(DeviceRegistered("hens01-collect", "gansu-hens-01", COLLECT.public_key, T0, T0))
    w.registry(KeyRevoked("hens01-collect", COLLECT.verifier.kid, T0 + 500, "stolen", T0 + 9_000))
    w.message(COLLECT, Event("hens01-collect", 1, T0 + 1_000, (LOT,), "commissioning"))
    assert _failed(w.bundle(LOT), w.policy()) == {"keys"}


def test_a_missing_parent_chain_fails_lineage(world: World) -> None:
    """The carton's bundle without the lot's entries names a parent it does not prove."""
    bundle = world.bundle(CARTON)
    carton_head = world.heads[CARTON][1]
    entries = tuple(e for e in bundle.entries if e.message is None or e.index == carton_head)
    failed = _failed(dataclasses.replace(bundle, entries=entries), world.policy())
    # The lot's chain is gone, and with it the head the product index holds for the lot.
    assert failed == {"lineage", "heads"}


def test_wrong_log_key_fails_the_checkpoint(world: World) -> None:
    """A policy with another log key does not accept the operator's checkpoint."""
    policy = dataclasses.replace(world.policy(), log=_key(ORIGIN + "x").verifier)
    assert "checkpoint" in _failed(world.bundle(CARTON), policy)


def test_previous_checkpoint_consistent(world: World) -> None:
    """An older checkpoint the user kept is proven a prefix of the bundle's checkpoint."""
    old = world.checkpoint(size=3)
    report = verify_bundle(world.bundle(CARTON, previous=3), world.policy(), old)
    assert report.ok, report.render()


def test_previous_checkpoint_without_proof_says_how_to_get_one(world: World) -> None:
    """Without a consistency proof from the kept size the check fails and says ?previous=."""
    old = world.checkpoint(size=3)
    failed = verify_bundle(world.bundle(CARTON), world.policy(), old).failed
    assert [c.name for c in failed] == ["consistency"]
    assert "?previous=3" in failed[0].detail


def test_a_forked_log_is_detected(world: World) -> None:
    """A previous checkpoint of another history at a smaller size fails consistency."""
    fork = World()
    fork.registry(DeviceRegistered("hens01-collect", "gansu-hens-01", PACKER.public_key, T0, T0))
    fork.registry(DeviceRegistered("other-dev", "gansu-hens-01", COLLECT.public_key, T0, T0))
    fork.registry(DeviceRegistered("third-dev", "gansu-hens-01", CLIMATE.public_key, T0, T0))
    old = fork.checkpoint(size=3)
    failed = _failed(world.bundle(CARTON, previous=3), world.policy(), old)
    assert failed == {"consistency"}


def test_a_rollback_is_detected(world: World) -> None:
    """A previous checkpoint larger than the bundle's means the log shrank."""
    world_bigger = world.checkpoint()
    bundle = world.bundle(CARTON)
    world.registry(DeviceRegistered("late-dev", "gansu-hens-01", _key("late").public_key, T0, T0))
    bigger = world.checkpoint()
    assert world_bigger != bigger
    assert _failed(bundle, world.policy(), bigger) == {"consistency"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("quorum 1", "no log key"),
        ("log nope", "vkey"),
        ("log a+b+c\nlog a+b+c", "policy line"),
        ("frobnicate", "cannot read"),
    ],
)
def test_bad_policies_are_refused(text: str, message: str) -> None:
    """A policy file that cannot be read is a BundleError naming the line."""
    with pytest.raises(BundleError, match=message):
        Policy.parse(text)


def test_quorum_above_witness_count_is_refused(world: World) -> None:
    """A quorum that no set of the listed witnesses can meet is refused."""
    with pytest.raises(BundleError, match="quorum 3"):
        world.policy(quorum=3)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"format": "agritrace-bundle/2"}',
        '{"format": "agritrace-bundle/1", "product": "01/1/10/x"}',
    ],
)
def test_bad_bundles_are_refused(text: str) -> None:
    """Out-of-form bundle JSON is a BundleError."""
    with pytest.raises(BundleError):
        parse_bundle(text)
