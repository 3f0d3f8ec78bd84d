"""Signed messages through real brokers: the embedded amqtt default and mosquitto."""

from __future__ import annotations

import asyncio
import socket

import aiomqtt
import nacl.signing
import pytest

from tracecore.cose import parse_message, sign_message
from tracecore.errors import ConfigError
from tracecore.identifiers import ProductKey
from tracecore.message import Reading, Sensor
from tracecore.mqtt import BrokerAddress, embedded_broker
from tracecore.topics import UP_WILDCARD, device_from_up_topic, up_topic

LOT = ProductKey.parse("01/06901234567892/10/L2611")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _round_trip(address: BrokerAddress, count: int) -> list[tuple[str, bytes]]:
    """Publish ``count`` signed readings at QoS 1 and return what a subscriber receives."""
    key = nacl.signing.SigningKey(bytes(range(32)))
    device = f"probe-{_free_port()}"
    sent = [
        sign_message(
            Reading(
                device=device,
                seq=seq,
                time=1_790_000_000_000 + seq,
                products=(LOT,),
                sensors=(Sensor("Temperature", 4.25 + seq / 8, "CEL"),),
            ),
            key,
        )
        for seq in range(1, count + 1)
    ]
    received: list[tuple[str, bytes]] = []
    async with aiomqtt.Client(address.host, address.port, identifier=f"sub-{device}") as sub:
        await sub.subscribe(UP_WILDCARD, qos=1)
        async with aiomqtt.Client(address.host, address.port, identifier=f"pub-{device}") as pub:
            for raw in sent:
                await pub.publish(up_topic(device), raw, qos=1)
        async with asyncio.timeout(10):
            async for message in sub.messages:
                assert isinstance(message.payload, bytes)
                if device_from_up_topic(message.topic.value) == device:
                    received.append((message.topic.value, message.payload))
                if len(received) == count:
                    break
    assert [raw for _, raw in received] == sent
    for topic, raw in received:
        signed = parse_message(raw)
        signed.verify(bytes(key.verify_key))
        assert device_from_up_topic(topic) == signed.message.device
    return received


def test_embedded_broker_carries_signed_messages_unchanged() -> None:
    """Through the embedded amqtt broker, signed messages arrive byte-identical and verify."""

    async def scenario() -> None:
        address = BrokerAddress("127.0.0.1", _free_port())
        async with embedded_broker(address):
            await _round_trip(address, 20)

    asyncio.run(scenario())


@pytest.mark.mosquitto
def test_mosquitto_carries_signed_messages_unchanged(mosquitto: BrokerAddress) -> None:
    """Through mosquitto, signed messages arrive byte-identical, in order, and verify."""
    asyncio.run(_round_trip(mosquitto, 200))


def test_embedded_broker_reports_a_busy_port() -> None:
    """Starting the embedded broker on a port in use is a clear ConfigError."""

    async def scenario() -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            address = BrokerAddress("127.0.0.1", busy.getsockname()[1])
            with pytest.raises(ConfigError, match="cannot start the embedded MQTT broker"):
                async with embedded_broker(address):
                    pass

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1884", BrokerAddress("127.0.0.1", 1884)),
        ("mqtt://broker.example", BrokerAddress("broker.example", 1883)),
        ("mqtt://dev:pw@broker.lan:1883", BrokerAddress("broker.lan", 1883, "dev", "pw")),
    ],
)
def test_broker_urls_parse(url: str, expected: BrokerAddress) -> None:
    """mqtt:// URLs give host, port (default 1883) and credentials."""
    assert BrokerAddress.parse(url) == expected


@pytest.mark.parametrize(
    "url", ["http://h:1883", "mqtt://", "mqtt://h:99999", "mqtt://h/topic", "h:1883"]
)
def test_bad_broker_urls_are_config_errors(url: str) -> None:
    """A broker URL that is not mqtt://host[:port] is a ConfigError."""
    with pytest.raises(ConfigError):
        BrokerAddress.parse(url)


def test_broker_url_hides_the_password() -> None:
    """Printing a broker address never shows its password."""
    assert "pw" not in str(BrokerAddress.parse("mqtt://dev:pw@h:1883"))
