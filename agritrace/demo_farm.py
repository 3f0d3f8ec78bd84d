"""The demo's farm: two real gateways (``agritrace gateway``), each from its own gateway.toml.

* ``hens01-collect`` has an ``events`` source: the egg collection and packing line drops a CSV
  file into its spool (the lot collected, two cartons packed from it);
* ``hens01-house1-climate`` has a ``tasmota`` source: an AM2301 probe of hen house 1 publishes
  Tasmota telemetry on the demo's broker, and the gateway signs each as a reading of the lot.

The directories (``DATA_DIR/demo/gateways/{device}/``) stay behind, so a user can read the
configuration that ran, and start the same gateway with ``agritrace gateway --config``.
"""

from __future__ import annotations

import asyncio
import json
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiomqtt

from gateway.config import EventsSource, GatewayConfig, MqttSource, load_config
from gateway.outbox import Outbox
from gateway.service import Gateway, outbox_path, run_gateway
from gateway.spool import queue_batch
from tracecore.cose import sign_message
from tracecore.errors import ConfigError
from tracecore.identifiers import ProductKey
from tracecore.keys import SignerKey, VerifierKey, device_fingerprint
from tracecore.message import Reading, Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.provisioning import Provisioning

__all__ = ["DemoFarm"]

#: The Tasmota topic of the demo's hen-house probe.
PROBE_TOPIC: Final = "tele/hens01-house-1/SENSOR"
#: (°C, % relative humidity) of the probe's six telemetry messages.
PROBE_VALUES: Final = ((18.5, 61), (18.9, 62), (19.4, 63), (19.1, 64), (18.7, 65), (18.2, 66))


@dataclass(frozen=True, slots=True)
class DemoFarm:
    """The demo farm's two gateways: where they live, who they are, what they send."""

    out: Path
    keys_dir: Path
    keys: dict[str, SignerKey]
    devices: tuple[str, str]  # (collection line, hen-house climate)
    links: tuple[BrokerAddress, VerifierKey, str]  # broker, log vkey, API URL
    lot: ProductKey
    cartons: tuple[ProductKey, ...]

    @property
    def directories(self) -> tuple[Path, ...]:
        """The gateways' directories (gateway.toml, provisioning file, state)."""
        return tuple(self.out / "gateways" / device for device in self.devices)

    async def run(self, stop: asyncio.Event, *, within_s: float) -> int:
        """Run both gateways until all they sent is receipted; return how many messages.

        A forged copy (a climate reading signed by the gateway's key, one bit flipped after
        signing) is published at the end, for ingest to refuse.
        """
        collect, climate = self.devices
        broker = self.links[0]
        configs = (
            self._write(
                collect,
                "# The packing line drops CSV files here (docs/gateway-csv.md).\n"
                '[[source]]\nname = "packing-line"\ntype = "events"\nspool = "spool"\n',
            ),
            self._write(
                climate,
                "# The hen house's Tasmota AM2301 probe (docs/gateway.md).\n"
                f'[[source]]\nname = "house-1-probe"\ntype = "tasmota"\nbroker = "{broker}"\n'
                f'topics = ["{PROBE_TOPIC}"]\nproducts = ["{self.lot.path}"]\n',
            ),
        )
        for config, device in zip(configs, self.devices, strict=True):
            _carry_sequence(self.out / "outbox.sqlite3", config, device)
        opened: dict[str, Gateway] = {}
        gateways_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            for config in configs:
                tasks.create_task(
                    run_gateway(
                        config, gateways_stop, ready=lambda g: opened.update({g.device.id: g})
                    ),
                    name=f"demo-gateway-{config.path.parent.name}",
                )
            try:
                sent = await self._send(opened, stop, within_s)
                forged = _forged(opened[climate], self.keys[climate], self.lot)
                await opened[climate].fleet.publish_raw(climate, forged)
            finally:
                gateways_stop.set()
        return sent

    def _write(self, device: str, sources: str) -> GatewayConfig:
        broker, log_vkey, api = self.links
        directory = self.out / "gateways" / device
        directory.mkdir(parents=True, exist_ok=True)
        fingerprint = device_fingerprint(self.keys[device].public_key)
        provisioning = Provisioning.make(device, str(broker), str(log_vkey), api, fingerprint)
        (directory / "provisioning.json").write_text(provisioning.to_json(), encoding="utf-8")
        text = (
            f"# The demo's gateway {device} (docs/gateway.md).\n"
            "[gateway]\n"
            'provisioning = "provisioning.json"\n'
            f"keys = {json.dumps(str(self.keys_dir.resolve()))}\n"
            'state = "state"\n'
            "status_interval = 0\n\n"
            f"{sources}"
        )
        (directory / "gateway.toml").write_text(text, encoding="utf-8")
        return load_config(directory / "gateway.toml")

    async def _send(self, opened: dict[str, Gateway], stop: asyncio.Event, within_s: float) -> int:
        collect, climate = self.devices

        def ready() -> bool:
            if set(opened) != set(self.devices):
                return False
            probe = opened[climate].status.sources["house-1-probe"]
            connected = all(g.fleet.connected.is_set() for g in opened.values())
            return connected and bool(probe.connected)

        await _until(ready, "the gateways to connect", stop, within_s)
        packing = (
            "step,products,parents,location,count,house,grade,eggs_per_case\n"
            f"commissioning,{self.lot.path},,gansu-hens-01/house-1,21600,1,,\n"
            f"commissioning,{' '.join(c.path for c in self.cartons)},{self.lot.path},"
            "gansu-hens-01/packing,,,AA,360\n"
        )
        spool = opened[collect].config.source("packing-line")
        probe_source = opened[climate].config.source("house-1-probe")
        if not isinstance(spool, EventsSource) or not isinstance(probe_source, MqttSource):
            raise ConfigError("the demo's gateway.toml files do not have their sources")
        queue_batch(spool.spool, packing, "packing", tz=zoneinfo.ZoneInfo("Asia/Shanghai"))
        farm = probe_source.broker
        async with aiomqtt.Client(farm.host, farm.port, identifier="demo-am2301") as probe:
            for celsius, humidity in PROBE_VALUES:
                telemetry = {
                    "Time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "AM2301": {"Temperature": celsius, "Humidity": humidity},
                    "TempUnit": "C",
                }
                await probe.publish(PROBE_TOPIC, json.dumps(telemetry).encode(), qos=1)
                await asyncio.sleep(0.2)
        counters = (
            opened[collect].status.sources["packing-line"],
            opened[climate].status.sources["house-1-probe"],
        )
        await _until(
            lambda: counters[0].receipted == 2 and counters[1].receipted == len(PROBE_VALUES),
            "the farm's messages to be receipted",
            stop,
            within_s,
        )
        return sum(c.receipted for c in counters)


def _carry_sequence(old_outbox: Path, config: GatewayConfig, device: str) -> None:
    """Go on from the sequence numbers an earlier demo (one shared outbox file) used."""
    if not old_outbox.exists():
        return
    with Outbox(old_outbox) as old:
        last = old.last_seq(device)
    config.state.mkdir(mode=0o700, parents=True, exist_ok=True)
    with Outbox(outbox_path(config, device)) as outbox:
        outbox.ensure_seq_at_least(device, last)


async def _until(
    condition: Callable[[], bool], what: str, stop: asyncio.Event, within_s: float
) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if stop.is_set():
            raise ConfigError(f"stopped while waiting for {what}")
        if time.monotonic() > deadline:
            raise ConfigError(f"{what}: not within {within_s:g} s")
        await asyncio.sleep(0.05)


def _forged(gateway: Gateway, key: SignerKey, lot: ProductKey) -> bytes:
    """A reading signed by the gateway's key, with one bit of its payload flipped after."""
    seq = gateway.fleet.outbox.last_seq(gateway.device.id)
    reading = Reading(
        device=gateway.device.id,
        seq=seq,
        time=time.time_ns() // 1_000_000,
        products=(lot,),
        sensors=(Sensor("Temperature", 4.0, "CEL"),),
    )
    tampered = bytearray(sign_message(reading, key.signing_key))
    tampered[-70] ^= 0x01  # a bit of the payload, after the signature was made
    return bytes(tampered)
