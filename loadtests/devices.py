"""Device traffic for locust: each user is a device gateway publishing signed readings over MQTT.

Every user registers its own device (a fresh Ed25519 key) through the registry API, commissions
a lot, then publishes a signed reading about it every ``AGRITRACE_LOAD_DEVICE_WAIT`` seconds
(QoS 1, the wire format of docs/protocol.md). It subscribes to its receipt topic; the time from
publishing a reading to holding its receipt, verified against the log key, is reported to
locust as the request ``MQTT receipt``. A receipt that does not verify, or none within 30 s,
is a failure. Run headless against ``agritrace serve`` (or ingest + API)::

    AGRITRACE_LOAD_API=http://127.0.0.1:8000 AGRITRACE_LOAD_ADMIN_TOKEN=... \\
    AGRITRACE_LOAD_BROKER=mqtt://127.0.0.1:1883 \\
    locust -f loadtests/devices.py --headless -u 50 -r 10 -t 60s DeviceUser

Settings: ``AGRITRACE_LOAD_PARTY`` (the farm the devices belong to, created if missing; default
``load-farm``), ``AGRITRACE_LOAD_DEVICE_WAIT`` (seconds between readings; default 1).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from typing import Any, Final

import httpx
import paho.mqtt.client as paho
from locust import User, constant, events, task

from tracecore.cose import parse_message, sign_message
from tracecore.identifiers import ProductKey
from tracecore.keys import VerifierKey, generate_signer
from tracecore.message import Event, Reading, Sensor
from tracecore.mqtt import BrokerAddress
from tracecore.receipt import parse_receipt
from tracecore.topics import receipt_topic, up_topic

__all__ = ["DeviceUser"]

_GTIN: Final = "09506000134352"
_TIMEOUT_S: Final = 30.0


def _setting(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"set {name} (see loadtests/devices.py)")
    return value


class DeviceUser(User):
    """One device: registers, commissions a lot, then publishes readings and awaits receipts."""

    wait_time = constant(float(os.environ.get("AGRITRACE_LOAD_DEVICE_WAIT", "1")))

    def on_start(self) -> None:
        """Register the device, connect to the broker, commission the device's lot."""
        api = _setting("AGRITRACE_LOAD_API", "http://127.0.0.1:8000").rstrip("/")
        auth = {"Authorization": f"Bearer {_setting('AGRITRACE_LOAD_ADMIN_TOKEN')}"}
        party = _setting("AGRITRACE_LOAD_PARTY", "load-farm")
        self.device = f"load-{secrets.token_hex(6)}"
        self.key = generate_signer(self.device)
        with httpx.Client(base_url=api, headers=auth, timeout=30) as http:
            http.post("/v1/parties", json={"id": party, "name": "Load farm", "kind": "farm"})
            reply = http.post(
                "/v1/devices",
                json={"id": self.device, "party": party, "public_key": _b64(self.key.public_key)},
            )
            reply.raise_for_status()
            self.log_key = VerifierKey.parse(http.get("/v1/log/vkey").text.strip())
        self.lot = ProductKey.from_parts(_GTIN, lot=f"LD{secrets.token_hex(4).upper()}")
        self.seq = 0
        self.sent: dict[int, tuple[float, bytes]] = {}
        self.lock = threading.Lock()
        broker = BrokerAddress.parse(_setting("AGRITRACE_LOAD_BROKER", "mqtt://127.0.0.1:1883"))
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.device)
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password)
        self.client.on_message = self._on_receipt
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.subscribe(receipt_topic(self.device), qos=1)
        self.client.loop_start()
        now = time.time_ns() // 1_000_000
        self._publish(Event(self.device, self._next(), now, (self.lot,), "commissioning"))
        time.sleep(1.0)  # the readings name the lot: let its commissioning be logged first

    def on_stop(self) -> None:
        """Wait up to 10 s for the last receipts, disconnect, count the missing as failures."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self.lock:
                if not self.sent:
                    break
            time.sleep(0.1)  # cooperative: locust runs users as gevent greenlets
        self.client.loop_stop()
        self.client.disconnect()
        with self.lock:
            missing = len(self.sent)
            self.sent.clear()
        for _ in range(missing):
            self._fire(0.0, RuntimeError("no receipt before the end of the run"))

    @task
    def reading(self) -> None:
        """Sign and publish one temperature reading of the device's lot."""
        now = time.time_ns() // 1_000_000
        sensors = (Sensor("Temperature", 4.0 + (self.seq % 10) / 10, "CEL"),)
        self._publish(Reading(self.device, self._next(), now, (self.lot,), sensors))
        self._expire()

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _publish(self, message: Event | Reading) -> None:
        raw = sign_message(message, self.key.signing_key)
        with self.lock:
            self.sent[message.seq] = (time.perf_counter(), raw)
        self.client.publish(up_topic(self.device), raw, qos=1)

    def _on_receipt(self, _client: Any, _userdata: Any, message: Any) -> None:
        try:
            receipt = parse_receipt(message.payload)
            receipt.verify(self.log_key.public_key)
        except Exception as exc:  # noqa: BLE001 (any bad receipt is a failure to report)
            self._fire(0.0, exc)
            return
        with self.lock:
            found = self.sent.pop(receipt.receipt.seq, None)
        if found is None:
            return  # a receipt re-sent for a message already counted
        started, raw = found
        if not receipt.matches(parse_message(raw)):
            self._fire(0.0, RuntimeError(f"receipt {receipt.receipt.seq} names other bytes"))
            return
        self._fire((time.perf_counter() - started) * 1000, None)

    def _expire(self) -> None:
        cutoff = time.perf_counter() - _TIMEOUT_S
        with self.lock:
            late = [seq for seq, (at, _) in self.sent.items() if at < cutoff]
            for seq in late:
                del self.sent[seq]
        for seq in late:
            self._fire(_TIMEOUT_S * 1000, RuntimeError(f"no receipt for seq {seq}"))

    def _fire(self, ms: float, exc: Exception | None) -> None:
        events.request.fire(
            request_type="MQTT",
            name="receipt",
            response_time=ms,
            response_length=0,
            exception=exc,
            context={},
        )


def _b64(data: bytes) -> str:
    import base64  # noqa: PLC0415 (only registration needs it)

    return base64.b64encode(data).decode("ascii")
