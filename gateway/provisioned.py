"""A gateway started from its provisioning file: connect, send, wait for the verified receipt.

What a farm's real gateway does after onboarding (docs/gateway.md): it reads the provisioning
file the farm downloaded (:class:`tracecore.provisioning.Provisioning`) and its own key from its
key directory (made there by ``agritrace gateway-key``), checks that the file was made for that
key (the fingerprints agree), connects to the broker the file names, pins the log key the file
names, and sends signed messages through the persistent outbox (:class:`gateway.runtime.Fleet`)
until each has a receipt that verifies under that key. ``agritrace sim send`` runs it once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.outbox import Outbox
from gateway.runtime import Fleet, load_or_create_device_key
from tracecore.errors import ConfigError
from tracecore.identifiers import ProductKey
from tracecore.keys import VerifierKey, device_fingerprint, read_key_file
from tracecore.message import Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.provisioning import Provisioning

__all__ = ["Sent", "send_from_provisioning"]


@dataclass(frozen=True, slots=True)
class Sent:
    """A message the gateway sent and the log receipted: its sequence number and log index."""

    device: str
    seq: int
    log_index: int


async def send_from_provisioning(
    provisioning: Provisioning,
    keys_dir: Path,
    products: Sequence[ProductKey],
    *,
    celsius: float | None = None,
    step: str | None = None,
    timeout_s: float = 30.0,
    broker: BrokerAddress | None = None,
) -> Sent:
    """Send one reading (``celsius``) or event (``step``) as the provisioned device; return it
    once its receipt verified under the file's log key.

    The device's key must already be in ``keys_dir`` (``agritrace gateway-key``) and match the
    file's fingerprint; the outbox (``keys_dir/{device}.outbox``) keeps the sequence numbers
    across runs. ``broker`` overrides the file's (with credentials, say).

    Raises:
        ConfigError: no key, a key of another fingerprint, neither or both of celsius/step.
        TimeoutError: no verified receipt within ``timeout_s``.
    """
    if (celsius is None) == (step is None):
        raise ConfigError("send either a temperature reading (celsius) or an event (step)")
    device = provisioning.device
    if not (keys_dir / f"{device}.key").exists():
        raise ConfigError(f"no key of {device} in {keys_dir}: run agritrace gateway-key there")
    key = read_key_file(keys_dir, device)
    if device_fingerprint(key.public_key) != provisioning.fingerprint:
        raise ConfigError(
            f"the provisioning file is for the key {provisioning.fingerprint}, but this "
            f"gateway's key is {device_fingerprint(key.public_key)}: do not use it"
        )
    log_key = VerifierKey.parse(provisioning.log_vkey).public_key
    address = broker or BrokerAddress.parse(provisioning.broker)
    with Outbox(keys_dir / f"{device}.outbox") as outbox:
        fleet = Fleet(address, outbox, log_key, client_id=f"gateway-{device}")
        gateway = fleet.add_device(device, load_or_create_device_key(keys_dir, device))
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(fleet.run(stop), name="gateway")
            try:
                if celsius is not None:
                    sensors = [Sensor("Temperature", celsius, "CEL")]
                    seq, _ = await gateway.send_reading(products, sensors)
                else:
                    seq, _ = await gateway.send_event(products, str(step))
                async with asyncio.timeout(timeout_s):
                    await fleet.wait_settled()
            finally:
                stop.set()
        receipts = [r for r in outbox.receipts(device) if r.seq == seq]
    return Sent(device, seq, receipts[0].log_index)
