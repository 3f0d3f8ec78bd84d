"""The EPCIS event hash ID of GS1 CBV 2.0 §8.9: ``ni:///sha-256;<hex>?ver=CBV2.0``.

Pure. :func:`event_hash` names an EPCIS 2.0 event (JSON, as :mod:`tracecore.epcis` writes it) by
its content: anyone holding the event computes the same ID, whatever order its fields or list
entries are in, so receivers can deduplicate events and check them against their IDs.

The pre-hash string (:func:`pre_hash_string`) follows the rules of CBV 2.0 §8.9 as GS1's
reference implementation (the ``epcis-event-hash-generator`` package, 1.9.x) computes them for
JSON-LD; where the two differ, this module does what the reference implementation does, since
that is what receivers run to check the ID. In short:

1. ``eventType=<type>``, then the standard fields in the canonical order of the CBV
   (:data:`CANONICAL_ORDER`), each ``name=value``, nested fields after their parent's name,
   the entries of a list each sorted as strings;
2. then every remaining field (user extensions such as ``agritrace:logIndex``, written with
   their full namespace in braces, ``{https://agritrace.dev/epcis/}logIndex=7``, nested ones
   after their parent's name) sorted as strings; ``sourceList``, ``destinationList`` and
   ``bizTransactionList`` go here too (the reference implementation does not place them by
   the canonical order in JSON), each entry as its two fields in the order written;
3. values: surrounding white space removed; bare CBV words expanded to their web URIs
   (``shipping`` → ``https://ref.gs1.org/cbv/BizStep-shipping``, sensor types to
   ``https://gs1.org/voc/…``); CURIEs of the document's prefixes expanded; times in UTC with
   milliseconds; numbers without trailing zeros (``10.0`` → ``10``, also for numeric text);
   GS1 identifiers as constrained canonical GS1 Digital Link URIs (``https://id.gs1.org``,
   no query, the finest level only: a serial drops the lot); ``true``/``false``/``null`` as
   Python spells them (``True``), as the reference implementation writes them.

Deliberate differences from the reference implementation, for values it treats by accident:
it replaces any text value that ends a CBV web URI used elsewhere in the *same document* (a
data value ``"other"`` next to a ``bizStep`` ``other``) by that URI; here only the standard
vocabulary fields are expanded, so an event's ID does not depend on the other events of the
document. EPC URNs (``urn:epc:id:sgtin:…``) are converted for SGTIN, SSCC, SGLN, GRAI,
GIAI, PGLN, GSRN, GDTI, LGTIN and SGTIN patterns; other URN schemes are hashed as written.
Numbers too large for a float (text ``"1e999"``) are hashed as written, where the reference
implementation skips the event. It also remembers the prefixes of every document it read
before; this module uses the document's own.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias

__all__ = [
    "CANONICAL_ORDER",
    "HASH_VERSION",
    "event_hash",
    "normalise_gs1_uri",
    "pre_hash_string",
]

HASH_VERSION: Final = "CBV2.0"

#: A field of the canonical order and the order of its own fields (None: a plain value).
Order: TypeAlias = Sequence[tuple[str, "Order | None"]]

_QUANTITY: Final[Order] = (("epcClass", None), ("quantity", None), ("uom", None))

#: CBV 2.0 §8.9.2, table "canonical property order" (the reference implementation's order).
CANONICAL_ORDER: Final[Order] = (
    ("eventTime", None),
    ("eventTimeZoneOffset", None),
    ("certificationInfo", None),
    ("parentID", None),
    ("epcList", (("epc", None),)),
    ("inputEPCList", (("epc", None),)),
    ("childEPCs", (("epc", None),)),
    ("quantityList", (("quantityElement", _QUANTITY),)),
    ("childQuantityList", (("quantityElement", _QUANTITY),)),
    ("inputQuantityList", (("quantityElement", _QUANTITY),)),
    ("outputEPCList", (("epc", None),)),
    ("outputQuantityList", (("quantityElement", _QUANTITY),)),
    ("action", None),
    ("transformationID", None),
    ("bizStep", None),
    ("disposition", None),
    ("persistentDisposition", (("set", None), ("unset", None))),
    ("readPoint", (("id", None),)),
    ("bizLocation", (("id", None),)),
    (
        "sensorElementList",
        (
            (
                "sensorElement",
                (
                    (
                        "sensorMetadata",
                        tuple(
                            (name, None)
                            for name in (
                                "time", "startTime", "endTime", "deviceID", "deviceMetadata",
                                "rawData", "dataProcessingMethod", "bizRules",
                            )
                        ),
                    ),
                    (
                        "sensorReport",
                        tuple(
                            (name, None)
                            for name in (
                                "type", "exception", "deviceID", "deviceMetadata", "rawData",
                                "dataProcessingMethod", "time", "microorganism",
                                "chemicalSubstance", "value", "component", "stringValue",
                                "booleanValue", "hexBinaryValue", "uriValue", "minValue",
                                "maxValue", "meanValue", "sDev", "percRank", "percValue", "uom",
                                "coordinateReferenceSystem",
                            )
                        ),
                    ),
                ),
            ),
        ),
    ),
)  # fmt: skip

#: Fields left out of the hash (CBV 2.0 §8.9.2).
_IGNORED: Final = frozenset({"recordTime", "eventID", "type", "errorDeclaration"})
#: Keys the reference implementation never reads (comments, XML text nodes).
_SKIPPED_KEYS: Final = frozenset({"#text", "rdfs:comment", "comment"})
#: Lists whose entries are a value and its type: hashed as the two fields in written order.
_TYPED_LISTS: Final = frozenset({"sourceList", "destinationList", "bizTransactionList"})
_TYPED_ENTRY_KEYS: Final = frozenset({"source", "destination", "bizTransaction"})

_CBV: Final = "https://ref.gs1.org/cbv/"
_GS1_VOC: Final = "https://gs1.org/voc/"
#: Standard vocabulary fields (name, enclosing field or "*") whose bare JSON-LD words stand for
#: web URIs (rule 16), as GS1's EPCIS 2.0 context expands them.
_VOCABULARY_FIELDS: Final = {
    ("bizStep", "*"): _CBV + "BizStep-",
    ("disposition", "*"): _CBV + "Disp-",
    ("set", "persistentDisposition"): _CBV + "Disp-",
    ("unset", "persistentDisposition"): _CBV + "Disp-",
    ("reason", "*"): _CBV + "ER-",
    ("type", "sourceList"): _CBV + "SDT-",
    ("type", "destinationList"): _CBV + "SDT-",
    ("type", "bizTransactionList"): _CBV + "BTT-",
    ("type", "sensorReport"): _GS1_VOC,
    ("exception", "sensorReport"): _GS1_VOC,
    ("component", "sensorReport"): _CBV + "Comp-",
}
#: CBV URNs and their web URI forms (rule 14).
_URN_VOCABULARY: Final = (
    ("urn:epcglobal:cbv:bizstep:", _CBV + "BizStep-"),
    ("urn:epcglobal:cbv:disp:", _CBV + "Disp-"),
    ("urn:epcglobal:cbv:btt:", _CBV + "BTT-"),
    ("urn:epcglobal:cbv:sdt:", _CBV + "SDT-"),
    ("urn:epcglobal:cbv:er:", _CBV + "ER-"),
)
_BARE: Final = re.compile(r"[A-Za-z0-9_]+")


@dataclass
class _Node:
    """One field: its name (namespaces expanded), its text value and its own fields."""

    name: str
    value: str = ""
    children: list[_Item] = field(default_factory=list)


@dataclass
class _Pair:
    """An entry of a source, destination or business transaction list: two fields, in order."""

    first: _Node
    second: _Node


_Item: TypeAlias = "_Node | _Pair"


# -- values --------------------------------------------------------------------------------------


def _text(value: object, prefixes: Mapping[str, str]) -> str:
    """A JSON scalar as the reference implementation reads it (Python's ``str``)."""
    if isinstance(value, str):
        prefix, colon, local = value.partition(":")
        if colon and prefix in prefixes:
            return prefixes[prefix] + local
    return str(value)


def _numeric(text: str) -> str:
    """Rule 6: a number without trailing zeros (``10.0`` → ``10``); other text unchanged."""
    try:
        number = float(text)
        return str(int(number)) if int(number) == number else str(number)
    except (ValueError, OverflowError):  # not a number, NaN, or infinite
        return text


def _canonical(text: str) -> str:
    """Rules 6, 14, 17 and 18 on a stripped value."""
    for urn, uri in _URN_VOCABULARY:
        text = text.replace(urn, uri)
    text = _numeric(text)
    return normalise_gs1_uri(text) or text


def _timestamp(text: str) -> str:
    """Rules 8 and 9: UTC, millisecond precision, ``Z``; text that is no time stays."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.astimezone()  # as the reference implementation: local time
    moment = moment.astimezone(UTC)
    ms = round(moment.microsecond, -3)
    if ms >= 1_000_000:  # pragma: no cover - the reference implementation fails here
        return text
    return moment.replace(microsecond=ms).isoformat(timespec="milliseconds")[:-6] + "Z"


# -- GS1 identifiers ------------------------------------------------------------------------------

_GS1_CHARS: Final = "[\"'\\-.0-9;-?A-Z_a-z]"  # GS1 AI 82 as the reference accepts it unescaped
_PARTITIONS: Final = "|".join(rf"\d{{{n}}}\.\d{{{13 - n}}}" for n in range(6, 13))
_GLN_PARTITIONS: Final = "|".join(rf"\d{{{n}}}\.\d{{{12 - n}}}" for n in range(6, 12))
_SSCC_PARTITIONS: Final = "|".join(rf"\d{{{n}}}\.\d{{{17 - n}}}" for n in range(6, 13))
_EPC_CHAR: Final = r"(?:%2[125-9A-Fa-f]|%3[0-9A-Fa-f]|%4[1-9A-Fa-f]|%5[0-9AaFf]|%6[1-9A-Fa-f]|%7[0-9Aa]|[!')(*+,.0-9:;=A-Za-z_-])"  # noqa: E501
_SGTIN: Final = re.compile(rf"urn:epc:id:sgtin:(?P<cp>{_PARTITIONS})\.(?P<ser>{_EPC_CHAR}{{1,20}})")
_LGTIN: Final = re.compile(
    rf"urn:epc:class:lgtin:(?P<cp>{_PARTITIONS})\.(?P<lot>{_EPC_CHAR}{{1,20}})"
)
_SGTIN_PATTERN: Final = re.compile(rf"urn:epc:idpat:sgtin:(?P<cp>{_PARTITIONS})\.\*")
_GRAI: Final = re.compile(
    rf"urn:epc:id:grai:(?P<cp>{_GLN_PARTITIONS}|\d{{12}}\.\.)\.{_EPC_CHAR}{{1,16}}"
)
_GIAI: Final = re.compile(
    "urn:epc:id:giai:(?:"
    + "|".join(
        rf"(?P<cp{n}>\d{{{n}}})\.(?P<ref{n}>{_EPC_CHAR}{{1,{30 - n}}})" for n in range(6, 13)
    )
    + ")"
)
_PGLN: Final = re.compile(rf"urn:epc:id:pgln:(?P<cp>{_GLN_PARTITIONS}|\d{{12}}\.)")
_GSRN: Final = re.compile(rf"urn:epc:id:gsrn:(?P<cp>{_SSCC_PARTITIONS})")
_GDTI: Final = re.compile(
    rf"urn:epc:id:gdti:(?P<cp>{_GLN_PARTITIONS}|\d{{12}}\.\.){_EPC_CHAR}{{1,20}}"
)
_SSCC: Final = re.compile(rf"urn:epc:id:sscc:(?P<cp>{_SSCC_PARTITIONS})")
_SGLN: Final = re.compile(
    rf"urn:epc:id:sgln:(?P<cp>{_GLN_PARTITIONS}|\d{{12}}\.)\.(?P<ext>{_EPC_CHAR}{{1,20}})"
)

_DL_KEYS: Final = (
    "01|gtin|8006|itip|8010|cpid|414|gln|417|party|8017|gsrnp|8018|gsrn|255|gcn|00|sscc|253|gdti"
    "|401|ginc|402|gsin|8003|grai|8004|giai"
)
#: A GS1 Digital Link URI: http(s), any host, a primary key segment somewhere in the path.
_DIGITAL_LINK: Final = re.compile(rf"https?:(//[^/?#]*)?[^?#]*/(?:{_DL_KEYS})/\d{{4}}[^/]")
_SHORT_NAMES: Final = (
    ("/gtin/", "/01/"), ("/itip/", "/8006/"), ("/cpid/", "/8010/"), ("/gln/", "/414/"),
    ("/party/", "/417/"), ("/gsrnp/", "/8017/"), ("/gsrn/", "/8018/"), ("/gcn/", "/255/"),
    ("/sscc/", "/00/"), ("/gdti/", "/253/"), ("/ginc/", "/401/"), ("/gsin/", "/402/"),
    ("/grai/", "/8003/"), ("/giai/", "/8004/"), ("/cpv/", "/22/"), ("/lot/", "/10/"),
    ("/ser/", "/21/"),
)  # fmt: skip
# As in the reference implementation, the dots of "id.gs1.org" match any character.
_RESOLVER: Final = "https://id.gs1.org"
_ON_RESOLVER: Final = re.compile(
    r"https://id.gs1.org/(?:01|8006|8010|414|417|8017|8018|255|00|253|401|402|8003|8004)/\d{4}[^/]"
)
#: Primary keys in the order the reference implementation looks for them in a foreign URI.
_PRIMARY_KEYS: Final = (
    "00", "01", "253", "255", "401", "402", "414", "417", "8003", "8004", "8006", "8010", "8017",
    "8018",
)  # fmt: skip
_CPV_LAST: Final = re.compile(
    rf"https://id.gs1.org/(?:8006/\d{{18}}|01/\d{{14}})/22/{_GS1_CHARS}{{0,20}}$"
)
_CPV_THEN_MORE: Final = re.compile(
    r"https://id.gs1.org/(?:8006/\d{18}|01/\d{14})/22/[/\"'\-.0-9;-?A-Z_a-z]{0,20}$"
)
_LOT_AND_SERIAL: Final = re.compile(
    rf"https://id.gs1.org/(?:8006/\d{{18}}|01/\d{{14}})/10/{_GS1_CHARS}{{0,20}}/21/{_GS1_CHARS}{{0,20}}$"
)
_CANONICAL_FORMS: Final = re.compile(
    "https://id.gs1.org/(?:"
    + "|".join(
        (
            r"00/\d{18}",
            rf"01/\d{{14}}(?:/21/{_GS1_CHARS}{{0,20}}|/10/{_GS1_CHARS}{{0,20}}|/235/{_GS1_CHARS}{{0,28}})?",
            rf"253/\d{{13}}{_GS1_CHARS}{{0,17}}",
            r"255/\d{13}\d{0,12}",
            rf"401/{_GS1_CHARS}{{0,30}}",
            r"402/\d{17}",
            rf"414/\d{{13}}(?:/254/{_GS1_CHARS}{{0,20}})?",
            r"417/\d{13}",
            rf"8003/\d{{14}}{_GS1_CHARS}{{0,16}}",
            rf"8004/{_GS1_CHARS}{{0,30}}",
            rf"8006/\d{{18}}(?:/21/{_GS1_CHARS}{{0,20}}|/10/{_GS1_CHARS}{{0,20}})?",
            r"8010/[#\-/0-9A-Z]{0,30}(?:/8011/\d{0,12})?",
            r"8017/\d{18}",
            r"8018/\d{18}",
        )
    )
    + ")$"
)


def _check_digit(digits: str) -> str:
    """The GS1 mod-10 check digit (GS1 General Specifications §7.9.1)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str(-total % 10)


def _epc_escape(text: str) -> str:
    """Characters an EPC URI may hold raw but a Digital Link URI percent-encodes."""
    for raw, escaped in (("!", "%21"), ("(", "%28"), (")", "%29"), ("*", "%2A"), ("+", "%2B")):
        text = text.replace(raw, escaped)
    return text.replace(",", "%2C").replace(":", "%3A")


def _gtin_of(partition: str) -> str:
    company, item = partition.split(".")
    body = item[0] + company + item[1:]
    return body + _check_digit(body)


def _sgtin(found: re.Match[str]) -> str:
    return f"{_RESOLVER}/01/{_gtin_of(found['cp'])}/21/{_epc_escape(found['ser'])}"


def _lgtin(found: re.Match[str]) -> str:
    return f"{_RESOLVER}/01/{_gtin_of(found['cp'])}/10/{_epc_escape(found['lot'])}"


def _sgtin_pattern(found: re.Match[str]) -> str:
    return f"{_RESOLVER}/01/{_gtin_of(found['cp'])}"


def _grai(found: re.Match[str]) -> str:
    # The serial starts 30 characters in, as the reference implementation reads it (after
    # the dot for 6-11 digit company prefixes, at it for 12).
    body = "0" + found["cp"].replace(".", "")
    return f"{_RESOLVER}/8003/{body}{_check_digit(body)}{_epc_escape(found.string[30:])}"


def _giai(found: re.Match[str]) -> str:
    parts = {k: v for k, v in found.groupdict().items() if v is not None}
    company = next(v for k, v in parts.items() if k.startswith("cp"))
    reference = next(v for k, v in parts.items() if k.startswith("ref"))
    return f"{_RESOLVER}/8004/{company}{_epc_escape(reference)}"


def _sscc(found: re.Match[str]) -> str:
    company, serial = found["cp"].split(".")
    body = serial[0] + company + serial[1:]
    return f"{_RESOLVER}/00/{body}{_check_digit(body)}"


def _sgln(found: re.Match[str]) -> str:
    company, location = found["cp"].split(".")
    body = company + location
    gln = f"{_RESOLVER}/414/{body}{_check_digit(body)}"
    extension = found["ext"]
    return gln if extension == "0" else f"{gln}/254/{_epc_escape(extension)}"


def _pgln(found: re.Match[str]) -> str:
    body = found["cp"].replace(".", "")
    return f"{_RESOLVER}/417/{body}{_check_digit(body)}"


def _gsrn(found: re.Match[str]) -> str:
    body = found["cp"].replace(".", "")
    return f"{_RESOLVER}/8018/{body}{_check_digit(body)}"


def _gdti(found: re.Match[str]) -> str:
    body = found["cp"].replace(".", "")  # the serial as in _grai: 30 characters in
    return f"{_RESOLVER}/253/{body}{_check_digit(body)}{_epc_escape(found.string[30:])}"


#: EPC URN schemes converted to Digital Link (rule 17), with their conversions.
_URN_SCHEMES: Final = (
    (_SGTIN, _sgtin),
    (_LGTIN, _lgtin),
    (_SGTIN_PATTERN, _sgtin_pattern),
    (_GRAI, _grai),
    (_GIAI, _giai),
    (_SSCC, _sscc),
    (_SGLN, _sgln),
    (_PGLN, _pgln),
    (_GSRN, _gsrn),
    (_GDTI, _gdti),
)


def _from_urn(uri: str) -> str | None:
    for pattern, convert in _URN_SCHEMES:
        if found := pattern.fullmatch(uri):
            return convert(found)
    return None


def _on_resolver(uri: str) -> str:
    """The Digital Link URI moved to id.gs1.org, short key names as AIs, GTINs of 14 digits."""
    for short, ai in _SHORT_NAMES:
        uri = uri.replace(short, ai)
    if not _ON_RESOLVER.match(uri):
        at = next((at for key in _PRIMARY_KEYS if (at := uri.find(f"/{key}/")) != -1), -1)
        if at != -1:
            uri = _RESOLVER + uri[at:]
    if not re.match(r"https://id.gs1.org/01/\d{14}", uri):
        for digits, padding in ((13, "0"), (12, "00"), (8, "000000")):
            if re.match(rf"https://id.gs1.org/01/\d{{{digits}}}", uri):
                return uri.replace("/01/", "/01/" + padding)
    return uri


def normalise_gs1_uri(uri: str) -> str | None:
    """The constrained canonical GS1 Digital Link URI of a GS1 identifier, or None.

    CBV 2.0 §8.9.2 rules 17 and 18: an EPC URN becomes a Digital Link URI; a Digital Link URI
    moves to ``https://id.gs1.org``, loses its query string, key qualifiers beyond the finest
    level (a serial drops the lot; the consumer product variant goes) and short names
    (``/gtin/`` → ``/01/``), and a GTIN is padded to 14 digits. None for anything else,
    including a Digital Link URI that is not valid once normalised (then it is hashed as
    written).
    """
    if "." not in uri:
        return None
    if uri.startswith("urn:epc:"):
        return _from_urn(uri)
    if not _DIGITAL_LINK.match(uri):
        return None
    uri = _on_resolver(uri.split("?", 1)[0])
    if _CPV_LAST.match(uri):
        uri = uri[: uri.find("/22/")]
    elif _CPV_THEN_MORE.match(uri):
        after = uri[uri.find("/22/") + 4 :]
        uri = uri[: uri.find("/22/")] + after[after.find("/") :]
    if _LOT_AND_SERIAL.match(uri):
        after = uri[uri.find("/10/") + 4 :]
        uri = uri[: uri.find("/10/")] + after[after.find("/") :]
    return uri if _CANONICAL_FORMS.match(uri) else None


# -- the event as a tree ---------------------------------------------------------------------------


def _key(key: str, prefixes: Mapping[str, str]) -> str:
    """A field name with its CURIE prefix written as ``{namespace}`` (rules 19 and 20)."""
    prefix, colon, local = key.partition(":")
    if colon and prefix in prefixes:
        return "{" + prefixes[prefix] + "}" + local
    return key


def _expand_bare(key: str, value: object, within: str) -> object:
    """Rule 16: a bare CBV word of a standard vocabulary field as its web URI."""
    if not isinstance(value, str) or not _BARE.fullmatch(value):
        return value
    prefix = _VOCABULARY_FIELDS.get((key, within)) or _VOCABULARY_FIELDS.get((key, "*"))
    return prefix + value if prefix else value


def _node(name: str, value: object, prefixes: Mapping[str, str], within: str) -> _Node:
    """One JSON value as a field named ``name``."""
    if isinstance(value, Mapping):
        return _Node(name, "", _fields(value, prefixes, name))
    if isinstance(value, list | tuple):
        return _Node(name, "", [_node("", item, prefixes, within) for item in value])
    return _Node(name, _text(value, prefixes))


def _fields(obj: Mapping[str, Any], prefixes: Mapping[str, str], within: str) -> list[_Item]:
    """The fields of a JSON object, in the data model of EPCIS XML (the reference's model).

    A JSON list is one field per entry; entries of a field named ``…List`` are grouped under it
    as fields named without ``List`` (``epcList`` → ``epc``; EPC lists' entries are ``epc``,
    quantity lists' ``quantityElement``).
    """
    members: list[_Item] = []
    lists: dict[str, list[_Item]] = {}
    for raw_key, raw_value in obj.items():
        if raw_key in _SKIPPED_KEYS:
            continue
        name = _key(raw_key, prefixes)
        entries = list(raw_value) if isinstance(raw_value, list | tuple) else [raw_value]
        if name in _TYPED_LISTS:
            pairs = lists.setdefault(name, [])
            for entry in entries:
                fields = [
                    _node(_key(k, prefixes), _expand_bare(k, v, name), prefixes, name)
                    for k, v in entry.items()
                    if k not in _SKIPPED_KEYS
                ]
                pairs.append(_Pair(fields[0], fields[1]))
        elif name.endswith("List"):
            grouped = lists.setdefault(name, [])
            for entry in entries:
                grouped.append(_renamed(_node(name[:-4], entry, prefixes, name)))
        elif name == "childEPCs":
            lists.setdefault(name, []).extend(_Node("epc", _text(e, prefixes)) for e in entries)
        else:
            for entry in entries:
                expanded = _expand_bare(raw_key, entry, within)
                members.append(_renamed(_node(name, expanded, prefixes, within)))
    members.extend(_Node(name, "", items) for name, items in lists.items())
    return members


def _renamed(node: _Node) -> _Node:
    """Field names that differ between EPCIS JSON and XML, as XML has them."""
    if node.name in ("inputEPC", "outputEPC"):
        node.name = "epc"
    elif node.name in ("inputQuantity", "outputQuantity", "childQuantity") or (
        node.name == "quantity" and node.children
    ):
        node.name = "quantityElement"
    return node


# -- the pre-hash string ---------------------------------------------------------------------------


def _is_extension(item: _Item) -> bool:
    return isinstance(item, _Node) and "{" in item.name and "/}" in item.name


def _ordered(items: list[_Item], order: Order) -> str:
    """The fields of ``order`` in that order; consumed fields are removed from ``items``.

    User extensions nested in a standard field (not at event level) follow its standard
    fields (rule 21).
    """
    extensions: list[_Item] = []
    at_event_level = any(
        isinstance(i, _Node) and ("eventTime" in i.name or "action" in i.name) for i in items
    )
    if len(items) > 1 and not at_event_level:
        extensions = [i for i in items if _is_extension(i)]
        for extension in extensions:
            items.remove(extension)
    text = ""
    for name, inner in order:
        strings = []
        for item in [i for i in items if isinstance(i, _Node) and i.name == name]:
            part = _field(item, inner)
            if part:
                strings.append(part)
            if not item.children:
                items.remove(item)
        text += "".join(sorted(strings))
    if extensions:
        text += _remaining(extensions)
    return text


def _field(node: _Node, order: Order | None) -> str:
    nested = _ordered(node.children, order) if order else ""
    value = node.value.strip()
    if value:
        lowered = node.name.lower()
        timed = "time" in lowered and "offset" not in lowered
        value = "=" + (_timestamp(value) if timed else _canonical(value))
    return node.name + value + nested if value or nested else ""


def _remaining(items: Iterable[_Item]) -> str:
    """Fields outside the canonical order: each with its own fields, sorted unless typed."""
    items = list(items)
    strings = []
    for item in items:
        if isinstance(item, _Pair):
            strings.append(_remaining((item.first, item.second)))
            continue
        value = item.value.strip()
        strings.append(
            item.name + ("=" + _canonical(value) if value else "") + _remaining(item.children)
        )
    typed = any(isinstance(i, _Node) and i.name in _TYPED_ENTRY_KEYS for i in items)
    if len(items) > 1 and not typed:
        strings.sort()
    return "".join(strings)


def pre_hash_string(event: Mapping[str, Any], prefixes: Mapping[str, str]) -> str:
    """The canonical pre-hash string of an EPCIS 2.0 JSON event (CBV 2.0 §8.9.2).

    ``prefixes`` maps the CURIE prefixes of the document's own context to their namespaces
    (``{"agritrace": "https://agritrace.dev/epcis/"}``).
    """
    items = _fields(event, prefixes, "")
    ordered = _ordered(items, CANONICAL_ORDER)
    rest = _remaining(i for i in items if not (isinstance(i, _Node) and i.name in _IGNORED))
    return f"eventType={event['type']}{ordered}{rest}"


def event_hash(event: Mapping[str, Any], prefixes: Mapping[str, str]) -> str:
    """The event hash ID, ``ni:///sha-256;<hex>?ver=CBV2.0`` (RFC 6920, CBV 2.0 §8.9)."""
    digest = hashlib.sha256(pre_hash_string(event, prefixes).encode("utf-8")).hexdigest()
    return f"ni:///sha-256;{digest}?ver={HASH_VERSION}"
