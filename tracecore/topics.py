"""MQTT topics of the device protocol (design.md, "Device protocol"; docs/protocol.md)."""

from __future__ import annotations

from tracecore.errors import IdentifierError, MalformedMessage
from tracecore.identifiers import parse_device_id

__all__ = [
    "RECEIPT_SUFFIX",
    "TOPIC_PREFIX",
    "UP_SUFFIX",
    "UP_WILDCARD",
    "device_from_up_topic",
    "receipt_topic",
    "up_topic",
]

TOPIC_PREFIX = "agritrace/v1/devices"
UP_SUFFIX = "up"
RECEIPT_SUFFIX = "receipt"
UP_WILDCARD = f"{TOPIC_PREFIX}/+/{UP_SUFFIX}"


def up_topic(device_id: str) -> str:
    """Return the topic a device publishes its messages to (QoS 1)."""
    return f"{TOPIC_PREFIX}/{parse_device_id(device_id)}/{UP_SUFFIX}"


def receipt_topic(device_id: str) -> str:
    """Return the topic the ingest service publishes a device's receipts to."""
    return f"{TOPIC_PREFIX}/{parse_device_id(device_id)}/{RECEIPT_SUFFIX}"


def device_from_up_topic(topic: str) -> str:
    """Return the device id of an up topic.

    Raises :class:`MalformedMessage` for a topic that is not ``agritrace/v1/devices/{id}/up``
    with a valid device id: such a message cannot be attributed to any device.
    """
    prefix, _, rest = topic.rpartition("/")
    head, _, device_id = prefix.rpartition("/")
    if head != TOPIC_PREFIX or rest != UP_SUFFIX:
        raise MalformedMessage(f"topic {topic!r} is not {TOPIC_PREFIX}/{{device}}/{UP_SUFFIX}")
    try:
        return parse_device_id(device_id)
    except IdentifierError as exc:
        raise MalformedMessage(f"topic {topic!r}: {exc}") from exc
