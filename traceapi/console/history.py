"""The signed history of a dossier: every entry of a product's evidence, decoded for reading.

:func:`history` turns a :class:`~tracecore.verdict.Story` (what the scan verified, or what
parsed when a check failed) into rows in the page's language, with the same vocabulary as the
public page (:mod:`traceapi.vocabulary`): each business event with its decoded data, each
sensor reading with its values and units, each recall. Products in the data link to their
dossiers. Pure: the same story gives the same rows.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from traceapi.i18n import Lang, text
from traceapi.vocabulary import (
    Row,
    data_rows,
    event_name,
    format_number,
    pick,
    product_label,
    sensor_name,
    unit_name,
)
from tracecore.errors import IdentifierError
from tracecore.identifiers import ProductKey, parse_party_id
from tracecore.storage.trace import PartyInfo
from tracecore.verdict import RecallNotice, SensorPoint, Story, StoryEvent

__all__ = [
    "HISTORY_ROWS",
    "SHOWN_PRODUCTS",
    "Entry",
    "History",
    "dossier_href",
    "history",
    "party_name",
    "recaller_name",
]

#: Above this many entries the history lists every event and recall but only the first and
#: last readings (and every reading a contract cites); ``?history=all`` lists them all.
HISTORY_ROWS: Final = 400
_EDGE_READINGS: Final = 100
#: Products named per entry before "and N more".
SHOWN_PRODUCTS: Final = 4


def dossier_href(key: str, lang: Lang) -> str:
    """The console page of the product ``key`` (a canonical path)."""
    return f"/console/products/{quote(key, safe='/%')}?lang={lang}"


def party_name(lang: Lang, party: str, profiles: Mapping[str, PartyInfo]) -> str:
    """A party's registered name in ``lang`` (its id when it has no profile)."""
    info = profiles.get(party)
    if info is None:
        return party
    return info.name_en if lang == "en" and info.name_en else pick(lang, info.name)


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry of the history, as the page shows it.

    ``kind`` is ``event``, ``reading`` or ``recall``; ``own`` is True when the entry names the
    dossier's product itself (not only an ancestor); ``products`` are (label, href) of the
    first :data:`SHOWN_PRODUCTS` products it names, ``more`` the number of the others.
    """

    index: int
    time_ms: int
    kind: str
    name: str
    device: str | None
    device_place: str | None
    party: str | None
    party_name: str | None
    own: bool
    products: tuple[tuple[str, str | None], ...]
    more: int
    parents: tuple[tuple[str, str | None], ...]
    location: str | None
    rows: tuple[Row, ...]
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class History:
    """The rows shown, and how many readings were left out (``?history=all`` shows them)."""

    entries: tuple[Entry, ...]
    indexes: frozenset[int]
    total: int
    left_out: int


class _Words:
    """The lookups of one page: language, registry names and places, the dossier's product."""

    def __init__(
        self,
        lang: Lang,
        product: str,
        profiles: Mapping[str, PartyInfo],
        places: Mapping[str, tuple[str | None, str | None]],
    ) -> None:
        self.lang = lang
        self.product = product
        self.profiles = profiles
        self.places = places

    def place(self, device: str) -> str | None:
        zh, en = self.places.get(device, (None, None))
        return (en or zh) if self.lang == "en" else (zh or en)

    def products(self, keys: tuple[str, ...]) -> tuple[tuple[str, str | None], ...]:
        return tuple(self.link("product", key) for key in keys[:SHOWN_PRODUCTS])

    def link(self, kind: str, value: str) -> tuple[str, str | None]:
        """A party id or product key of signed data as a name, and a link for a product.

        Text from a device becomes a link only when it is a well-formed key, and then to the
        dossier of its canonical spelling.
        """
        try:
            if kind == "party":
                party = parse_party_id(value)
                return f"{party_name(self.lang, party, self.profiles)} ({party})", None
            key = ProductKey.parse(value)
        except IdentifierError:
            return value, None
        if key.path == self.product:
            return text(self.lang, "console.dossier.this_product"), None
        return product_label(self.lang, key.path), dossier_href(key.path, self.lang)


def _event(words: _Words, event: StoryEvent) -> Entry:
    lang = words.lang
    return Entry(
        index=event.index,
        time_ms=event.time,
        kind="event",
        name=event_name(lang, event.step, event.data),
        device=event.device,
        device_place=words.place(event.device),
        party=event.party or None,
        party_name=party_name(lang, event.party, words.profiles) if event.party else None,
        own=words.product in event.products,
        products=words.products(event.products),
        more=max(0, len(event.products) - SHOWN_PRODUCTS),
        parents=tuple(words.link("product", p) for p in event.parents),
        location=event.location,
        rows=tuple(data_rows(lang, event.data or {}, words.link)),
        values=(),
    )


def _readings(words: _Words, story: Story) -> list[Entry]:
    """One entry per signed reading (a reading may carry several sensors' values)."""
    lang = words.lang
    values: dict[int, list[str]] = {}
    first: dict[int, SensorPoint] = {}
    for point in story.readings:
        unit = unit_name(point.uom)
        value = format_number(point.value, lang) + (f" {unit}" if unit else "")
        values.setdefault(point.index, []).append(f"{sensor_name(lang, point.type)} {value}")
        first.setdefault(point.index, point)
    return [
        Entry(
            index=index,
            time_ms=point.time,
            kind="reading",
            name=text(lang, "console.dossier.reading"),
            device=point.device,
            device_place=words.place(point.device),
            party=story.devices.get(point.device),
            party_name=party_name(lang, story.devices[point.device], words.profiles)
            if point.device in story.devices
            else None,
            own=words.product in point.products,
            products=words.products(point.products),
            more=max(0, len(point.products) - SHOWN_PRODUCTS),
            parents=(),
            location=None,
            rows=(),
            values=tuple(values[index]),
        )
        for index, point in first.items()
    ]


def _recall(words: _Words, recall: RecallNotice) -> Entry:
    lang = words.lang
    return Entry(
        index=recall.index,
        time_ms=recall.time,
        kind="recall",
        name=text(lang, "console.dossier.recall_entry"),
        device=None,
        device_place=None,
        party=recall.by,
        party_name=recaller_name(lang, recall.by, words.profiles),
        own=words.product in recall.products,
        products=words.products(recall.products),
        more=max(0, len(recall.products) - SHOWN_PRODUCTS),
        parents=(),
        location=None,
        rows=(Row(text(lang, "console.dossier.reason"), pick(lang, recall.reason)),),
        values=(),
    )


def history(
    story: Story,
    *,
    lang: Lang,
    profiles: Mapping[str, PartyInfo],
    places: Mapping[str, tuple[str | None, str | None]],
    cited: Collection[int] = (),
    everything: bool = False,
) -> History:
    """The history of ``story``'s product in ``lang``, in the order of the devices' times.

    ``cited`` are log indexes contract findings cite (always listed); with ``everything`` no
    reading is left out.
    """
    words = _Words(lang, story.product, profiles, places)
    events = [_event(words, event) for event in story.events]
    readings = _readings(words, story)
    recalls = [_recall(words, recall) for recall in story.recalls]
    total = len(events) + len(readings) + len(recalls)
    left_out = 0
    if not everything and total > HISTORY_ROWS:
        ordered = sorted(readings, key=lambda e: (e.time_ms, e.index))
        keep = {e.index for e in ordered[:_EDGE_READINGS] + ordered[-_EDGE_READINGS:]}
        keep.update(cited)
        left_out = sum(1 for e in ordered if e.index not in keep)
        readings = [e for e in ordered if e.index in keep]
    entries = sorted([*events, *readings, *recalls], key=lambda e: (e.time_ms, e.index))
    return History(tuple(entries), frozenset(e.index for e in entries), total, left_out)


def recaller_name(lang: Lang, by: str, profiles: Mapping[str, PartyInfo]) -> str:
    """Who a recall names as recalling: an inspection party's name, or the administrator."""
    if by == "admin":
        return text(lang, "console.role.admin")
    return party_name(lang, by, profiles)
