"""Evidence bundles (``agritrace-bundle/1``) and their offline verification.

A bundle is everything needed to check one product's history without trusting the operator
(docs/bundle.md): the raw COSE messages and log entries of the product and its ancestors, the
registry entries of every device that signed them (their key history), an inclusion proof of
each product's chain head and of each registry entry, and one cosigned checkpoint. Optionally a
consistency proof from an older checkpoint the user kept.

:func:`parse_bundle` checks only the form; :func:`verify_bundle` recomputes everything it can
(hashes, chains, signatures, proofs) against a :class:`Policy` — the log key, the witness keys
and a quorum — and returns a :class:`Report` whose checks name what failed. Nothing in the bundle
is believed that can be recomputed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
import struct
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from tracecore.cose import SignedMessage, parse_message
from tracecore.errors import AgritraceError, BundleError
from tracecore.identifiers import ProductKey
from tracecore.indexstate import (
    DeviceState,
    IndexValue,
    ProductState,
    device_key,
    parse_value,
    product_key,
)
from tracecore.keys import VerifierKey, device_kid, key_window_refusal
from tracecore.logentry import (
    GENESIS_PREV,
    AnyEntry,
    DeviceMessageEntry,
    DeviceRegistered,
    IndexRoot,
    KeyRevoked,
    KeyRotated,
    Recall,
    parse_any_entry,
)
from tracecore.merkle import leaf_hash, verify_consistency, verify_inclusion
from tracecore.message import Event
from tracecore.note import CheckpointBody, parse_note, verify_cosignature, verify_note
from tracecore.smt import Leaf, MapProof, verify_proof

__all__ = [
    "BUNDLE_FORMAT",
    "Bundle",
    "BundleEntry",
    "Check",
    "Consistency",
    "IndexEvidence",
    "IndexProof",
    "Inspection",
    "Policy",
    "Report",
    "bundle_digest",
    "forget_memos",
    "inspect_bundle",
    "inspect_bundle_memo",
    "parse_bundle",
    "parse_message_cached",
    "verify_bundle",
    "verify_checkpoint",
]

BUNDLE_FORMAT: Final = "agritrace-bundle/1"
_VERIFY_THREADS: Final = max(1, min(4, os.cpu_count() or 1))
_VERIFY_CHUNK: Final = 256
#: Entries of the memo of each pure parse/verify step (about 1 KiB each; 16 products of a
#: thousand entries: more would make every full garbage collection of the API slower).
_MEMO_SIZE: Final = 16_384
MAX_BUNDLE_ENTRIES: Final = 1_000_000
#: The most index proofs one bundle carries (its lineage's products and their devices).
MAX_INDEX_PROOFS: Final = 100_000


@dataclass(frozen=True, slots=True)
class BundleEntry:
    """One log entry in a bundle: its index, entry bytes, device message, inclusion proof."""

    index: int
    entry: bytes
    message: bytes | None = None
    proof: tuple[bytes, ...] | None = None


@dataclass(frozen=True, slots=True)
class Consistency:
    """A consistency proof from an older tree size to the bundle's checkpoint."""

    old: int
    proof: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class IndexProof:
    """One key of the product index: its value (None: proven absent) and the map proof."""

    key: bytes
    value: bytes | None
    proof: MapProof


@dataclass(frozen=True, slots=True)
class IndexEvidence:
    """Proofs from the product index whose root the ``index_root`` entry at ``root`` holds."""

    root: int
    proofs: tuple[IndexProof, ...]


@dataclass(frozen=True, slots=True)
class Bundle:
    """A parsed evidence bundle (form checked, nothing verified)."""

    product: ProductKey
    checkpoint: str
    entries: tuple[BundleEntry, ...]
    consistency: Consistency | None = None
    #: The server's contract results for the product (deterministic CBOR, docs/contracts.md):
    #: claims, which ``agritrace verify`` recomputes and compares, never trusts.
    contracts: tuple[bytes, ...] = ()
    #: Proofs of the product's and its ancestors' chain heads and recalls, and of the signing
    #: devices' registry entries, from the product index (docs/bundle.md, "Completeness").
    index: IndexEvidence | None = None

    def to_json(self) -> str:
        """Return the bundle as JSON text (docs/bundle.md)."""
        doc: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "product": self.product.path,
            "checkpoint": self.checkpoint,
            "entries": [
                {
                    "index": e.index,
                    "entry": _b64(e.entry),
                    "message": None if e.message is None else _b64(e.message),
                    "proof": None if e.proof is None else [_b64(h) for h in e.proof],
                }
                for e in self.entries
            ],
        }
        if self.consistency is not None:
            doc["consistency"] = {
                "old": self.consistency.old,
                "proof": [_b64(h) for h in self.consistency.proof],
            }
        if self.contracts:
            doc["contracts"] = [_b64(result) for result in self.contracts]
        if self.index is not None:
            doc["index"] = {
                "root": self.index.root,
                "proofs": [_index_proof_json(item) for item in self.index.proofs],
            }
        return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def parse_bundle(text: str | bytes) -> Bundle:
    """Parse bundle JSON; raises :class:`BundleError` naming the first thing out of form."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"the bundle is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise BundleError(f'the bundle must be a JSON object with "format": "{BUNDLE_FORMAT}"')
    try:
        product = ProductKey.parse_canonical(_field(doc, "product", str))
        checkpoint = _field(doc, "checkpoint", str)
        raw_entries = _field(doc, "entries", list)
        if len(raw_entries) > MAX_BUNDLE_ENTRIES:
            raise BundleError(f"more than {MAX_BUNDLE_ENTRIES} entries")
        entries = tuple(_parse_entry(item, n) for n, item in enumerate(raw_entries))
        consistency = None
        if doc.get("consistency") is not None:
            raw = _field(doc, "consistency", dict)
            consistency = Consistency(
                old=_uint(raw.get("old"), "consistency.old"),
                proof=_hashes(raw.get("proof"), "consistency.proof"),
            )
        claimed = doc.get("contracts") or []
        if not isinstance(claimed, list):
            raise BundleError("'contracts' must be a list of base64 results")
        contracts = tuple(_unb64(item, f"contracts[{n}]") for n, item in enumerate(claimed))
        index = None if doc.get("index") is None else _parse_index(_field(doc, "index", dict))
    except AgritraceError as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError(str(exc)) from exc
    return Bundle(product, checkpoint, entries, consistency, contracts, index)


def _index_proof_json(item: IndexProof) -> dict[str, object]:
    other = item.proof.other
    return {
        "key": _b64(item.key),
        "value": None if item.value is None else _b64(item.value),
        "siblings": [_b64(h) for h in item.proof.siblings],
        "other": (
            None
            if other is None
            else {"key": _b64(other.key), "value_hash": _b64(other.value_hash)}
        ),
    }


def _parse_index(doc: Mapping[str, object]) -> IndexEvidence:
    raw = doc.get("proofs")
    if not isinstance(raw, list) or len(raw) > MAX_INDEX_PROOFS:
        raise BundleError(f"index.proofs must be a list of at most {MAX_INDEX_PROOFS} proofs")
    proofs = []
    for n, item in enumerate(raw):
        what = f"index.proofs[{n}]"
        if not isinstance(item, dict):
            raise BundleError(f"{what} is not an object")
        key = _unb64(item.get("key"), f"{what}.key")
        if len(key) != 32:
            raise BundleError(f"{what}.key is 32 bytes")
        value = item.get("value")
        other = item.get("other")
        leaf = None
        if other is not None:
            if not isinstance(other, dict):
                raise BundleError(f"{what}.other is an object or null")
            leaf = Leaf(
                _unb64(other.get("key"), f"{what}.other.key"),
                _unb64(other.get("value_hash"), f"{what}.other.value_hash"),
            )
        proof = MapProof(_hashes(item.get("siblings"), f"{what}.siblings"), leaf)
        proofs.append(
            IndexProof(key, None if value is None else _unb64(value, f"{what}.value"), proof)
        )
    if len({p.key for p in proofs}) != len(proofs):
        raise BundleError("index.proofs has two proofs of one key")
    return IndexEvidence(_uint(doc.get("root"), "index.root"), tuple(proofs))


def _parse_entry(item: object, n: int) -> BundleEntry:
    if not isinstance(item, dict):
        raise BundleError(f"entries[{n}] is not an object")
    message = item.get("message")
    proof = item.get("proof")
    return BundleEntry(
        index=_uint(item.get("index"), f"entries[{n}].index"),
        entry=_unb64(item.get("entry"), f"entries[{n}].entry"),
        message=None if message is None else _unb64(message, f"entries[{n}].message"),
        proof=None if proof is None else _hashes(proof, f"entries[{n}].proof"),
    )


@dataclass(frozen=True, slots=True)
class Policy:
    """Whom to trust: the log's vkey, witness cosignature vkeys, how many witnesses must sign.

    The text form (docs/bundle.md), in the spirit of the transparency-dev witness policy::

        log agritrace.localhost/log+1a2b3c4d+AX...
        witness w1 gansu-witness+5e6f7a8b+BA...
        witness w2 ...
        quorum 1
    """

    log: VerifierKey
    witnesses: Mapping[str, VerifierKey] = field(default_factory=dict)
    quorum: int = 0

    @classmethod
    def parse(cls, text: str) -> Policy:
        """Parse the policy text; raises :class:`BundleError` with the line number."""
        log: VerifierKey | None = None
        witnesses: dict[str, VerifierKey] = {}
        quorum: int | None = None
        for number, raw_line in enumerate(text.splitlines(), 1):
            line = raw_line.split("#", 1)[0].strip()
            if not line:
                continue
            word, *args = line.split()
            try:
                if word == "log" and len(args) == 1 and log is None:
                    log = VerifierKey.parse(args[0])
                elif word == "witness" and len(args) == 2 and args[0] not in witnesses:
                    witnesses[args[0]] = VerifierKey.parse(args[1])
                elif word == "quorum" and len(args) == 1 and args[0].isdigit() and quorum is None:
                    quorum = int(args[0])
                else:
                    raise BundleError(f"cannot read {raw_line.strip()!r}")
            except AgritraceError as exc:
                raise BundleError(f"policy line {number}: {exc}") from exc
        if log is None:
            raise BundleError("the policy names no log key ('log <vkey>')")
        quorum = len(witnesses) if quorum is None else quorum
        if quorum > len(witnesses):
            raise BundleError(f"quorum {quorum} is more than the {len(witnesses)} witnesses")
        return cls(log, witnesses, quorum)


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of one named check."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Report:
    """All checks of one verification; ``ok`` only when every check passed."""

    product: str
    size: int
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(check.ok for check in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        """The checks that failed."""
        return tuple(check for check in self.checks if not check.ok)

    def render(self) -> str:
        """Return the report as text, one line a check."""
        lines = [f"product {self.product} against the log at size {self.size}"]
        lines += [f"{'ok  ' if c.ok else 'FAIL'} {c.name:<12} {c.detail}" for c in self.checks]
        lines.append(
            "VERIFIED" if self.ok else f"NOT VERIFIED: {', '.join(c.name for c in self.failed)}"
        )
        return "\n".join(lines) + "\n"


class _Checks:
    """Collects checks; a check function raising an AgritraceError is a failure."""

    def __init__(self) -> None:
        self.items: list[Check] = []

    def run(self, name: str, fn: Callable[[], str]) -> bool:
        try:
            detail = fn()
        except AgritraceError as exc:
            self.items.append(Check(name, ok=False, detail=str(exc)))
            return False
        self.items.append(Check(name, ok=True, detail=detail))
        return True


@dataclass
class _State:
    """What the checks learn from each other."""

    body: CheckpointBody | None = None
    entries: dict[int, AnyEntry] = field(default_factory=dict)
    leaves: dict[int, bytes] = field(default_factory=dict)
    messages: dict[int, SignedMessage] = field(default_factory=dict)
    chains: dict[str, list[tuple[int, int, bytes]]] | None = None
    lineage: frozenset[str] | None = None
    #: The verified index root, and each proven key's value (None: proven absent).
    index_root: IndexRoot | None = None
    index_values: dict[bytes, IndexValue | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Inspection:
    """A verification report and the content it verified, for callers that show the content.

    ``entries`` and ``messages`` (by log index) hold what parsed; they are trustworthy only when
    ``report.ok``. ``checkpoint`` is the checkpoint body when its signature verified.
    """

    report: Report
    checkpoint: CheckpointBody | None
    entries: Mapping[int, AnyEntry]
    messages: Mapping[int, SignedMessage]


def verify_bundle(bundle: Bundle, policy: Policy, previous: str | None = None) -> Report:
    """Verify a bundle offline against ``policy``; return the report of every check.

    The same as ``inspect_bundle(bundle, policy, previous).report``.
    """
    return inspect_bundle(bundle, policy, previous).report


def bundle_digest(bundle: Bundle, policy: Policy, previous: str | None = None) -> bytes:
    """SHA-256 over everything :func:`inspect_bundle` reads: the bundle, the policy, previous.

    Two calls with the same digest get the same inspection (it is a pure function of these
    inputs), which is what lets :func:`inspect_bundle_memo` answer repeated scans quickly.
    """
    # An injective encoding: every field's length first (fixed width), then the fields.
    fields: list[bytes] = [str(policy.log).encode()]
    for label, key in sorted(policy.witnesses.items()):
        fields += [label.encode(), str(key).encode()]
    fields += [
        str(policy.quorum).encode(),
        b"" if previous is None else b"p" + previous.encode(),
        bundle.product.path.encode(),
        bundle.checkpoint.encode(),
    ]
    for item in bundle.entries:
        fields += [
            item.index.to_bytes(8, "big"),
            item.entry,
            b"-" if item.message is None else b"m" + item.message,
            b"-" if item.proof is None else b"p" + b"".join(item.proof),
        ]
    if bundle.consistency is not None:
        fields += [str(bundle.consistency.old).encode(), b"".join(bundle.consistency.proof)]
    if bundle.index is not None:
        fields.append(b"i" + bundle.index.root.to_bytes(8, "big"))
        for proof in bundle.index.proofs:
            other = proof.proof.other
            fields += [
                proof.key,
                b"-" if proof.value is None else b"v" + proof.value,
                b"".join(proof.proof.siblings),
                b"-" if other is None else b"o" + other.key + other.value_hash,
            ]
    digest = hashlib.sha256(struct.pack(f">Q{len(fields)}Q", len(fields), *map(len, fields)))
    digest.update(b"".join(fields))
    return digest.digest()


_INSPECTIONS: OrderedDict[bytes, Inspection] = OrderedDict()
_INSPECTIONS_LOCK = threading.Lock()
_INSPECTIONS_SIZE: Final = 256
# The digest of a bundle object already seen (the storage layer hands back the same object for
# the same bytes); each entry holds the bundle and the policy, so their ids stay theirs.
_DIGESTS: dict[int, tuple[Bundle, Policy, bytes]] = {}


def inspect_bundle_memo(bundle: Bundle, policy: Policy, previous: str | None = None) -> Inspection:
    """:func:`inspect_bundle`, memoized on :func:`bundle_digest` (the last 256 bundles).

    Sound for the same reason as the byte-level memos below: the key covers every input, so a
    changed byte anywhere in the bundle is a different key and a fresh inspection.
    """
    with _INSPECTIONS_LOCK:
        known = _DIGESTS.get(id(bundle))
    if known is not None and known[0] is bundle and known[1] is policy and previous is None:
        key = known[2]
    else:
        key = bundle_digest(bundle, policy, previous)
        if previous is None:
            with _INSPECTIONS_LOCK:
                _DIGESTS[id(bundle)] = (bundle, policy, key)
                while len(_DIGESTS) > _INSPECTIONS_SIZE:
                    _DIGESTS.pop(next(iter(_DIGESTS)))
    with _INSPECTIONS_LOCK:
        found = _INSPECTIONS.get(key)
        if found is not None:
            _INSPECTIONS.move_to_end(key)
            return found
    inspection = inspect_bundle(bundle, policy, previous)
    with _INSPECTIONS_LOCK:
        _INSPECTIONS[key] = inspection
        while len(_INSPECTIONS) > _INSPECTIONS_SIZE:
            _INSPECTIONS.popitem(last=False)
    return inspection


def inspect_bundle(bundle: Bundle, policy: Policy, previous: str | None = None) -> Inspection:
    """Verify a bundle against ``policy``; return the report and the content it verified.

    Checks, in order (each named in the report): ``checkpoint`` (the log's signature on the
    checkpoint), ``witnesses`` (at least ``policy.quorum`` distinct trusted cosignatures),
    ``consistency`` (only with ``previous``: the older checkpoint the user kept is a prefix of
    this one — fork detection), ``entries`` (every entry parses and lies inside the tree),
    ``messages`` (each device message hashes to its entry and agrees with it), ``keys`` (each
    message's signature verifies under the device key valid at the message's time, as the
    registry entries in the bundle say), ``chains`` (every product's chain runs 1..n, each entry
    pointing at the leaf hash of the previous one), ``lineage`` (every parent named by a message
    has its chain in the bundle), ``inclusion`` (the proofs put each chain head and each registry
    entry in the checkpoint's tree), ``index`` (the product index's proofs lead to the root of an
    ``index_root`` entry in the bundle), ``heads`` (each chain in the bundle reaches the head the
    index holds: no newer entry was left out), ``recalls`` (every recall of the product or an
    ancestor that the index holds is in the bundle; none, proven absent up to the index's log
    size), ``registry`` (every registry entry of each signing device that the index holds is in
    the bundle: no revocation left out). A check that cannot run because an earlier one failed
    is reported as failed with the reason.
    """
    checks = _Checks()
    state = _State()
    checks.run("checkpoint", lambda: _check_checkpoint(bundle, policy, state))
    checks.run("witnesses", lambda: _check_witnesses(bundle, policy, state))
    if previous is not None:
        checks.run("consistency", lambda: _check_consistency(bundle, policy, state, previous))
    if checks.run("entries", lambda: _check_entries(bundle, state)):
        checks.run("messages", lambda: _check_messages(bundle, state))
        checks.run("keys", lambda: _check_keys(state))
        checks.run("chains", lambda: _check_chains(bundle, state))
        checks.run("lineage", lambda: _check_lineage(bundle, state))
        checks.run("inclusion", lambda: _check_inclusion(bundle, state))
        checks.run("index", lambda: _check_index(bundle, state))
        checks.run("heads", lambda: _check_heads(bundle, state))
        checks.run("recalls", lambda: _check_recalls(bundle, state))
        checks.run("registry", lambda: _check_registry(state))
    size = state.body.size if state.body is not None else 0
    report = Report(bundle.product.path, size, tuple(checks.items))
    return Inspection(report, state.body, state.entries, state.messages)


def verify_checkpoint(text: str, policy: Policy) -> tuple[CheckpointBody, tuple[str, ...]]:
    """Verify a served checkpoint against ``policy``: the log's signature, the origin, and at
    least ``policy.quorum`` trusted witness cosignatures.

    Returns the checkpoint body and the labels of the witnesses that cosigned it; raises an
    :class:`AgritraceError` (:class:`BundleError` for the origin and the quorum) naming what
    fails. For monitors and other clients that read a checkpoint outside a bundle.
    """
    body = _verified_body(text, policy)
    return body, _cosigners(text, policy)


def _verified_body(text: str, policy: Policy) -> CheckpointBody:
    note = parse_note(text)
    verify_note(note, [policy.log])
    body = CheckpointBody.parse(note.text)
    if body.origin != policy.log.name:
        raise BundleError(f"checkpoint origin {body.origin!r} is not the log {policy.log.name!r}")
    return body


def _cosigners(text: str, policy: Policy) -> tuple[str, ...]:
    note = parse_note(text)
    signed: set[str] = set()
    for label, key in policy.witnesses.items():
        for signature in note.signatures:
            if signature.name == key.name:
                try:
                    verify_cosignature(note.text, signature.line, key)
                except AgritraceError:
                    continue
                signed.add(label)
    if len(signed) < policy.quorum:
        raise BundleError(
            f"{len(signed)} of the required {policy.quorum} witness cosignatures verify"
            + (f" ({', '.join(sorted(signed))})" if signed else "")
        )
    return tuple(sorted(signed))


def _check_checkpoint(bundle: Bundle, policy: Policy, state: _State) -> str:
    state.body = _verified_body(bundle.checkpoint, policy)
    return f"signed by {policy.log.name}, size {state.body.size}"


def _check_witnesses(bundle: Bundle, policy: Policy, state: _State) -> str:
    if state.body is None:
        raise BundleError("no verified checkpoint to count cosignatures on")
    signed = _cosigners(bundle.checkpoint, policy)
    return f"{len(signed)} trusted cosignature(s), quorum {policy.quorum}" + (
        f": {', '.join(signed)}" if signed else ""
    )


def _check_consistency(bundle: Bundle, policy: Policy, state: _State, previous: str) -> str:
    if state.body is None:
        raise BundleError("no verified checkpoint to compare the previous one with")
    old_note = parse_note(previous)
    verify_note(old_note, [policy.log])
    old = CheckpointBody.parse(old_note.text)
    new = state.body
    if old.origin != new.origin:
        raise BundleError(f"the previous checkpoint is of another log ({old.origin!r})")
    if old.size > new.size:
        raise BundleError(f"the log shrank from {old.size} to {new.size}: rollback")
    if old.size in (new.size, 0):
        if old.size and old.root_hash != new.root_hash:
            raise BundleError(f"two different roots at size {old.size}: the log forked")
        return f"same tree as the previous checkpoint (size {old.size})"
    if bundle.consistency is None or bundle.consistency.old != old.size:
        raise BundleError(
            f"the bundle has no consistency proof from size {old.size}; "
            f"download it with ?previous={old.size}"
        )
    verify_consistency(old.size, new.size, old.root_hash, new.root_hash, bundle.consistency.proof)
    return f"the log at {new.size} extends the previous checkpoint at {old.size}"


def _check_entries(bundle: Bundle, state: _State) -> str:
    if state.body is None:
        raise BundleError("no verified checkpoint: entries cannot be placed in a tree")
    seen: set[int] = set()
    for item in bundle.entries:
        if item.index in seen:
            raise BundleError(f"entry {item.index} appears twice")
        if item.index >= state.body.size:
            raise BundleError(f"entry {item.index} is outside the tree of size {state.body.size}")
        seen.add(item.index)
        state.entries[item.index] = _parse_entry_bytes(item.entry)
        state.leaves[item.index] = leaf_hash(item.entry)
    if not bundle.entries:
        raise BundleError("the bundle has no entries")
    return f"{len(bundle.entries)} entries parse"


def _check_messages(bundle: Bundle, state: _State) -> str:
    count = 0
    for item in bundle.entries:
        entry = state.entries[item.index]
        if not isinstance(entry, DeviceMessageEntry):
            if item.message is not None:
                raise BundleError(f"registry entry {item.index} carries a device message")
            continue
        if item.message is None:
            raise BundleError(f"entry {item.index} has no device message")
        if hashlib.sha256(item.message).digest() != entry.msg:
            raise BundleError(f"the message of entry {item.index} does not hash to its entry")
        signed = parse_message_cached(item.message)
        message = signed.message
        products = tuple(c.product for c in entry.chains)
        if (message.device, message.seq, message.products) != (entry.device, entry.seq, products):
            raise BundleError(f"the message of entry {item.index} disagrees with its entry")
        state.messages[item.index] = signed
        count += 1
    return f"{count} device messages match their entries"


@dataclass
class _KeySpan:
    key: bytes
    valid_from: int
    valid_until: int | None = None
    revoked_since: int | None = None


def _key_history(state: _State) -> dict[str, list[_KeySpan]]:
    history: dict[str, list[_KeySpan]] = defaultdict(list)
    for index in sorted(state.entries):
        entry = state.entries[index]
        if isinstance(entry, DeviceRegistered):
            if history[entry.device]:
                raise BundleError(f"device {entry.device} is registered twice (entry {index})")
            history[entry.device].append(_KeySpan(entry.key, entry.valid_from))
        elif isinstance(entry, KeyRotated):
            spans = history.get(entry.device)
            if not spans:
                raise BundleError(f"key rotation of unregistered device {entry.device}")
            spans[-1].valid_until = entry.valid_from
            spans.append(_KeySpan(entry.key, entry.valid_from))
        elif isinstance(entry, KeyRevoked):
            for span in history.get(entry.device, []):
                if device_kid(span.key) == entry.kid:
                    span.revoked_since = min(entry.since, span.revoked_since or entry.since)
    return history


def _check_keys(state: _State) -> str:
    history = _key_history(state)
    kids = {device: [(device_kid(s.key), s) for s in spans] for device, spans in history.items()}
    work: list[tuple[int, SignedMessage, bytes]] = []
    for index, signed in sorted(state.messages.items()):
        device, time = signed.message.device, signed.message.time
        spans = [s for kid, s in kids.get(device, []) if kid == signed.kid]
        if not spans:
            raise BundleError(f"entry {index}: no registered key {signed.kid.hex()} of {device}")
        # The same window as ingest's (docs/keys.md): a bundle of accepted messages verifies.
        valid = [
            s
            for s in spans
            if key_window_refusal(s.valid_from, s.valid_until, s.revoked_since, time) is None
        ]
        if not valid:
            raise BundleError(f"entry {index}: key {signed.kid.hex()} was not valid at {time}")
        work.append((index, signed, valid[0].key))
    # PyNaCl releases the GIL while verifying: spread the signatures over the cores.
    chunks = [work[i : i + _VERIFY_CHUNK] for i in range(0, len(work), _VERIFY_CHUNK)]
    with ThreadPoolExecutor(max_workers=_VERIFY_THREADS, thread_name_prefix="verify") as pool:
        for failure in pool.map(_verify_chunk, chunks):
            if failure is not None:
                raise failure
    return f"{len(state.messages)} signatures verify under keys valid at their time"


def _verify_chunk(chunk: list[tuple[int, SignedMessage, bytes]]) -> AgritraceError | None:
    for index, signed, key in chunk:
        failure = _signature_failure(signed.raw, key)
        if failure is not None:
            return BundleError(f"entry {index}: {failure}")
    return None


# Memoized pure functions of bytes. The trace API verifies a product's bundle at every scan;
# these memos make a repeated scan cost hashing and lookups instead of parsing and Ed25519.
# They are sound because each result depends on nothing but the argument bytes (compared in
# full by the dict), never on where the bytes came from: tampered bytes are other bytes.
def forget_memos() -> None:
    """Empty every memo of this module, as in a fresh process.

    Verification results never depend on the memos (see the note above), only its time does:
    benchmarks call this to time a cold ``agritrace verify``, which is what a user's run is.
    """
    _parse_entry_bytes.cache_clear()
    parse_message_cached.cache_clear()
    _signature_failure.cache_clear()
    with _INSPECTIONS_LOCK:
        _INSPECTIONS.clear()
        _DIGESTS.clear()


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _parse_entry_bytes(entry: bytes) -> AnyEntry:
    return parse_any_entry(entry)


@functools.lru_cache(maxsize=_MEMO_SIZE)
def parse_message_cached(raw: bytes) -> SignedMessage:
    """:func:`tracecore.cose.parse_message`, memoized on the bytes (see the note above)."""
    return parse_message(raw)


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _signature_failure(raw: bytes, key: bytes) -> str | None:
    """None if the COSE message ``raw`` verifies under ``key``, else the reason it does not."""
    try:
        parse_message_cached(raw).verify(key)
    except AgritraceError as exc:
        return str(exc)
    return None


def _chains(state: _State) -> dict[str, list[tuple[int, int, bytes]]]:
    if state.chains is not None:
        return state.chains
    chains: dict[str, list[tuple[int, int, bytes]]] = defaultdict(list)
    for index, entry in state.entries.items():
        if isinstance(entry, DeviceMessageEntry):
            for position in entry.chains:
                chains[position.product.path].append((position.pseq, index, position.prev))
    for links in chains.values():
        links.sort()
    state.chains = chains
    return chains


def _lineage(bundle: Bundle, state: _State) -> frozenset[str]:
    """The bundle's product and every ancestor its signed events name, transitively.

    A message may also name products outside the lineage (one shipping event for many cases):
    the bundle holds such a product's entries only where they touch the lineage, so its chain
    is partial by nature and is not what the bundle proves.
    """
    if state.lineage is not None:
        return state.lineage
    parents: dict[str, set[str]] = defaultdict(set)
    for signed in state.messages.values():
        if isinstance(signed.message, Event) and signed.message.parents:
            for product in signed.message.products:
                parents[product.path].update(p.path for p in signed.message.parents)
    lineage = {bundle.product.path}
    frontier = [bundle.product.path]
    while frontier:
        for parent in parents.get(frontier.pop(), ()):
            if parent not in lineage:
                lineage.add(parent)
                frontier.append(parent)
    state.lineage = frozenset(lineage)
    return state.lineage


def _check_chains(bundle: Bundle, state: _State) -> str:
    chains = _chains(state)
    if bundle.product.path not in chains:
        raise BundleError(f"the bundle has no entry of {bundle.product.path}")
    lineage = _lineage(bundle, state)
    for product in sorted(lineage & set(chains)):
        previous_leaf, previous_index = GENESIS_PREV, -1
        for expected_pseq, (pseq, index, prev) in enumerate(chains[product], 1):
            if pseq != expected_pseq:
                raise BundleError(f"{product}: position {expected_pseq} is missing")
            if prev != previous_leaf:
                raise BundleError(f"{product}: entry {index} does not link to position {pseq - 1}")
            # The log is append-only: a later chain position has a later log index. Only heads
            # carry proofs, so this is what pins the claimed index of the entries before them.
            if index <= previous_index:
                raise BundleError(f"{product}: position {pseq} is at index {index}, out of order")
            previous_leaf, previous_index = state.leaves[index], index
    return f"{len(lineage & set(chains))} product chains intact"


def _check_lineage(bundle: Bundle, state: _State) -> str:
    lineage = _lineage(bundle, state)
    missing = sorted(lineage - set(_chains(state)))
    if missing:
        raise BundleError(f"parent chains missing from the bundle: {', '.join(missing)}")
    return f"{len(lineage) - 1} ancestor(s), all with their chains"


def _check_inclusion(bundle: Bundle, state: _State) -> str:
    if state.body is None:
        raise BundleError("no verified checkpoint to prove inclusion against")
    chains = _chains(state)
    heads = {chains[product][-1][1] for product in _lineage(bundle, state) if product in chains}
    required = heads | {
        i for i, e in state.entries.items() if not isinstance(e, DeviceMessageEntry)
    }
    proofs = {item.index: item.proof for item in bundle.entries}
    for index in sorted(required):
        proof = proofs[index]
        if proof is None:
            raise BundleError(f"entry {index} must carry an inclusion proof")
        verify_inclusion(index, state.body.size, state.leaves[index], proof, state.body.root_hash)
    return f"{len(required)} inclusion proofs lead to the checkpoint root"


def _check_index(bundle: Bundle, state: _State) -> str:
    """Verify the index proofs against the root of the bundle's ``index_root`` entry."""
    if bundle.index is None:
        raise BundleError(
            "the bundle carries no proofs from the product index, so that nothing was left "
            "out of it (a newer entry, a recall, a revocation) is not proven"
        )
    root = state.entries.get(bundle.index.root)
    if not isinstance(root, IndexRoot):
        raise BundleError(f"entry {bundle.index.root} is not an index_root entry of the bundle")
    if root.size > bundle.index.root:
        raise BundleError(f"index root entry {bundle.index.root} claims a later log size")
    # The root entry carries an inclusion proof like every non-message entry (the inclusion
    # check): so the root is the one the witnessed log holds.
    for item in bundle.index.proofs:
        value = None
        if item.value is not None:
            value = _index_value(item.value)
            named = value.key
            if named != item.key:
                raise BundleError("an index proof's value names another key than the proof")
        verify_proof(root.root, item.key, item.value, item.proof)
        state.index_values[item.key] = value
    state.index_root = root
    return (
        f"{len(bundle.index.proofs)} proofs lead to the index root at log size {root.size} "
        f"(entry {bundle.index.root})"
    )


def _index_value(data: bytes) -> IndexValue:
    try:
        return parse_value(data)
    except AgritraceError as exc:
        raise BundleError(f"an index value does not parse: {exc}") from exc


def _index_size(state: _State) -> int:
    """The log size the verified index root covers (0 before one is verified)."""
    return 0 if state.index_root is None else state.index_root.size


def _indexed(state: _State, key: bytes, what: str) -> IndexValue | None:
    if state.index_root is None:
        raise BundleError("no verified product index (see the index check)")
    if key not in state.index_values:
        raise BundleError(f"the bundle has no index proof for {what}")
    return state.index_values[key]


def _check_heads(bundle: Bundle, state: _State) -> str:
    """Each lineage chain, up to the index's log size, ends at the head the index holds."""
    chains = _chains(state)
    lineage = _lineage(bundle, state)
    for product in sorted(lineage):
        value = _indexed(state, product_key(product), product)
        size = _index_size(state)
        covered = [link for link in chains.get(product, []) if link[1] < size]
        head = value.chain if isinstance(value, ProductState) else None
        if head is None:
            if covered:
                raise BundleError(
                    f"{product}: the index at log size {size} holds no entry of it, the bundle "
                    f"has entry {covered[0][1]}"
                )
            continue
        if not covered or covered[-1][0] < head.pseq:
            shown = f"position {covered[-1][0]} (entry {covered[-1][1]})" if covered else "nothing"
            raise BundleError(
                f"{product}: the bundle's chain reaches {shown} but the log's index at size "
                f"{size} has position {head.pseq} (entry {head.index}): entries were left out"
            )
        pseq, index, _ = covered[-1]
        if (pseq, index) != (head.pseq, head.index) or state.leaves[index] != head.leaf:
            raise BundleError(
                f"{product}: position {pseq} is entry {index}, the index says entry {head.index}"
            )
    size = _index_size(state)
    return f"{len(lineage)} chain head(s) are the log's up to size {size}: nothing newer left out"


def _check_recalls(bundle: Bundle, state: _State) -> str:
    """The recalls of the lineage: all that the index holds are in the bundle, or none exists."""
    lineage = _lineage(bundle, state)
    found = [
        (index, entry)
        for index, entry in sorted(state.entries.items())
        if isinstance(entry, Recall) and any(p.path in lineage for p in entry.products)
    ]
    shown = "; ".join(
        f"RECALLED {', '.join(p.path for p in e.products)} by {e.by}: {e.reason}" for _, e in found
    )
    in_bundle = {index for index, _ in found}
    for product in sorted(lineage):
        try:
            value = _indexed(state, product_key(product), product)
        except BundleError as exc:
            raise BundleError(f"{shown or 'no recall in the bundle'}, not proven: {exc}") from exc
        recalls = value.recalls if isinstance(value, ProductState) else ()
        missing = [index for index in recalls if index not in in_bundle]
        if missing:
            raise BundleError(
                f"{product}: the log's index holds the recall at entry {missing[0]}, which the "
                "bundle left out"
            )
        size = _index_size(state)
        unindexed = [
            index
            for index, entry in found
            if index < size and index not in recalls and product in {p.path for p in entry.products}
        ]
        if unindexed:
            raise BundleError(f"{product}: the recall at entry {unindexed[0]} is not in the index")
    size = _index_size(state)
    if found:
        return shown
    return (
        f"no recall of the product or its {len(lineage) - 1} ancestor(s) up to log size {size} "
        "(proof of absence)"
    )


def _check_registry(state: _State) -> str:
    """Every registry entry of each signing device that the index holds is in the bundle."""
    devices = sorted({signed.message.device for signed in state.messages.values()})
    size = _index_size(state)
    for device in devices:
        value = _indexed(state, device_key(device), f"device {device}")
        registry = value.registry if isinstance(value, DeviceState) else ()
        present = {
            index
            for index, entry in state.entries.items()
            if isinstance(entry, DeviceRegistered | KeyRotated | KeyRevoked)
            and entry.device == device
        }
        missing = [index for index in registry if index not in present]
        if missing:
            raise BundleError(
                f"device {device}: the log's index holds its registry entry {missing[0]}, which "
                "the bundle left out"
            )
        extra = sorted(i for i in present if i < size and i not in registry)
        if extra:
            raise BundleError(f"device {device}: registry entry {extra[0]} is not in the index")
    return f"{len(devices)} device key histories complete up to log size {size}"


def _field(doc: Mapping[str, object], name: str, kind: type) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind):
        raise BundleError(f"{name!r} must be a {kind.__name__}")
    return value


def _uint(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise BundleError(f"{what} must be a non-negative integer")
    return value


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise BundleError(f"{what} must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise BundleError(f"{what} is not valid base64") from exc


def _hashes(value: object, what: str) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise BundleError(f"{what} must be a list of base64 hashes")
    hashes = tuple(_unb64(item, what) for item in value)
    if any(len(h) != 32 for h in hashes):
        raise BundleError(f"{what} hashes are 32 bytes")
    return hashes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
