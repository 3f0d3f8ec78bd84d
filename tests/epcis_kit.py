"""Checks of EPCIS exports with other people's tools: GS1's reference event hash generator,
a JSON-LD processor (pyld) and the published EPCIS 2.0 JSON schema.

Importable as ``epcis_kit`` (tests/ is on ``sys.path``). Everything runs offline: the one
remote JSON-LD context an export names, GS1's EPCIS 2.0 context, is served from the copy that
the ``epcis-event-hash-generator`` package ships (its package data); any other URL fails the
test instead of reaching the network. agritrace's own context is inline in every document.

* :func:`reference_hashes`: the event hash IDs that GS1's reference implementation computes;
* :func:`expand`: the document expanded by pyld (JSON-LD 1.1);
* :func:`check_export`: every check an export must pass, given the signed messages its events
  come from (by log index).
"""

from __future__ import annotations

import copy
import importlib.resources
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import jsonschema
from epcis_event_hash_generator import hash_generator, json_to_py
from pyld import jsonld

from tracecore.epcis import EPCIS_CONTEXT, NAMESPACE, PREFIX, data_term
from tracecore.identifiers import ProductKey
from tracecore.message import DeviceMessage, Event, Reading

SCHEMA: Final = (
    Path(__file__).parents[2] / "shared" / "vectors" / "epcis" / "EPCIS-JSON-Schema.json"
)
EPCIS: Final = "https://ref.gs1.org/epcis/"
CBV: Final = "https://ref.gs1.org/cbv/"

# The reference generator's package data: GS1's EPCIS 2.0.0 context, named by its SHA-256.
_GS1_CONTEXT_FILE: Final = "e532647e8eb371379b8b0e8602d8981c8566bc60f7351f22c76a5bc865962008.jsonld"


def _gs1_context() -> Any:
    resource = importlib.resources.files("epcis_event_hash_generator") / _GS1_CONTEXT_FILE
    return json.loads(resource.read_text(encoding="utf-8"))


def offline_loader(url: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A pyld document loader that knows GS1's EPCIS 2.0 context and nothing else."""
    if url != EPCIS_CONTEXT:
        raise AssertionError(f"a JSON-LD processor would fetch {url}: exports must not need it")
    return {
        "contentType": "application/ld+json",
        "contextUrl": None,
        "documentUrl": url,
        "document": _gs1_context(),
    }


# The reference generator installs a loader that falls back to the network: use ours instead.
jsonld.set_document_loader(offline_loader)


def validator() -> jsonschema.Draft7Validator:
    """The EPCIS 2.0 JSON schema from ../shared/vectors, with format checks on (``uri``: EPCIS
    2.0 user extension fields must be namespaced)."""
    return jsonschema.Draft7Validator(
        json.loads(SCHEMA.read_text()), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


def reference_pre_hashes(document: Mapping[str, Any]) -> list[str]:
    """The pre-hash strings of GS1's reference implementation (epcis-event-hash-generator)."""
    json_to_py._namespaces.clear()  # module state: it keeps prefixes of earlier documents
    events = json_to_py.event_list_from_epcis_document_json(copy.deepcopy(dict(document)))
    pre_hashes: list[str] = hash_generator.derive_prehashes_from_events(events, "")
    assert len(pre_hashes) == len(document["epcisBody"]["eventList"]), "the reference failed"
    return pre_hashes


def reference_hashes(document: Mapping[str, Any]) -> list[str]:
    """The event hash IDs of GS1's reference implementation, one per event."""
    hashes: list[str] = hash_generator.calculate_hashes_from_pre_hashes(
        reference_pre_hashes(document)
    )
    return hashes


def expand(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``document`` expanded by pyld, offline."""
    expanded: list[dict[str, Any]] = jsonld.expand(
        copy.deepcopy(dict(document)), {"documentLoader": offline_loader}
    )
    return expanded


def expanded_events(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The expanded events of ``document`` by their eventID (JSON-LD ``@id``)."""
    (top,) = expand(document)
    (body,) = top[EPCIS + "epcisBody"]
    return {event["@id"]: event for event in body[EPCIS + "eventList"]}


def _key(value: object) -> tuple[str, str]:
    """A value as a comparable key that tells 1, 1.0 and True apart."""
    return type(value).__name__, repr(value)


def signed_leaves(value: object, path: tuple[str, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every non-null scalar of signed ``data``, with the expanded property IRIs leading to it
    (list entries share their list's path: JSON-LD sets are unordered)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            iri = NAMESPACE + data_term(key).removeprefix(f"{PREFIX}:")
            yield from signed_leaves(item, (*path, iri))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from signed_leaves(item, path)
    elif value is not None:
        yield (*path, _key(value))


def expanded_leaves(node: object, path: tuple[str, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every literal of an expanded JSON-LD node, with the property IRIs leading to it."""
    if isinstance(node, list):
        for item in node:
            yield from expanded_leaves(item, path)
    elif isinstance(node, Mapping):
        if "@value" in node:
            yield (*path, _key(node["@value"]))
            return
        for key, item in node.items():
            if not key.startswith("@"):
                yield from expanded_leaves(item, (*path, key))


def _ids(node: Mapping[str, Any], *properties: str) -> set[str]:
    found: set[str] = set()
    for prop in properties:
        for item in node.get(EPCIS + prop, []):
            if "@id" in item:
                found.add(item["@id"])
            for element in item.get(EPCIS + "epcClass", []):
                found.add(element["@id"])
    return found


def _literal(node: Mapping[str, Any], iri: str) -> list[Any]:
    return [item["@value"] for item in node.get(iri, []) if "@value" in item]


def check_values_kept(
    event: Mapping[str, Any], node: Mapping[str, Any], signed: DeviceMessage
) -> None:
    """The expanded ``node`` of an exported ``event`` keeps every value of its ``signed``
    message: products, parents, device, step, location, data, sensors."""
    assert _literal(node, NAMESPACE + "logIndex") == [event[f"{PREFIX}:logIndex"]]
    assert _literal(node, NAMESPACE + "device") == [signed.device]
    products = {
        ProductKey.parse_canonical(k.path).uri("https://id.gs1.org") for k in signed.products
    }
    if isinstance(signed, Reading):
        assert products == _ids(node, "epcList", "quantityList")
        (element,) = node[EPCIS + "sensorElementList"]
        reports = {
            (
                report[EPCIS + "measurementType"][0]["@id"],
                report[EPCIS + "value"][0]["@value"],
                report[EPCIS + "uom"][0]["@value"],
            )
            for report in element[EPCIS + "sensorReport"]
        }
        expected = {
            ("https://gs1.org/voc/" + s.type, float(s.value), s.uom) for s in signed.sensors
        }
        assert reports == expected
        return
    assert isinstance(signed, Event)
    assert node[EPCIS + "bizStep"] == [{"@id": f"{CBV}BizStep-{signed.step}"}]
    if signed.parents:
        parents = {
            ProductKey.parse_canonical(k.path).uri("https://id.gs1.org") for k in signed.parents
        }
        assert parents == _ids(node, "inputEPCList", "inputQuantityList")
        assert products == _ids(node, "outputEPCList", "outputQuantityList")
    else:
        assert products == _ids(node, "epcList", "quantityList")
    if signed.location is not None:
        (point,) = node[EPCIS + "readPoint"]
        assert point["@id"].endswith("/location/" + _percent(signed.location))
    if signed.data:
        (data,) = node[NAMESPACE + "data"]
        expected_leaves = sorted(signed_leaves(signed.data, (NAMESPACE + "data",)))
        assert sorted(expanded_leaves(data, (NAMESPACE + "data",))) == expected_leaves
    else:
        assert NAMESPACE + "data" not in node


def _percent(text: str) -> str:
    unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    return "".join(
        ch if ch in unreserved else "".join(f"%{b:02X}" for b in ch.encode()) for ch in text
    )


def single(document: Mapping[str, Any], event: Mapping[str, Any]) -> dict[str, Any]:
    """``document`` with ``event`` as its only event."""
    return {**document, "epcisBody": {"eventList": [event]}}


def check_export(
    document: Mapping[str, Any],
    signed: Mapping[int, DeviceMessage],
    schema: jsonschema.Draft7Validator,
    hashed: set[str] | None = None,
) -> None:
    """Every check of an EPCIS export (docs/inspection.md, "EPCIS 2.0"):

    * the EPCIS 2.0 JSON schema (with ``uri`` formats: extension names are namespaced);
    * every ``eventID`` is the hash GS1's reference implementation computes from the event;
    * expanded by a JSON-LD processor, every event keeps every value of its signed message
      (``signed``: the messages by log index).

    The reference implementation's time grows with the square of a document's events, so it
    hashes each event in a document of its own; event IDs in ``hashed`` (checked in an earlier
    export) are not hashed again, and the checked ones are added to it.
    """
    assert [e.message for e in schema.iter_errors(document)] == []
    events = document["epcisBody"]["eventList"]
    hashed = set() if hashed is None else hashed
    for event in events:
        if event["eventID"] not in hashed:
            assert [event["eventID"]] == reference_hashes(single(document, event)), event
            hashed.add(event["eventID"])
    nodes = expanded_events(document)
    assert len(nodes) == len(events), "two events with one eventID"
    for event in events:
        check_values_kept(event, nodes[event["eventID"]], signed[event[f"{PREFIX}:logIndex"]])
