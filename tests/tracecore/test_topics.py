"""Tests of tracecore.topics: the MQTT topics of the device protocol."""

from __future__ import annotations

import pytest

from tracecore.errors import IdentifierError, MalformedMessage
from tracecore.topics import UP_WILDCARD, device_from_up_topic, receipt_topic, up_topic


def test_topics_follow_the_protocol() -> None:
    """Up and receipt topics are agritrace/v1/devices/{id}/up and /receipt."""
    assert up_topic("hens01-gw") == "agritrace/v1/devices/hens01-gw/up"
    assert receipt_topic("hens01-gw") == "agritrace/v1/devices/hens01-gw/receipt"
    assert UP_WILDCARD == "agritrace/v1/devices/+/up"


def test_device_is_read_back_from_the_up_topic() -> None:
    """The device id of an up topic is the fourth level."""
    assert device_from_up_topic(up_topic("truck-7")) == "truck-7"


@pytest.mark.parametrize(
    "topic",
    [
        "agritrace/v1/devices/truck-7/receipt",
        "agritrace/v2/devices/truck-7/up",
        "agritrace/v1/devices/up",
        "agritrace/v1/devices/a/b/up",
        "agritrace/v1/devices/Truck-7/up",
        "agritrace/v1/devices//up",
        "/agritrace/v1/devices/truck-7/up",
    ],
)
def test_foreign_topics_are_malformed(topic: str) -> None:
    """A topic that names no valid device cannot be attributed and is malformed."""
    with pytest.raises(MalformedMessage):
        device_from_up_topic(topic)


def test_topics_refuse_invalid_device_ids() -> None:
    """A device id with MQTT wildcards or capitals never becomes a topic."""
    for bad in ("+", "#", "a/b", "AB-1"):
        with pytest.raises(IdentifierError):
            up_topic(bad)
