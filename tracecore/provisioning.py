"""The provisioning file: what a gateway needs to start sending, and nothing secret.

A farm registers a device (the console's ``/console/devices/new`` or ``agritrace device add``)
with the public key its gateway made (``agritrace gateway-key``); the answer is this JSON
document, which the gateway reads at start (docs/gateway.md). It holds the device id, the broker
URL, the log's verifier key (pinned: receipts are trusted only under it), the MQTT topics, the
API base URL and the key's fingerprint, so the gateway can check that the file was made for
its own key. The private key is never in it: it stays in the gateway's key directory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Final

from tracecore.errors import ConfigError, KeyFileError
from tracecore.identifiers import parse_device_id
from tracecore.keys import VerifierKey
from tracecore.mqtt import BrokerAddress
from tracecore.topics import receipt_topic, up_topic

__all__ = ["PROVISIONING_VERSION", "Provisioning"]

#: The ``version`` field of the document; a gateway refuses another.
PROVISIONING_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Provisioning:
    """One device's provisioning document (docs/gateway.md, "The provisioning file")."""

    device: str
    broker: str
    log_vkey: str
    up_topic: str
    receipt_topic: str
    api: str
    fingerprint: str
    version: int = PROVISIONING_VERSION

    @classmethod
    def make(
        cls, device: str, broker: str, log_vkey: str, api: str, fingerprint: str
    ) -> Provisioning:
        """Build the document of ``device``; the topics follow from its id (docs/protocol.md §1)."""
        return cls(
            device=device,
            broker=broker,
            log_vkey=log_vkey,
            up_topic=up_topic(device),
            receipt_topic=receipt_topic(device),
            api=api.rstrip("/"),
            fingerprint=fingerprint,
        )

    def to_json(self) -> str:
        """The document as indented JSON text (keys sorted), ending with a newline."""
        return json.dumps(asdict(self), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def parse(cls, text: str | bytes) -> Provisioning:
        """Read a provisioning document; raises :class:`ConfigError` saying what is wrong.

        Every field must be present and consistent: a known version, a valid device id, an
        ``mqtt://`` broker URL, a vkey that parses, and the topics of that device.
        """
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"the provisioning file is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError("the provisioning file must hold one JSON object")
        fields = {
            "device",
            "broker",
            "log_vkey",
            "up_topic",
            "receipt_topic",
            "api",
            "fingerprint",
            "version",
        }
        missing = sorted(fields - data.keys())
        if missing:
            raise ConfigError(f"the provisioning file lacks {', '.join(missing)}")
        if data["version"] != PROVISIONING_VERSION:
            raise ConfigError(f"provisioning file version {data['version']!r} is not supported")
        if not all(isinstance(data[name], str) for name in fields - {"version"}):
            raise ConfigError("every field of the provisioning file but version is text")
        try:
            device = parse_device_id(data["device"])
            VerifierKey.parse(data["log_vkey"])
        except (KeyFileError, ValueError) as exc:
            raise ConfigError(f"the provisioning file is wrong: {exc}") from exc
        BrokerAddress.parse(data["broker"])
        made = cls.make(device, data["broker"], data["log_vkey"], data["api"], data["fingerprint"])
        if (data["up_topic"], data["receipt_topic"]) != (made.up_topic, made.receipt_topic):
            raise ConfigError(f"the provisioning file's topics are not those of device {device}")
        return made
