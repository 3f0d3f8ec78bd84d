"""The CBV 2.0 event hash (tracecore/epcis_hash.py) against GS1's reference implementation, and
the EPCIS export's extension data under JSON-LD expansion, on hand-made stories."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import epcis_kit
import pytest
from epcis_event_hash_generator.dl_normaliser import normaliser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracecore.epcis import AGRITRACE_CONTEXT, NAMESPACE, epcis_document
from tracecore.epcis_hash import event_hash, normalise_gs1_uri, pre_hash_string
from tracecore.verdict import SensorPoint, Story, StoryEvent

EXAMPLES = epcis_kit.SCHEMA.parent / "examples"
GTIN = "06901234567892"
LOT = f"01/{GTIN}/10/L1"
CASE = f"01/{GTIN}/10/L1/21/C001"
ANIMAL = "01/06901234570014/21/262060200101001"
CARCASS = "01/06901234570045/21/K262060200101001"

#: Data no scenario sends, but devices may: nesting, lists, every scalar type, odd keys.
ODD_DATA: dict[str, Any] = {
    "hens": 8000,
    "breed": "京红1号 Jinghong 1",
    "treatment": {"drug": "oxytetracycline", "dose": 10.0, "withdrawal_days": 28},
    "品种": "滩羊",
    "net weight": 12.50,
    "a:b": "agritrace:not-a-prefix-here",
    "@id": 5,
    "type": "shipping-ish",
    "comment": "kept",
    "flags": [True, False, None, 0],
    "grid": [[1, 2], [3.5]],
    "batches": [{"id": "B1", "n": 2}, {"id": "B2", "n": 3}],
    "itemList": ["x", "y"],
    "empty": "",
    "padded": "  007 ",
    "big": 2**63 - 1,
    "tiny": 1e-7,
    "": "empty key",
}


def _story() -> Story:
    """A story with every kind of event the export writes."""
    t = 1_790_000_000_000
    events = (
        StoryEvent(1, t, "commissioning", "gate", "farm", (ANIMAL,), (), "farm/pens", ODD_DATA),
        StoryEvent(2, t + 1, "commissioning", "collect", "farm", (LOT,), (), None, {"count": 720}),
        StoryEvent(3, t + 2, "commissioning", "grader", "farm", (CASE,), (LOT,), "farm/pack", None),
        StoryEvent(
            4, t + 3, "shipping", "store", "farm", (CASE,), (), "farm", {"destination": "mart"}
        ),
        StoryEvent(
            5,
            t + 4,
            "inspecting",
            "vet",
            "farm",
            (ANIMAL,),
            (),
            "farm/office",
            {"test": {"lab": "lab-1", "report": "BR0001", "result": "negative"}},
        ),
        StoryEvent(
            6,
            t + 5,
            "killing",
            "line",
            "abattoir",
            (ANIMAL,),
            (),
            "line",
            {"hot_carcass_kg": 301.4},
        ),
        StoryEvent(
            7,
            t + 6,
            "commissioning",
            "line",
            "abattoir",
            (CARCASS,),
            (ANIMAL,),
            "line",
            {"net_kg": 5},
        ),
        StoryEvent(
            8,
            t + 7,
            "commissioning",
            "cut",
            "abattoir",
            (LOT,),
            (CARCASS,),
            "cut",
            {"net_kg": 18.6},
        ),
        StoryEvent(9, t + 8, "other", "vet", "farm", (ANIMAL,), (), None, {"note": "checked"}),
    )
    readings = (
        SensorPoint(10, t + 9, "logger", (CASE, LOT), "Temperature", 4.0, "CEL"),
        SensorPoint(10, t + 9, "logger", (CASE, LOT), "RelativeHumidity", 91, "P1"),
    )
    return Story(CASE, "farm", t, {}, {}, events, readings, {}, {}, ())


def _document() -> dict[str, Any]:
    return epcis_document(_story(), created_ms=1_790_000_100_000, verdict="verified", log_size=11)


def test_every_event_kind_has_the_reference_implementations_hash() -> None:
    """ObjectEvent ADD/OBSERVE, TransformationEvent (EPCs and classes), quantities with uom,
    source/destination, business transactions, weighings and readings: each eventID is what
    GS1's epcis-event-hash-generator computes."""
    document = _document()
    events = document["epcisBody"]["eventList"]
    kinds = {(e["type"], e.get("action")) for e in events}
    assert kinds == {
        ("ObjectEvent", "ADD"),
        ("ObjectEvent", "OBSERVE"),
        ("TransformationEvent", None),
    }
    for event in events:
        (expected,) = epcis_kit.reference_hashes(epcis_kit.single(document, event))
        assert event["eventID"] == expected, pre_hash_string(event, AGRITRACE_CONTEXT)
    # The whole document at once, as a receiver would run it: the same IDs.
    assert [e["eventID"] for e in events] == epcis_kit.reference_hashes(document)
    assert [e.message for e in epcis_kit.validator().iter_errors(document)] == []


def test_standard_fields_carry_what_the_data_says() -> None:
    """Quantities with uom, owning parties, the lab report and weighings are EPCIS fields."""
    by_index = {e["agritrace:logIndex"]: e for e in _document()["epcisBody"]["eventList"]}
    assert by_index[2]["quantityList"] == [
        {"epcClass": f"https://id.gs1.org/{LOT}", "quantity": 720}
    ]
    assert by_index[8]["outputQuantityList"] == [
        {"epcClass": f"https://id.gs1.org/{LOT}", "quantity": 18.6, "uom": "KGM"}
    ]
    assert by_index[4]["sourceList"] == [
        {"source": f"{NAMESPACE}party/farm", "type": "owning_party"}
    ]
    assert by_index[4]["destinationList"] == [
        {"destination": f"{NAMESPACE}party/mart", "type": "owning_party"}
    ]
    assert by_index[5]["bizTransactionList"] == [
        {"bizTransaction": f"{NAMESPACE}report/lab-1/BR0001", "type": "testres"}
    ]
    for index, kg in ((6, 301.4), (7, 5)):  # a serialized carcass: a measurement, not a quantity
        (element,) = by_index[index]["sensorElementList"]
        assert element["sensorReport"] == [{"type": "Mass", "value": kg, "uom": "KGM"}]
    assert by_index[1]["agritrace:data"]["agritrace:net%20weight"] == 12.5
    assert by_index[1]["agritrace:data"]["agritrace:a%3Ab"] == "agritrace:not-a-prefix-here"
    assert by_index[1]["agritrace:data"]["agritrace:品种"] == "滩羊"


def test_json_ld_expansion_keeps_every_value_of_the_signed_data() -> None:
    """pyld (offline) expands each event's data to the same values under the same keys:
    nothing is dropped, not even keys that look like JSON-LD keywords or other IRIs."""
    document = _document()
    nodes = epcis_kit.expanded_events(document)
    for event in document["epcisBody"]["eventList"]:
        node = nodes[event["eventID"]]
        found = [e for e in _story().events if e.index == event["agritrace:logIndex"]]
        if not found or found[0].data is None:  # a reading, or no data
            assert NAMESPACE + "data" not in node
            continue
        story_event = found[0]
        (data,) = node[NAMESPACE + "data"]
        expected = sorted(epcis_kit.signed_leaves(story_event.data, (NAMESPACE + "data",)))
        assert sorted(epcis_kit.expanded_leaves(data, (NAMESPACE + "data",))) == expected


def test_the_hash_is_independent_of_field_and_list_order() -> None:
    """A receiver may reorder fields and list entries: the ID stays; any value change moves it."""
    document = _document()
    shuffler = random.Random(7)  # noqa: S311 (shuffling, not crypto)

    def shuffled(value: Any) -> Any:
        if isinstance(value, dict):
            items = list(value.items())
            shuffler.shuffle(items)
            # The two fields of a source/destination/transaction entry keep their order.
            if {"type"} < set(value) and len(value) == 2:
                items = list(value.items())
            return {k: shuffled(v) for k, v in items}
        if isinstance(value, list):
            return shuffler.sample([shuffled(v) for v in value], len(value))
        return value

    for event in document["epcisBody"]["eventList"]:
        same = shuffled(event)
        assert event_hash(same, AGRITRACE_CONTEXT) == event["eventID"]
        changed = {**event, "agritrace:logIndex": event["agritrace:logIndex"] + 100}
        assert event_hash(changed, AGRITRACE_CONTEXT) != event["eventID"]


def _example_prefixes(document: dict[str, Any]) -> dict[str, str]:
    return {k: v for c in document["@context"] if isinstance(c, dict) for k, v in c.items()}


# GS1's published examples (../shared/vectors/epcis/examples): the pre-hash strings agree with the
# reference implementation's. Left out: the transformation example (the reference implementation's
# JSON-LD step rejects its context: it redefines the protected prefix cbvmda).
@pytest.mark.parametrize(
    "name",
    [
        "SensorDataExample1.jsonld",
        "SensorDataExample6.jsonld",
        "SensorDataExample7.jsonld",
        "SensorDataExample9.jsonld",
        "aggregation_event_all_possible_fields.jsonld",
        "object_event_all_possible_fields.jsonld",
        "association_event_all_possible_fields.jsonld",
        "transaction_event_all_possible_fields.jsonld",
    ],
)
def test_gs1_examples_have_the_reference_pre_hash(name: str) -> None:
    """Every field of EPCIS 2.0 (ILMD, certification, error declarations, sensor statistics,
    nested user extensions, EPC URNs), not only what agritrace writes."""
    document = json.loads((EXAMPLES / name).read_text())
    mine = [
        pre_hash_string(event, _example_prefixes(document))
        for event in document["epcisBody"]["eventList"]
    ]
    assert mine == epcis_kit.reference_pre_hashes(document)


_AI82 = st.text(
    alphabet=st.sampled_from("ABCXYZabcxyz0123456789-._'\"%!*+,;=<>?:/ ()"), min_size=0, max_size=22
)
_DIGITS = st.text(alphabet="0123456789", min_size=4, max_size=19)


@st.composite
def _identifiers(draw: st.DrawFn) -> str:
    """Digital Link URIs (any host, short names, qualifiers, queries) and EPC URNs."""
    kind = draw(st.sampled_from(["dl", "dl", "dl", "urn", "other"]))
    if kind == "urn":
        company = draw(st.integers(6, 12))
        digits = draw(st.text(alphabet="0123456789", min_size=13, max_size=17))
        scheme = draw(st.sampled_from(["sgtin", "sscc", "sgln", "grai", "giai", "gsrn", "gdti"]))
        prefix = "urn:epc:class:lgtin:" if scheme == "sgtin" and draw(st.booleans()) else ""
        head = prefix or f"urn:epc:id:{scheme}:"
        rest = draw(st.sampled_from(["", "." + draw(_AI82), ".*"]))
        return f"{head}{digits[:company]}.{digits[company:]}{rest}"
    if kind == "other":
        return draw(st.text(max_size=40))
    host = draw(st.sampled_from(["https://id.gs1.org", "https://example.com/x", "http://a.b"]))
    key = draw(st.sampled_from(["01", "gtin", "00", "414", "gln", "417", "party", "8004", "8006"]))
    path = f"{host}/{key}/{draw(_DIGITS)}"
    for qualifier in draw(
        st.lists(st.sampled_from(["10", "21", "22", "lot", "ser", "254"]), max_size=3)
    ):
        path += f"/{qualifier}/{draw(_AI82)}"
    return path + draw(st.sampled_from(["", "/", "?linkType=all", "#x"]))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_identifiers())
def test_gs1_identifiers_are_normalised_as_the_reference_does(uri: str) -> None:
    """Rules 17 and 18: the constrained canonical Digital Link URI, or the text as written."""
    try:
        expected = normaliser(uri) or uri
    except (ValueError, IndexError):  # the reference implementation fails on some input
        return
    assert (normalise_gs1_uri(uri) or uri) == expected


def test_demo_identifiers_are_canonical_digital_links() -> None:
    """A case keeps its serial and drops its lot (the finest level only)."""
    assert (
        normalise_gs1_uri(f"https://id.gs1.org/{CASE}") == f"https://id.gs1.org/01/{GTIN}/21/C001"
    )
    assert normalise_gs1_uri(f"https://id.gs1.org/{LOT}") == f"https://id.gs1.org/{LOT}"
    assert (
        normalise_gs1_uri(f"{NAMESPACE}party/6901234567892")
        == "https://id.gs1.org/417/6901234567892"
    )
    assert normalise_gs1_uri(f"{NAMESPACE}party/lanzhou-mart") is None


def test_schema_file_exists() -> None:
    """The vectors this module reads are there (CI lays ../shared beside the clone)."""
    assert Path(epcis_kit.SCHEMA).is_file()
