"""The input of every contract: a product's verified history and what each product in it is.

Built from a :class:`tracecore.verdict.Story` (the content of an evidence bundle that verified),
so the same history comes out of the database at scan time and out of a bundle offline.

What a product *is* comes from its signed commissioning event, the way the scenarios and the
gateways describe them (docs/scenarios.md):

=========  ==========================================================================
kind       the commissioning event's ``data`` has
=========  ==========================================================================
flock      ``hens`` (a laying flock in a house)
egg        ``eggs_per_case``, or the product was made from a flock (an egg lot or case)
animal     ``species`` and no parents (an ear-tagged head of cattle or sheep)
carcass    ``hot_carcass_kg`` and parents (made from an animal at the slaughter line)
cut        ``cut`` (a cut or lot of cuts made from a carcass)
other      anything else
=========  ==========================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from tracecore.verdict import SensorPoint, Story, StoryEvent

__all__ = ["KINDS", "History", "centi"]

KINDS: Final = frozenset({"flock", "egg", "animal", "carcass", "cut", "other"})


def centi(value: float) -> int:
    """A measured value in integer hundredths (°C x 100), rounded half away from zero.

    Readings arrive as CBOR floats; contracts compare integers so that no float arithmetic or
    summation order can change a verdict.
    """
    scaled = abs(value) * 100
    whole = int(scaled)
    if scaled - whole >= 0.5:
        whole += 1
    return whole if value >= 0 else -whole


@dataclass(frozen=True, slots=True)
class History:
    """A product, its ancestors, their events and readings, and the kind of each product."""

    product: str
    events: tuple[StoryEvent, ...]
    readings: tuple[SensorPoint, ...]
    parents: Mapping[str, tuple[str, ...]]
    kinds: Mapping[str, str]
    parties: Mapping[str, str]

    @classmethod
    def from_story(cls, story: Story) -> History:
        """The history of ``story``'s product (events and readings already in time order)."""
        kinds: dict[str, str] = {}
        for event in story.events:
            if event.step != "commissioning":
                continue
            for product in event.products:
                kinds.setdefault(product, _kind(event, kinds))
        return cls(
            product=story.product,
            events=story.events,
            readings=story.readings,
            parents=story.parents,
            kinds=kinds,
            parties=story.devices,
        )

    @property
    def kind(self) -> str:
        """What the product itself is."""
        return self.kinds.get(self.product, "other")

    def lineage(self) -> tuple[str, ...]:
        """The product and its ancestors, nearest first."""
        seen = [self.product]
        frontier = [self.product]
        while frontier:
            following: list[str] = []
            for key in frontier:
                for parent in self.parents.get(key, ()):
                    if parent not in seen:
                        seen.append(parent)
                        following.append(parent)
            frontier = following
        return tuple(seen)

    def events_of(self, products: Iterable[str], step: str | None = None) -> list[StoryEvent]:
        """Events naming any of ``products`` (of ``step`` if given), in time order."""
        wanted = set(products)
        return [
            e
            for e in self.events
            if wanted.intersection(e.products) and (step is None or e.step == step)
        ]

    def temperatures(self, products: Iterable[str]) -> list[SensorPoint]:
        """Temperature readings (°C) naming any of ``products``, in time order."""
        wanted = set(products)
        return [
            r
            for r in self.readings
            if r.type == "Temperature" and r.uom == "CEL" and wanted.intersection(r.products)
        ]

    def of_kind(self, *kinds: str) -> tuple[str, ...]:
        """The products of the lineage that are of one of ``kinds``."""
        return tuple(p for p in self.lineage() if self.kinds.get(p, "other") in kinds)


def _kind(event: StoryEvent, known: Mapping[str, str]) -> str:
    data = event.data or {}
    if "hens" in data:
        return "flock"
    if "cut" in data:
        return "cut"
    if "hot_carcass_kg" in data and event.parents:
        return "carcass"
    if "species" in data and not event.parents:
        return "animal"
    if "eggs_per_case" in data or any(known.get(p) in ("flock", "egg") for p in event.parents):
        return "egg"
    return "other"
