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
``quantityList`` as an ``epcClass``.

What the signed ``data`` of an event says goes into standard fields where EPCIS has one: a
lot's ``count`` or ``net_kg`` is its ``quantity`` (``uom`` ``KGM`` for kilograms), a
shipping's ``destination`` a ``sourceList`` and ``destinationList`` (owning parties), a lab
test's ``report`` a ``bizTransactionList`` entry of type ``testres``, a weighing
(``hot_carcass_kg``, or ``net_kg`` of serialized products) a ``sensorReport`` of type
``Mass``. The signed data itself is kept whole as ``agritrace:data``, every key of it
namespaced (:func:`data_term`), so that JSON-LD processors and RDF stores keep every value.

Extension fields use the prefix ``agritrace`` (:data:`AGRITRACE_CONTEXT`, declared in each
document's ``@context``, EPCIS 2.0 §6.6: user extensions). Every event carries
``agritrace:logIndex``, the log entry it comes from, so each can be proven with the product's
evidence bundle; its ``eventID`` is the CBV 2.0 event hash of its content
(:mod:`tracecore.epcis_hash`), which any receiver can recompute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from tracecore.epcis_hash import event_hash
from tracecore.identifiers import ProductKey
from tracecore.verdict import SensorPoint, Story, StoryEvent

__all__ = [
    "AGRITRACE_CONTEXT",
    "EPCIS_CONTEXT",
    "GS1_RESOLVER",
    "NAMESPACE",
    "PREFIX",
    "data_term",
    "epcis_collection",
    "epcis_document",
]

EPCIS_CONTEXT: Final = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
#: The extension namespace of agritrace fields (EPCIS 2.0 §6.6: user extensions).
NAMESPACE: Final = "https://agritrace.dev/epcis/"
PREFIX: Final = "agritrace"
#: agritrace's JSON-LD context, inline in every document after GS1's: the prefix of every
#: extension field. Only a prefix, no term definitions: a document stays readable offline
#: (no context to fetch but GS1's) and by tools that take inline contexts as prefix maps, as
#: GS1's reference event hash generator does.
AGRITRACE_CONTEXT: Final[Mapping[str, str]] = {PREFIX: NAMESPACE}
GS1_RESOLVER: Final = "https://id.gs1.org"

_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
#: Signed data fields that are the quantity of a lot (EPCIS quantityElement: quantity, uom).
_QUANTITIES: Final = (("count", None), ("net_kg", "KGM"))
_QUANTITY_NAMES: Final = frozenset(name for name, _ in _QUANTITIES)
#: Signed data fields that are measurements (EPCIS sensorReport: type, value, uom).
_MEASUREMENTS: Final = {"hot_carcass_kg": ("Mass", "KGM"), "net_kg": ("Mass", "KGM")}


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


def _with_id(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with its CBV 2.0 event hash ID as ``eventID``, right after ``type``."""
    event_id = event_hash(body, AGRITRACE_CONTEXT)
    return {"type": body["type"], "eventID": event_id, **body}


def _party(party: str) -> str:
    return f"{NAMESPACE}party/{_safe(party)}"


def _number(value: object) -> int | float | None:
    """A JSON number of signed data (not a boolean), or None."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _quantity(data: Mapping[str, object]) -> dict[str, Any]:
    """``quantity`` (and ``uom``) of a lot from its event's ``count`` or ``net_kg``."""
    for name, uom in _QUANTITIES:
        value = _number(data.get(name))
        if value is not None:
            return {"quantity": value, "uom": uom} if uom else {"quantity": value}
    return {}


def _standard_fields(event: StoryEvent, body: dict[str, Any], lots: str) -> None:
    """Standard EPCIS fields for what the signed ``data`` says (the data itself is kept too).

    ``lots`` names the quantity list of the event's products (``quantityList`` or
    ``outputQuantityList``).
    """
    data: Mapping[str, object] = event.data or {}
    classes = body.get(lots, [])
    quantity = _quantity(data) if len(classes) == 1 else {}
    if quantity:
        classes[0].update(quantity)
    destination = data.get("destination")
    if event.step == "shipping" and isinstance(destination, str):
        body["sourceList"] = [{"source": _party(event.party), "type": "owning_party"}]
        body["destinationList"] = [{"destination": _party(destination), "type": "owning_party"}]
    test = data.get("test")
    if isinstance(test, Mapping) and isinstance(test.get("report"), str):
        lab = test.get("lab")
        issuer = f"{_safe(lab)}/" if isinstance(lab, str) else ""
        document = f"{NAMESPACE}report/{issuer}{_safe(test['report'])}"
        body["bizTransactionList"] = [{"bizTransaction": document, "type": "testres"}]
    reports = [
        {"type": kind, "value": value, "uom": uom}
        for name, (kind, uom) in _MEASUREMENTS.items()
        if (value := _number(data.get(name))) is not None
        and not (quantity and name in _QUANTITY_NAMES)
    ]
    if reports:
        body["sensorElementList"] = [
            {
                "sensorMetadata": {"time": body["eventTime"], "deviceID": _device(event.device)},
                "sensorReport": reports,
            }
        ]


def _device(device: str) -> str:
    return f"{NAMESPACE}device/{_safe(device)}"


def _business_event(event: StoryEvent) -> dict[str, Any]:
    common: dict[str, Any] = {
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
        lots = "outputQuantityList"
    else:
        body = {
            "type": "ObjectEvent",
            **common,
            "action": "ADD" if event.step == "commissioning" else "OBSERVE",
            "epcList": outputs["epcs"],
        }
        if outputs["classes"]:
            body["quantityList"] = outputs["classes"]
        lots = "quantityList"
    _standard_fields(event, body, lots)
    body[f"{PREFIX}:logIndex"] = event.index
    body[f"{PREFIX}:device"] = event.device
    body[f"{PREFIX}:party"] = event.party
    if event.data:
        body[f"{PREFIX}:data"] = _extension(event.data)
    return _with_id(body)


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
            "eventTime": _time(first.time),
            "eventTimeZoneOffset": "+00:00",
            "action": "OBSERVE",
            "bizStep": "sensor_reporting",
            "epcList": ids["epcs"],
            "sensorElementList": [
                {
                    "sensorMetadata": {
                        "time": _time(first.time),
                        "deviceID": _device(first.device),
                    },
                    "sensorReport": [
                        {"type": p.type, "value": p.value, "uom": p.uom} for p in group
                    ],
                }
            ],
        }
        if ids["classes"]:
            body["quantityList"] = ids["classes"]
        body[f"{PREFIX}:logIndex"] = index
        body[f"{PREFIX}:device"] = first.device
        events.append(_with_id(body))
    return events


def data_term(key: str) -> str:
    """The JSON key of a signed ``data`` key in an export: ``agritrace:`` and the key, with
    what an IRI may not hold raw percent-encoded (RFC 3986 unreserved characters and printable
    non-ASCII letters kept: ``hot_carcass_kg`` stays, ``net kg`` is ``net%20kg``).
    """
    return f"{PREFIX}:" + "".join(
        ch
        if ch in _UNRESERVED or (ord(ch) > 0x7F and ch.isprintable() and not ch.isspace())
        else "".join(f"%{b:02X}" for b in ch.encode("utf-8"))
        for ch in key
    )


def _extension(value: object) -> Any:
    """Signed ``data`` as an extension value: every map key namespaced (:func:`data_term`)."""
    if isinstance(value, Mapping):
        return {data_term(str(k)): _extension(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_extension(v) for v in value]
    return value


def _safe(text: str) -> str:
    """Percent-encode ``text`` for a URI path segment (RFC 3986 §2.3 unreserved kept)."""
    return "".join(
        ch if ch in _UNRESERVED else "".join(f"%{b:02X}" for b in ch.encode("utf-8")) for ch in text
    )


def _story_events(story: Story) -> list[dict[str, Any]]:
    """The EPCIS events of ``story``: its business events and its readings."""
    return [_business_event(e) for e in story.events] + _reading_events(list(story.readings))


def _in_order(events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda e: (e["eventTime"], e[f"{PREFIX}:logIndex"], e["eventID"]))


def _document(created_ms: int, fields: Mapping[str, Any], events: list[Any]) -> dict[str, Any]:
    return {
        "@context": [EPCIS_CONTEXT, dict(AGRITRACE_CONTEXT)],
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": _time(created_ms),
        **fields,
        "epcisBody": {"eventList": events},
    }


def epcis_document(story: Story, *, created_ms: int, verdict: str, log_size: int) -> dict[str, Any]:
    """Return the EPCIS 2.0 document of ``story`` (events and readings in time order).

    ``created_ms`` is the document's creationDate; ``verdict`` and ``log_size`` (the checkpoint
    the story was verified against) are recorded as agritrace extension fields.
    """
    fields = {
        f"{PREFIX}:product": story.product,
        f"{PREFIX}:verdict": verdict,
        f"{PREFIX}:logSize": log_size,
    }
    return _document(created_ms, fields, _in_order(_story_events(story)))


def epcis_collection(
    products: Sequence[tuple[str, str]],
    stories: Iterable[Story],
    *,
    created_ms: int,
    log_size: int,
) -> dict[str, Any]:
    """Return one EPCIS 2.0 document of several products' ``stories``, each event once.

    Products that share events (cases packed from one lot carry the lot's story) would repeat
    them; an event is kept once by its ``eventID``, the hash of its content, so only the same
    event is merged. ``products`` lists every product the document answers for with its
    verdict (``agritrace:products``, including products without a story); ``log_size`` is
    the checkpoint the stories were verified against.
    """
    # Each distinct event is mapped (and hashed) once: stories repeat their ancestors' events.
    business: dict[int, list[StoryEvent]] = {}
    readings: dict[int, list[tuple[SensorPoint, ...]]] = {}
    for story in stories:
        for event in story.events:
            same = business.setdefault(event.index, [])
            if event not in same:
                same.append(event)
        grouped: dict[int, list[SensorPoint]] = {}
        for point in story.readings:
            grouped.setdefault(point.index, []).append(point)
        for index, points in grouped.items():
            same_reading = readings.setdefault(index, [])
            if tuple(points) not in same_reading:
                same_reading.append(tuple(points))
    events: dict[str, dict[str, Any]] = {}
    for candidates in business.values():
        for event in candidates:
            body = _business_event(event)
            events.setdefault(body["eventID"], body)
    for groups in readings.values():
        for group in groups:
            for body in _reading_events(list(group)):
                events.setdefault(body["eventID"], body)
    fields = {
        f"{PREFIX}:products": [
            {f"{PREFIX}:product": product, f"{PREFIX}:verdict": verdict}
            for product, verdict in products
        ],
        f"{PREFIX}:logSize": log_size,
    }
    return _document(created_ms, fields, _in_order(events.values()))
