"""EPCIS 2.0 JSON-LD documents of a product's verified story (GS1 EPCIS 2.0, CBV 2.0).

Pure: :func:`epcis_document` maps a :class:`~tracecore.verdict.Story` to an ``EPCISDocument``.

* an event without parents is an ``ObjectEvent``: action ``ADD`` for ``commissioning`` (the
  product comes into being), ``OBSERVE`` otherwise; its ``bizStep`` is the CBV step;
* an event with parents (packing cartons from a lot, cutting a carcass) is a
  ``TransformationEvent`` with the parents as inputs and the new products as outputs
  (EPCIS 2.0 §7.4.6);
* a sensor reading is an ``ObjectEvent`` with ``bizStep`` ``sensor_reporting`` and a
  ``sensorElementList`` (EPCIS 2.0 §7.3.7: sensorMetadata.time and deviceID, one
  sensorReport per sensor with its EPCIS type and UN/CEFACT unit).

Identifiers are GS1 Digital Link URIs on ``id.gs1.org`` (EPCIS 2.0 §8.2 allows them in place of
EPC URNs): a serialized product goes in ``epcList``, a lot (a class of products) in
``quantityList`` as an ``epcClass``. Every event carries ``agritrace:logIndex``, the log entry
it comes from, so each can be proven with the product's evidence bundle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from tracecore.identifiers import ProductKey
from tracecore.verdict import SensorPoint, Story, StoryEvent

__all__ = ["EPCIS_CONTEXT", "GS1_RESOLVER", "NAMESPACE", "epcis_document"]

EPCIS_CONTEXT: Final = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
#: The extension namespace of agritrace fields (EPCIS 2.0 §6.6: user extensions).
NAMESPACE: Final = "https://agritrace.dev/epcis/"
GS1_RESOLVER: Final = "https://id.gs1.org"


def _time(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, as EPCIS eventTime wants."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _identify(paths: Iterable[str]) -> dict[str, list[Any]]:
    """Split product keys into an ``epcList`` (serials) and a ``quantityList`` (lots)."""
    epcs: list[str] = []
    classes: list[dict[str, str]] = []
    for path in paths:
        key = ProductKey.parse_canonical(path)
        uri = key.uri(GS1_RESOLVER)
        if key.serial is None:
            classes.append({"epcClass": uri})
        else:
            epcs.append(uri)
    return {"epcs": epcs, "classes": classes}


def _event_id(kind: str, index: int, detail: str = "") -> str:
    # EPCIS 2.0 §7.3.1: eventID is a URI; ni: (RFC 6920) names it by the entry it comes from.
    digest = hashlib.sha256(f"agritrace/{kind}/{index}/{detail}".encode()).hexdigest()
    return f"ni:///sha-256;{digest}?ver=CBV2.0"


def _business_event(event: StoryEvent) -> dict[str, Any]:
    common: dict[str, Any] = {
        "eventID": _event_id("event", event.index),
        "eventTime": _time(event.time),
        "eventTimeZoneOffset": "+00:00",
        "bizStep": event.step,
    }
    if event.location:
        common["readPoint"] = {"id": f"{NAMESPACE}location/{_safe(event.location)}"}
    outputs = _identify(event.products)
    if event.parents:
        inputs = _identify(event.parents)
        body: dict[str, Any] = {"type": "TransformationEvent", **common}
        if inputs["epcs"]:
            body["inputEPCList"] = inputs["epcs"]
        if inputs["classes"]:
            body["inputQuantityList"] = inputs["classes"]
        if outputs["epcs"]:
            body["outputEPCList"] = outputs["epcs"]
        if outputs["classes"]:
            body["outputQuantityList"] = outputs["classes"]
    else:
        body = {
            "type": "ObjectEvent",
            **common,
            "action": "ADD" if event.step == "commissioning" else "OBSERVE",
            "epcList": outputs["epcs"],
        }
        if outputs["classes"]:
            body["quantityList"] = outputs["classes"]
    destination = (event.data or {}).get("destination")
    if event.step == "shipping" and isinstance(destination, str):
        body["destinationList"] = [
            {"type": "owning_party", "destination": f"{NAMESPACE}party/{_safe(destination)}"}
        ]
    body["agritrace:logIndex"] = event.index
    body["agritrace:device"] = event.device
    body["agritrace:party"] = event.party
    if event.data:
        body["agritrace:data"] = _plain(event.data)
    return body


def _reading_events(points: list[SensorPoint]) -> list[dict[str, Any]]:
    """One sensor_reporting ObjectEvent per signed reading (all its sensors in one report)."""
    by_entry: dict[int, list[SensorPoint]] = {}
    for point in points:
        by_entry.setdefault(point.index, []).append(point)
    events = []
    for index, group in sorted(by_entry.items()):
        first = group[0]
        ids = _identify(first.products)
        body: dict[str, Any] = {
            "type": "ObjectEvent",
            "eventID": _event_id("reading", index),
            "eventTime": _time(first.time),
            "eventTimeZoneOffset": "+00:00",
            "action": "OBSERVE",
            "bizStep": "sensor_reporting",
            "epcList": ids["epcs"],
            "sensorElementList": [
                {
                    "sensorMetadata": {
                        "time": _time(first.time),
                        "deviceID": f"{NAMESPACE}device/{_safe(first.device)}",
                    },
                    "sensorReport": [
                        {"type": p.type, "value": p.value, "uom": p.uom} for p in group
                    ],
                }
            ],
            "agritrace:logIndex": index,
            "agritrace:device": first.device,
        }
        if ids["classes"]:
            body["quantityList"] = ids["classes"]
        events.append(body)
    return events


def _plain(value: object) -> Any:
    """Signed ``data`` (frozen maps and tuples) as plain JSON values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _safe(text: str) -> str:
    """Percent-encode ``text`` for a URI path segment (RFC 3986 §2.3 unreserved kept)."""
    unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    return "".join(
        ch if ch in unreserved else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in text
    )


def epcis_document(story: Story, *, created_ms: int, verdict: str, log_size: int) -> dict[str, Any]:
    """Return the EPCIS 2.0 document of ``story`` (events and readings in time order).

    ``created_ms`` is the document's creationDate; ``verdict`` and ``log_size`` (the checkpoint
    the story was verified against) are recorded as agritrace extension fields.
    """
    events = [_business_event(e) for e in story.events]
    events += _reading_events(list(story.readings))
    events.sort(key=lambda e: (e["eventTime"], e["agritrace:logIndex"]))
    return {
        "@context": [EPCIS_CONTEXT, {"agritrace": NAMESPACE}],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": _time(created_ms),
        "agritrace:product": story.product,
        "agritrace:verdict": verdict,
        "agritrace:logSize": log_size,
        "epcisBody": {"eventList": events},
    }
