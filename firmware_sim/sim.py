"""``agritrace sim provision`` and ``agritrace sim run``: scenarios driven over MQTT.

Provisioning registers a scenario's parties and devices through the registry HTTP API
(docs/registry-api.md), creates the device key files under ``DATA_DIR/keys/`` and writes a state
file (``DATA_DIR/sim/{scenario}.json``, mode 0600: it holds the party tokens) with the parties,
the devices and the pinned log vkey from ``GET /v1/log/vkey``. It is idempotent: 409 means the
party or device is there already (a device's registered key is then checked against its file).

Running maps the timeline's scenario offsets to device time ``t0 + offset / speed``, where ``t0``
is the wall clock after provisioning: so every message time lies after its key's registration
(``valid_from_ms``) and never ahead of the server's clock (the 5-minute ``clock_skew`` rule),
whatever the speed. One :class:`~gateway.runtime.Fleet` per party (one MQTT connection and
one outbox file each) sends the messages; before a device touches a product that another
device touched last, the runner waits for that message's receipt, because the rights rules
refuse (not park) a receiving that overtakes its shipping.

This module imports only tracecore and firmware_sim; HTTP goes through httpx.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final, TextIO

import httpx

from firmware_sim.faults import (
    FAULTS,
    Fault,
    FaultInjector,
    FaultSettings,
    FaultyDevice,
    Injection,
    Revoker,
)
from firmware_sim.scenarios import Planned, Scenario, ScenarioConfig, build_scenario
from gateway.outbox import Outbox
from gateway.runtime import Fleet, ResendPolicy, load_or_create_device_key
from tracecore.errors import ConfigError
from tracecore.keys import VerifierKey
from tracecore.mqtt import BrokerAddress

__all__ = [
    "SimOptions",
    "SimState",
    "SimSummary",
    "parse_duration",
    "provision",
    "provision_scenario",
    "run_simulation",
]

#: Resends after which an unreceipted message counts as (probably) rejected.
REJECTED_AFTER_RESENDS: Final = 3
#: Longest wait for the receipt a later message depends on (then send anyway).
DEPENDENCY_WAIT_S: Final = 30.0
#: Device clocks are not the server's: each device runs up to this much ahead (seeded). Only
#: ahead, because a clock behind would date the first messages before the key's registration
#: (``revoked_key``); well inside the server's 5-minute ``clock_skew`` allowance.
CLOCK_JITTER_MS: Final = 3_000


def parse_duration(text: str) -> float:
    """Parse ``90``, ``90s``, ``10m`` or ``2h`` into seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        raise ConfigError(f"bad duration {text!r}: use e.g. 30s, 10m, 2h") from None
    if seconds <= 0:
        raise ConfigError(f"bad duration {text!r}: must be positive")
    return seconds


# -- provisioning -------------------------------------------------------------------------------


@dataclass(slots=True)
class SimState:
    """What ``sim provision`` leaves for ``sim run``: parties, devices, tokens, log vkey."""

    api: str
    log_vkey: str
    parties: dict[str, str] = field(default_factory=dict)  # id -> name
    tokens: dict[str, str] = field(default_factory=dict)  # party id -> bearer token
    devices: dict[str, str] = field(default_factory=dict)  # device id -> party id
    runs: int = 0

    @staticmethod
    def path(data_dir: Path, scenario: str) -> Path:
        """Where the state of ``scenario`` lives."""
        return data_dir / "sim" / f"{scenario}.json"

    @classmethod
    def load(cls, path: Path) -> SimState | None:
        """Read the state file, or None if there is none."""
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        return cls(**raw)

    def save(self, path: Path) -> None:
        """Write the state file (0600: it holds party tokens)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(
                {
                    "api": self.api,
                    "log_vkey": self.log_vkey,
                    "parties": self.parties,
                    "tokens": self.tokens,
                    "devices": self.devices,
                    "runs": self.runs,
                },
                out,
                ensure_ascii=False,
                indent=1,
            )
        temp.replace(path)


def _check(reply: httpx.Response, *ok: int) -> None:
    if reply.status_code not in ok:
        raise ConfigError(
            f"{reply.request.method} {reply.request.url.path}: {reply.status_code} {reply.text}"
        )


async def provision(
    http: httpx.AsyncClient,
    scenario: Scenario,
    *,
    admin_token: str,
    keys_dir: Path,
    state_path: Path,
) -> SimState:
    """Register ``scenario``'s parties and devices (idempotent); write and return the state."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    reply = await http.get("/v1/log/vkey")
    _check(reply, 200)
    vkey = VerifierKey.parse(reply.text.strip())
    state = SimState.load(state_path) or SimState(api=str(http.base_url), log_vkey=str(vkey))
    state.log_vkey = str(vkey)
    for party in scenario.parties:
        body = {"id": party.id, "kind": party.kind, **party.profile()}
        reply = await http.post("/v1/parties", json=body, headers=admin)
        _check(reply, 201, 409)
        if reply.status_code == 409:
            # Registered by an earlier run (perhaps before profiles existed): bring it up to date.
            profile = {k: v for k, v in body.items() if k not in ("id", "kind")}
            _check(await http.patch(f"/v1/parties/{party.id}", json=profile, headers=admin), 200)
        state.parties[party.id] = party.name
        if party.id not in state.tokens:
            reply = await http.post(f"/v1/parties/{party.id}/tokens", headers=admin)
            _check(reply, 201)
            state.tokens[party.id] = reply.json()["token"]
    for device in scenario.devices:
        key = load_or_create_device_key(keys_dir, device.id)
        public = base64.b64encode(key.public_key).decode()
        device_body: dict[str, str | None] = {
            "id": device.id,
            "party": device.party,
            "public_key": public,
            "place": device.place_zh or None,
            "place_en": device.place_en or None,
        }
        # The party registers its own devices, with its own token (docs/registry-api.md).
        auth = {"Authorization": f"Bearer {state.tokens[device.party]}"}
        reply = await http.post("/v1/devices", json=device_body, headers=auth)
        _check(reply, 201, 409)
        if reply.status_code == 409:
            reply = await http.get(f"/v1/devices/{device.id}", headers=admin)
            _check(reply, 200)
            record = reply.json()
            if record["party"] != device.party or public not in {
                k["public_key"] for k in record["keys"]
            }:
                raise ConfigError(
                    f"device {device.id} is registered with another party or key than "
                    f"{keys_dir / (device.id + '.key')}"
                )
        state.devices[device.id] = device.party
    state.save(state_path)
    return state


# -- running ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimOptions:
    """Everything ``sim run`` needs."""

    scenario: str
    api: str
    broker: BrokerAddress
    data_dir: Path
    admin_token: str | None
    farms: int = 1
    speed: float = 60.0
    duration_s: float = 600.0
    seed: int = 0
    prefix: str = ""
    excursion_rate: float = 0.0
    settle_s: float = 60.0
    resend: ResendPolicy = field(default_factory=lambda: ResendPolicy(15.0, 120.0))
    faults: tuple[Fault, ...] = ()
    fault_settings: FaultSettings = field(default_factory=FaultSettings)
    progress: TextIO | None = None
    progress_every_s: float = 1.0
    # A directory of per-gateway MQTT passwords (``gw-{party}``, as agritrace broker-auth
    # writes them): each party's gateway then logs in as itself, as the broker's ACL requires.
    broker_passwords: Path | None = None

    def broker_for(self, party: str) -> BrokerAddress:
        """The broker address ``party``'s gateway connects with."""
        if self.broker_passwords is None:
            return self.broker
        user = f"gw-{party}"
        path = self.broker_passwords / user
        try:
            password = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"no MQTT password for {user} in {self.broker_passwords}") from exc
        return replace(self.broker, username=user, password=password)


@dataclass(slots=True)
class SimSummary:
    """The outcome of a run: message counts and the products touched."""

    scenario: str
    planned: int = 0
    sent: int = 0
    receipted: int = 0
    pending: int = 0
    rejected: int = 0
    rejected_exact: bool = False
    dependency_timeouts: int = 0
    products: int = 0
    wall_s: float = 0.0
    # Per fault, how many were injected; the injections themselves (the last 10,000 per fleet).
    faults: dict[str, int] = field(default_factory=dict)
    injections: list[Injection] = field(default_factory=list)

    @property
    def expected_rejections(self) -> int:
        """How many of the injected faulty messages the service must refuse by now.

        ``unknown_product`` messages are parked first (refused only after 24 h): not counted.
        """
        return sum(
            count
            for name, count in self.faults.items()
            if FAULTS[name].expected not in {"accepted", "duplicate", "unknown_product"}
        )

    @property
    def unexpected_rejections(self) -> int:
        """Rejections beyond the injected ones (the service's count, or the estimate)."""
        injected = self.expected_rejections if self.rejected_exact else 0
        return max(0, self.rejected - injected)

    @property
    def ok(self) -> bool:
        """True when every sent message was receipted and no genuine one is known rejected.

        The faulty copies that faults publish outside the outbox are expected rejections.
        """
        return self.pending == 0 and self.unexpected_rejections == 0 and self.sent == self.planned

    def render(self) -> str:
        """A human summary."""
        how = "counted by the service" if self.rejected_exact else "estimated"
        return (
            f"scenario {self.scenario}: {self.sent}/{self.planned} messages sent, "
            f"{self.receipted} receipted, {self.pending} pending, {self.rejected} rejected "
            f"({how}), {self.products} products, {self.wall_s:.1f} s"
            + (
                f", {self.dependency_timeouts} dependency waits timed out"
                if self.dependency_timeouts
                else ""
            )
            + "".join(
                f"\nfault {name}: {count} injected (expected: {FAULTS[name].expected})"
                for name, count in sorted(self.faults.items())
            )
            + ("\n" if self.ok else "\nNOT every message was receipted\n")
        )


@dataclass(slots=True)
class _Run:
    fleets: dict[str, Fleet]
    injectors: dict[str, FaultInjector]
    devices: dict[str, FaultyDevice]
    # The last message (device, seq, fleet) that named each product: what a later message of
    # another device must wait for.
    last: dict[str, tuple[str, int, Fleet]] = field(default_factory=dict)
    clock_offsets: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    timeouts: int = 0

    def pending(self) -> int:
        return sum(fleet.pending_count() for fleet in self.fleets.values())

    def receipted(self) -> int:
        return sum(fleet.stats.receipted for fleet in self.fleets.values())

    def stuck(self) -> int:
        """Messages resent more than :data:`REJECTED_AFTER_RESENDS` times: probably refused."""
        return sum(
            1
            for fleet in self.fleets.values()
            for item in fleet.outbox.pending()
            if item.attempts > REJECTED_AFTER_RESENDS + 1
        )


async def run_simulation(options: SimOptions) -> SimSummary:
    """Provision if needed, run the scenario's timeline over MQTT, settle; return a summary."""
    if options.speed <= 0:
        raise ConfigError("--speed must be positive")
    span_ms = round(options.duration_s * options.speed * 1000)
    state_path = SimState.path(options.data_dir, options.scenario)
    state = SimState.load(state_path)
    config = ScenarioConfig(
        farms=options.farms,
        seed=options.seed,
        run=(state.runs if state else 0) + 1,
        prefix=options.prefix,
        excursion_rate=options.excursion_rate,
    )
    scenario = build_scenario(options.scenario, config, span_ms)
    keys_dir = options.data_dir / "keys"
    async with httpx.AsyncClient(base_url=options.api, timeout=30) as http:
        if state is None or any(d.id not in state.devices for d in scenario.devices):
            if not options.admin_token:
                raise ConfigError("not provisioned yet: pass --admin-token (or run sim provision)")
            state = await provision(
                http,
                scenario,
                admin_token=options.admin_token,
                keys_dir=keys_dir,
                state_path=state_path,
            )
        state.runs = config.run
        state.save(state_path)
        t0 = time.time_ns() // 1_000_000 + 1  # after every key's registration
        log_key = VerifierKey.parse(state.log_vkey).public_key
        summary = SimSummary(scenario.name, planned=len(scenario.timeline))
        with contextlib.ExitStack() as stack:
            revoke = _revoker(http, state)
            run = _open_fleets(options, scenario, log_key, keys_dir, stack, revoke=revoke)
            await _drive(options, scenario, run, t0, summary)
        for injector in run.injectors.values():
            for name, count in injector.counts.items():
                summary.faults[name] = summary.faults.get(name, 0) + count
            summary.injections.extend(injector.injections)
        if options.admin_token:
            summary.rejected = await _count_rejections(
                http, options.admin_token, set(state.devices), t0
            )
            summary.rejected_exact = True
    summary.products = len(run.last)
    return summary


def _revoker(http: httpx.AsyncClient, state: SimState) -> Revoker:
    """``revoked_key``: revoke a device's current key with its owning party's token."""

    async def revoke(device_id: str) -> None:
        token = state.tokens[state.devices[device_id]]
        reply = await http.post(
            f"/v1/devices/{device_id}/revoke",
            json={"reason": "sim fault revoked_key"},
            headers={"Authorization": f"Bearer {token}"},
        )
        _check(reply, 200)

    return revoke


def _open_fleets(
    options: SimOptions,
    scenario: Scenario,
    log_key: bytes,
    keys_dir: Path,
    stack: contextlib.ExitStack,
    *,
    revoke: Revoker,
) -> _Run:
    fleets: dict[str, Fleet] = {}
    injectors: dict[str, FaultInjector] = {}
    devices: dict[str, FaultyDevice] = {}
    # Devices that send events are spared device-wide faults (revoked_key): other parties'
    # messages depend on their events, so the run could not settle.
    spared = frozenset(p.device for p in scenario.timeline if p.step is not None)
    for spec in scenario.devices:
        fleet = fleets.get(spec.party)
        if fleet is None:
            outbox = stack.enter_context(Outbox(options.data_dir / "sim" / f"{spec.party}.outbox"))
            # One gateway per party: its own MQTT session, stable across runs.
            fleet = Fleet(
                options.broker_for(spec.party),
                outbox,
                log_key,
                client_id=f"sim-{spec.party}",
                resend=options.resend,
            )
            fleets[spec.party] = fleet
            injectors[spec.party] = FaultInjector(
                fleet,
                options.faults,
                # One RNG stream per party, reproducible from --seed.
                seed=options.seed * 1_000_003 + len(injectors),
                settings=options.fault_settings,
                revoke=revoke,
                spared=spared,
            )
        device = fleet.add_device(spec.id, load_or_create_device_key(keys_dir, spec.id))
        devices[spec.id] = injectors[spec.party].device(device)
    rng = random.Random(f"clocks/{options.seed}")  # noqa: S311 (simulation, not cryptography)
    offsets = {device: rng.randrange(CLOCK_JITTER_MS + 1) for device in sorted(devices)}
    return _Run(fleets, injectors, devices, clock_offsets=offsets)


async def _drive(
    options: SimOptions, scenario: Scenario, run: _Run, t0: int, summary: SimSummary
) -> None:
    stop = asyncio.Event()
    started = time.monotonic()
    async with asyncio.TaskGroup() as tasks:
        for party, injector in run.injectors.items():
            tasks.create_task(injector.run(stop), name=f"sim-fleet-{party}")
        progress = tasks.create_task(_progress(options, run, summary, stop), name="sim-progress")
        try:
            await _send_timeline(options, scenario.timeline, run, t0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(options.settle_s):
                    for fleet in run.fleets.values():
                        await fleet.wait_settled()
                    # The faulty copies wait for receipts (replays) or a connection.
                    while any(i.pending_publishes() for i in run.injectors.values()):  # noqa: ASYNC110 (no event to wait on)
                        await asyncio.sleep(0.05)
        finally:
            summary.sent = run.sent
            summary.receipted = run.receipted()
            summary.pending = run.pending()
            summary.rejected = run.stuck()
            summary.dependency_timeouts = run.timeouts
            summary.wall_s = time.monotonic() - started
            stop.set()
            await progress


async def _send_timeline(
    options: SimOptions, timeline: Sequence[Planned], run: _Run, t0: int
) -> None:
    for planned in timeline:
        wall_ms = t0 + round(planned.at_ms / options.speed)
        delay = wall_ms / 1000 - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await _wait_dependencies(planned, run)
        device = run.devices[planned.device]
        device_ms = wall_ms + run.clock_offsets.get(planned.device, 0)
        # Events are kept intact (no fault replaces them): later messages depend on them.
        template = planned.message(1, device_ms)
        seq, _ = await device.send_message(template, intact=planned.step is not None)
        run.sent += 1
        for product in planned.products:
            run.last[product.path] = (planned.device, seq, device.injector.fleet)


async def _wait_dependencies(planned: Planned, run: _Run) -> None:
    """Wait for the receipts of other devices' last messages about these products."""
    for product in (*planned.products, *planned.parents):
        last = run.last.get(product.path)
        if last is None or last[0] == planned.device:
            continue
        device_id, seq, fleet = last
        deadline = time.monotonic() + DEPENDENCY_WAIT_S
        while fleet.outbox.get(device_id, seq) is not None:
            if time.monotonic() > deadline:
                run.timeouts += 1
                break
            await asyncio.sleep(0.02)


async def _progress(
    options: SimOptions, run: _Run, summary: SimSummary, stop: asyncio.Event
) -> None:
    out = options.progress
    if out is None:
        return
    live = out.isatty()
    while True:
        line = (
            f"sent {run.sent}/{summary.planned}  receipted {run.receipted()}  "
            f"pending {run.pending()}  rejected~ {run.stuck()}"
        )
        out.write(("\r" + line + "   ") if live else line + "\n")
        out.flush()
        if stop.is_set():
            break
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(options.progress_every_s if live else 5.0):
                await stop.wait()
    if live:
        out.write("\n")


async def _count_rejections(
    http: httpx.AsyncClient, admin_token: str, devices: set[str], since_ms: int
) -> int:
    """Count the service's rejections of our devices since ``since_ms`` (newest first, paged)."""
    count, before = 0, None
    headers = {"Authorization": f"Bearer {admin_token}"}
    while True:
        params: dict[str, int] = {"limit": 1000}
        if before is not None:
            params["before"] = before
        reply = await http.get("/v1/admin/rejections", params=params, headers=headers)
        _check(reply, 200)
        rows = reply.json()
        for row in rows:
            if row["received_ms"] >= since_ms and row["device"] in devices:
                count += 1
        if len(rows) < 1000 or rows[-1]["received_ms"] < since_ms:
            return count
        before = rows[-1]["id"]


async def provision_scenario(
    *, api: str, admin_token: str, scenario: str, farms: int, data_dir: Path, prefix: str = ""
) -> SimState:
    """``sim provision``: register ``scenario`` (``farms`` farms) at ``api``; return the state."""
    built = build_scenario(scenario, ScenarioConfig(farms=farms, prefix=prefix), 0)
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        return await provision(
            http,
            built,
            admin_token=admin_token,
            keys_dir=data_dir / "keys",
            state_path=SimState.path(data_dir, scenario),
        )
