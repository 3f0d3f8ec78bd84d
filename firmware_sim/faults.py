"""Faults on demand: named misbehaviours applied to a fleet's traffic (``--fault NAME[:rate]``).

A :class:`Fault` is a name from :data:`FAULTS` and a rate in [0, 1]; :func:`parse_fault` reads
the command-line form. A :class:`FaultInjector` wraps a :class:`~gateway.runtime.Fleet`
and applies the faults to the messages its devices send through :class:`FaultyDevice` (the
same ``send_reading`` / ``send_event`` as :class:`~gateway.runtime.Device`); run the
fleet with :meth:`FaultInjector.run` instead of :meth:`Fleet.run` so that outages and delayed
publishes (replays, equivocations) happen. Choices come from a seeded RNG: the same seed, the
same sends and the same faults give the same injections.

What the rate means depends on the fault's scope (:class:`FaultInfo.scope`):

``message``  the probability that one message gets the fault;
``device``   the fraction of devices that get it (chosen by a hash of seed, fault and device id,
             so independent of the order of sends);
``gateway``  the probability, per message sent while the fleet is online, that the fleet's
             connection goes down for :attr:`FaultSettings.offline_s`.

At most one fault applies to one message (the first of :data:`FAULT_NAMES` that is drawn).

Faulty messages that the service must refuse (tamper, wrong_key, equivocation, clock_skew,
unknown_product, revoked_key) are published **once, outside the outbox**: the fleet can still
settle, and the sequence number they use is reserved in the outbox counter (a gap in the
device's sequence, never a reused number). See docs/scenarios.md, "Faults".

This module imports only tracecore and firmware_sim (import-linter enforces it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import aiomqtt
import cbor2

from gateway.runtime import Device, Fleet
from tracecore.cbor import encode_deterministic
from tracecore.cose import COSE_SIGN1_TAG, SIGNATURE_LENGTH, parse_message, sign_message
from tracecore.errors import ConfigError
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey, generate_signer
from tracecore.message import DeviceMessage, Event, Reading, Sensor, encode_payload

__all__ = [
    "FAULTS",
    "FAULT_NAMES",
    "REPLACING",
    "Fault",
    "FaultInfo",
    "FaultInjector",
    "FaultSettings",
    "FaultyDevice",
    "Injection",
    "Revoker",
    "parse_fault",
    "parse_faults",
]

Scope = Literal["message", "device", "gateway"]
Revoker = Callable[[str], Awaitable[None]]
"""Revokes a device's current key in the registry (e.g. ``POST /v1/devices/{id}/revoke``)."""


@dataclass(frozen=True, slots=True)
class FaultInfo:
    """A fault of the registry: its scope, default rate, the service's expected outcome."""

    name: str
    scope: Scope
    default_rate: float
    expected: str  # "accepted", "duplicate" or a reject reason code (docs/protocol.md §6)
    summary: str


FAULTS: Final[Mapping[str, FaultInfo]] = {
    info.name: info
    for info in (
        FaultInfo(
            "offline",
            "gateway",
            0.01,
            "accepted",
            "the fleet's connection drops; messages wait in the outbox, then flush in order",
        ),
        FaultInfo(
            "tamper",
            "message",
            0.05,
            "bad_signature",
            "a copy with bytes changed after signing (payload or signature) is published",
        ),
        FaultInfo(
            "replay",
            "message",
            0.05,
            "duplicate",
            "the same bytes are published again after the message was receipted",
        ),
        FaultInfo(
            "wrong_key",
            "message",
            0.05,
            "unknown_key",
            "the message is signed with a key that is not registered",
        ),
        FaultInfo(
            "equivocation",
            "message",
            0.05,
            "equivocation",
            "after a receipt, other bytes with the same seq are published",
        ),
        FaultInfo(
            "clock_skew",
            "message",
            0.05,
            "clock_skew",
            "the message's time is 10 minutes ahead",
        ),
        FaultInfo(
            "burst",
            "message",
            0.01,
            "accepted",
            "a reading is followed by many more at once",
        ),
        FaultInfo(
            "unknown_product",
            "message",
            0.05,
            "unknown_product",
            "the message names a product never commissioned (parked, then refused after 24 h)",
        ),
        FaultInfo(
            "revoked_key",
            "device",
            0.1,
            "revoked_key",
            "the device's key is revoked in the registry; the device keeps sending with it",
        ),
    )
}
FAULT_NAMES: Final = tuple(FAULTS)
#: Faults whose faulty message replaces the genuine one (the genuine message is never sent).
REPLACING: Final = frozenset({"wrong_key", "clock_skew", "unknown_product", "revoked_key"})


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault to apply: a registry name and a rate in [0, 1]."""

    name: str
    rate: float

    def __post_init__(self) -> None:
        """Check the name and the rate; raise :class:`ConfigError`."""
        if self.name not in FAULTS:
            raise ConfigError(
                f"unknown fault {self.name!r}; known faults: {', '.join(FAULT_NAMES)}"
            )
        if not (isinstance(self.rate, int | float) and 0.0 <= self.rate <= 1.0):
            raise ConfigError(f"fault {self.name}: rate must be between 0 and 1, got {self.rate!r}")

    @property
    def info(self) -> FaultInfo:
        """The registry entry of this fault."""
        return FAULTS[self.name]

    def __str__(self) -> str:
        """The ``NAME:rate`` form :func:`parse_fault` reads."""
        return f"{self.name}:{self.rate:g}"


def parse_fault(spec: str) -> Fault:
    """Parse ``NAME`` or ``NAME:rate`` (rate 0..1; default: the fault's default rate).

    Raises :class:`ConfigError` for an unknown name or a rate that is not a number in [0, 1].
    """
    name, sep, rate_text = spec.strip().partition(":")
    name = name.strip().lower().replace("-", "_")
    if name not in FAULTS:
        raise ConfigError(
            f"unknown fault {name!r} in {spec!r}; known faults: {', '.join(FAULT_NAMES)}"
        )
    if not sep:
        return Fault(name, FAULTS[name].default_rate)
    try:
        rate = float(rate_text)
    except ValueError:
        raise ConfigError(
            f"fault {name}: rate must be a number in [0, 1], got {rate_text!r}"
        ) from None
    if not math.isfinite(rate):
        raise ConfigError(f"fault {name}: rate must be a number in [0, 1], got {rate_text!r}")
    return Fault(name, rate)


def parse_faults(specs: Sequence[str]) -> tuple[Fault, ...]:
    """Parse several ``--fault`` options; a fault named twice is a :class:`ConfigError`."""
    faults = tuple(parse_fault(spec) for spec in specs)
    names = [f.name for f in faults]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"fault named more than once: {', '.join(repeated)}")
    return faults


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """The parameters of the faults (the CLI uses the defaults; tests shorten the times)."""

    offline_s: float = 10.0
    burst_size: int = 20
    replay_delay_s: float = 1.0
    skew_ms: int = 10 * 60_000
    unknown_gtin: str = "09506000134369"  # a GS1 example GTIN; lots "never-…" never exist
    scan_interval_s: float = 0.05


@dataclass(frozen=True, slots=True)
class Injection:
    """One applied fault: the device, the seq and the exact bytes published for it."""

    fault: str
    device_id: str
    seq: int
    raw: bytes
    expected: str


@dataclass(slots=True)
class _Delayed:
    device_id: str
    raw: bytes
    not_before: float  # time.monotonic()
    after_settled: int | None  # publish only once this seq of the device is receipted


@dataclass(slots=True)
class FaultInjector:
    """Applies ``faults`` to the traffic of ``fleet`` (see the module docstring).

    ``revoke`` is required for ``revoked_key``: it revokes the device's current key in the
    registry (the CLI calls the registry API; tests call tracecore.storage directly).
    ``injections`` keeps the last ``keep`` injections; ``counts`` counts all of them.
    ``spared`` devices never get a device-scope fault (``revoked_key``): the simulator spares
    the devices whose messages others depend on.
    """

    fleet: Fleet
    faults: Sequence[Fault]
    seed: int = 0
    settings: FaultSettings = field(default_factory=FaultSettings)
    revoke: Revoker | None = None
    keep: int = 10_000
    spared: frozenset[str] = frozenset()
    counts: collections.Counter[str] = field(default_factory=collections.Counter)
    injections: collections.deque[Injection] = field(init=False)
    outages: int = 0
    _rng: random.Random = field(init=False)
    _delayed: list[_Delayed] = field(default_factory=list)
    _rogue_keys: dict[str, SignerKey] = field(default_factory=dict)
    _revoked: set[str] = field(default_factory=set)
    _outage: asyncio.Event = field(default_factory=asyncio.Event)
    _offline: bool = False

    def __post_init__(self) -> None:
        """Check the faults; seed the RNG."""
        names = [f.name for f in self.faults]
        if len(set(names)) != len(names):
            raise ConfigError("a fault may be given only once")
        if "revoked_key" in names and self.revoke is None:
            raise ConfigError("the revoked_key fault needs a way to revoke keys (revoke=...)")
        self.injections = collections.deque(maxlen=self.keep)
        self._rng = random.Random(self.seed)  # noqa: S311 (simulation, not cryptography)

    def device(self, device: Device | str) -> FaultyDevice:
        """Return a :class:`FaultyDevice` sending as ``device`` (a device of the fleet)."""
        dev = self.fleet.devices[device] if isinstance(device, str) else device
        return FaultyDevice(self, dev)

    @property
    def offline(self) -> bool:
        """True during an outage (the fleet is disconnected on purpose)."""
        return self._offline

    def request_outage(self) -> None:
        """Take the fleet offline for ``settings.offline_s`` (no-op if already offline)."""
        if not self._offline:
            self._offline = True
            self._outage.set()

    def pending_publishes(self) -> int:
        """Return how many faulty publishes still wait (replays, equivocations, offline)."""
        return len(self._delayed)

    # -- running --------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run the fleet with outages until ``stop``, publishing the delayed faulty copies."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._publisher(stop), name=f"faults-{self.fleet.client_id}")
            while not stop.is_set():
                inner = asyncio.Event()
                fleet = tasks.create_task(self.fleet.run(inner), name="faulty-fleet")
                await _first_of(stop, self._outage)
                inner.set()
                await fleet
                if stop.is_set():
                    break
                # Offline: sends go to the outbox only; the reconnect flushes them in order.
                self.outages += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.offline_s):
                        await stop.wait()
                self._outage.clear()
                self._offline = False

    async def _publisher(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self._delayed and self.fleet.connected.is_set() and not self._offline:
                now = time.monotonic()
                ready = [d for d in self._delayed if self._ready(d, now)]
                for item in ready:
                    try:
                        await self.fleet.publish_raw(item.device_id, item.raw)
                    except aiomqtt.MqttError:
                        break  # disconnected: try again later
                    self._delayed.remove(item)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.scan_interval_s):
                    await stop.wait()

    def _ready(self, item: _Delayed, now: float) -> bool:
        if item.not_before > now:
            return False
        return (
            item.after_settled is None
            or self.fleet.outbox.get(item.device_id, item.after_settled) is None
        )

    # -- choosing and applying faults -----------------------------------------------------

    def _choose(self, device_id: str, *, intact: bool = False) -> Fault | None:
        for fault in self.faults:
            if intact and fault.name in REPLACING:
                continue
            scope = fault.info.scope
            if scope == "device":
                if (
                    device_id not in self.spared
                    and _device_draw(self.seed, fault.name, device_id) < fault.rate
                ):
                    return fault
            elif scope == "message" and self._rng.random() < fault.rate:
                return fault
        return None

    def _maybe_outage(self) -> None:
        for fault in self.faults:
            if fault.name == "offline" and not self._offline and self._rng.random() < fault.rate:
                self.request_outage()

    def _record(self, fault: str, device_id: str, seq: int, raw: bytes) -> None:
        self.counts[fault] += 1
        self.injections.append(Injection(fault, device_id, seq, raw, FAULTS[fault].expected))

    def _later(
        self, device_id: str, raw: bytes, *, delay_s: float = 0.0, after: int | None = None
    ) -> None:
        self._delayed.append(_Delayed(device_id, raw, time.monotonic() + delay_s, after))

    def _reserve_seq(self, device_id: str) -> int:
        """Use up the device's next sequence number without storing a message."""
        seq = self.fleet.outbox.last_seq(device_id) + 1
        self.fleet.outbox.ensure_seq_at_least(device_id, seq)
        return seq

    async def _genuine(self, device: Device, template: DeviceMessage) -> tuple[int, bytes]:
        """Send ``template`` normally (to the outbox only while offline)."""
        if not self._offline:
            return await device.send(lambda seq: dataclasses.replace(template, seq=seq))
        fleet = self.fleet
        now = device.clock()
        signing_key = device.key.signing_key

        def sign(seq: int) -> bytes:
            return sign_message(dataclasses.replace(template, seq=seq), signing_key)

        # Stored, not queued: the resend after the reconnect publishes it, in seq order.
        seq, raw = fleet.outbox.append(device.id, sign, now_ms=now, next_send_ms=now)
        fleet.stats.created += 1
        return seq, raw

    def _one_shot(
        self, fault: str, device: Device, message: DeviceMessage, key: SignerKey | None = None
    ) -> tuple[int, bytes]:
        seq = self._reserve_seq(device.id)
        raw = sign_message(dataclasses.replace(message, seq=seq), (key or device.key).signing_key)
        self._later(device.id, raw)
        self._record(fault, device.id, seq, raw)
        return seq, raw

    async def send(
        self, device: Device, template: DeviceMessage, *, intact: bool = False
    ) -> tuple[int, bytes]:
        """Send ``template`` (its seq is replaced) as ``device``, applying the faults.

        Returns the seq and bytes of the message the device sent (the faulty one when the fault
        replaces the message: wrong_key, clock_skew, unknown_product, revoked_key). With
        ``intact`` the faults that replace the message (:data:`REPLACING`) are not drawn: the
        genuine message is sent (perhaps with a tampered copy, a replay, ...).
        """
        self._maybe_outage()
        fault = self._choose(device.id, intact=intact)
        name = fault.name if fault else None
        if name == "revoked_key":
            if device.id not in self._revoked and self.revoke is not None:
                await self.revoke(device.id)
                self._revoked.add(device.id)
            now = device.clock()
            return self._one_shot(name, device, dataclasses.replace(template, time=now))
        if name == "wrong_key":
            rogue = self._rogue_keys.setdefault(device.id, generate_signer(device.id))
            return self._one_shot(name, device, template, rogue)
        if name == "clock_skew":
            ahead = dataclasses.replace(template, time=template.time + self.settings.skew_ms)
            return self._one_shot(name, device, ahead)
        if name == "unknown_product":
            ghost = ProductKey.from_parts(
                self.settings.unknown_gtin, lot=f"never-{self._rng.getrandbits(48):012x}"
            )
            return self._one_shot(name, device, _with_products(template, ghost))
        seq, raw = await self._genuine(device, template)
        if name == "tamper":
            bad = _tamper(raw, self._rng)
            self._later(device.id, bad)
            self._record(name, device.id, seq, bad)
        elif name == "replay":
            self._later(device.id, raw, delay_s=self.settings.replay_delay_s, after=seq)
            self._record(name, device.id, seq, raw)
        elif name == "equivocation":
            other = sign_message(
                dataclasses.replace(template, seq=seq, time=template.time + 1),
                device.key.signing_key,
            )
            self._later(device.id, other, after=seq)
            self._record(name, device.id, seq, other)
        elif name == "burst" and isinstance(template, Reading):
            for _ in range(self.settings.burst_size - 1):
                extra_seq, extra = await self._genuine(device, template)
                self._record(name, device.id, extra_seq, extra)
        return seq, raw


@dataclass(slots=True)
class FaultyDevice:
    """A device whose sends go through a :class:`FaultInjector` (same API as ``Device``)."""

    injector: FaultInjector
    device: Device

    @property
    def id(self) -> str:
        """The device id."""
        return self.device.id

    async def send_message(
        self, template: DeviceMessage, *, intact: bool = False
    ) -> tuple[int, bytes]:
        """Send ``template`` (its seq is replaced), perhaps with a fault (see ``intact`` in
        :meth:`FaultInjector.send`)."""
        return await self.injector.send(self.device, template, intact=intact)

    async def send_reading(
        self,
        products: Sequence[ProductKey],
        sensors: Sequence[Sensor],
        *,
        time_ms: int | None = None,
    ) -> tuple[int, bytes]:
        """Send a reading (see :meth:`Device.send_reading`), perhaps with a fault."""
        when = self.device.clock() if time_ms is None else time_ms
        template = Reading(self.device.id, 1, when, tuple(products), tuple(sensors))
        return await self.injector.send(self.device, template)

    async def send_event(
        self,
        products: Sequence[ProductKey],
        step: str,
        *,
        parents: Sequence[ProductKey] = (),
        location: str | None = None,
        data: Mapping[str, object] | None = None,
        time_ms: int | None = None,
    ) -> tuple[int, bytes]:
        """Send a business event (see :meth:`Device.send_event`), perhaps with a fault."""
        when = self.device.clock() if time_ms is None else time_ms
        template = Event(
            device=self.device.id,
            seq=1,
            time=when,
            products=tuple(products),
            step=step,
            parents=tuple(parents),
            location=location,
            data=data,
        )
        return await self.injector.send(self.device, template)


# -- pure helpers ---------------------------------------------------------------------------


def _device_draw(seed: int, fault: str, device_id: str) -> float:
    """A number in [0, 1) fixed by seed, fault and device: which devices get a device fault."""
    digest = hashlib.sha256(f"{seed}\x00{fault}\x00{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _with_products(message: DeviceMessage, product: ProductKey) -> DeviceMessage:
    if isinstance(message, Event):
        return dataclasses.replace(message, products=(product,), parents=())
    return dataclasses.replace(message, products=(product,))


def _tamper(raw: bytes, rng: random.Random) -> bytes:
    """Return ``raw`` changed after signing: a payload value or one bit of the signature.

    Either way the result still parses as a message of the same device and seq, so the
    service refuses it as ``bad_signature`` (not as malformed or a topic mismatch).
    """
    signed = parse_message(raw)
    if rng.random() < 0.5:
        # Forward, and only by 1 ms: the key stays valid at the forged time (a key is checked
        # at the message time before the signature, so an earlier time could read as
        # revoked_key right after registration) and the clock_skew rule does not apply.
        forged = dataclasses.replace(signed.message, time=signed.message.time + 1)
        payload = encode_payload(forged)
        return encode_deterministic(
            cbor2.CBORTag(COSE_SIGN1_TAG, [signed.protected, {}, payload, signed.signature])
        )
    flipped = bytearray(raw)
    flipped[len(raw) - 1 - rng.randrange(SIGNATURE_LENGTH)] ^= 1 << rng.randrange(8)
    return bytes(flipped)


async def _first_of(*events: asyncio.Event) -> None:
    """Wait until any of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
