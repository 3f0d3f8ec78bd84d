"""Scan verdicts and product stories, computed from verified evidence (design.md, "Trace API").

Pure: the trace API builds a product's evidence bundle from the stored raw bytes, inspects it
with :func:`tracecore.bundle.inspect_bundle`, adds its own database cross-checks, and hands the
result here. :func:`tell_story` turns the *verified* content into what a buyer reads (events,
readings, lineage, recalls, origin); :func:`decide` turns the checks into one verdict.

The verdicts, strongest first (the first that applies wins):

``integrity_failure``
    a check failed: the stored bytes, chains, proofs or the registry disagree with the signed
    log. Nothing on the page can be trusted.
``recalled``
    the product or one of its ancestors is named by a recall entry in the log.
``suspect_copy``
    a serialized code was scanned by more distinct clients than a genuine label would be.
``verified``
    every check passed.
``unknown`` is answered by the API for a key it has never seen; it never comes from here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from tracecore.bundle import Check, Inspection
from tracecore.logentry import DeviceMessageEntry, DeviceRegistered, Recall
from tracecore.message import Event, Reading

__all__ = [
    "MAX_CHART_POINTS",
    "RecallNotice",
    "SensorPoint",
    "Story",
    "StoryEvent",
    "Verdict",
    "decide",
    "downsample",
    "tell_story",
    "tell_story_memo",
]

#: At most this many points per sensor series go to a page or JSON answer (min/max buckets).
MAX_CHART_POINTS: Final = 240


class Verdict(enum.StrEnum):
    """What a scan answers (design.md)."""

    VERIFIED = "verified"
    INTEGRITY_FAILURE = "integrity_failure"
    RECALLED = "recalled"
    SUSPECT_COPY = "suspect_copy"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class StoryEvent:
    """One business event of the product or an ancestor, as the device signed it."""

    index: int
    time: int
    step: str
    device: str
    party: str
    products: tuple[str, ...]
    parents: tuple[str, ...]
    location: str | None
    data: Mapping[str, object] | None


@dataclass(frozen=True, slots=True)
class SensorPoint:
    """One sensor value of a signed reading, with the log entry it came from."""

    index: int
    time: int
    device: str
    products: tuple[str, ...]
    type: str
    value: float
    uom: str


@dataclass(frozen=True, slots=True)
class RecallNotice:
    """A recall in the log naming the product or one of its ancestors."""

    index: int
    time: int
    by: str
    reason: str
    products: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Story:
    """What a buyer or an inspector reads about a product, all from verified bytes.

    ``owners`` maps each product of the lineage to the party of the device whose first
    ``commissioning`` event names it; ``owner`` and ``created`` are the scanned product's owner
    and commissioning time (None if the evidence holds none). ``parents`` maps each product of
    the lineage to the products it came from; ``devices`` maps every device that signed an
    entry to its party. ``heads`` maps every product with a chain in the evidence to the log
    index of its newest entry.
    """

    product: str
    owner: str | None
    created: int | None
    owners: Mapping[str, str]
    heads: Mapping[str, int]
    events: tuple[StoryEvent, ...]
    readings: tuple[SensorPoint, ...]
    parents: Mapping[str, tuple[str, ...]]
    devices: Mapping[str, str]
    recalls: tuple[RecallNotice, ...]

    def ancestors(self) -> tuple[str, ...]:
        """The product's ancestors, nearest first, each once."""
        seen: list[str] = []
        frontier = list(self.parents.get(self.product, ()))
        while frontier:
            nxt: list[str] = []
            for key in frontier:
                if key not in seen and key != self.product:
                    seen.append(key)
                    nxt.extend(self.parents.get(key, ()))
            frontier = nxt
        return tuple(seen)


def tell_story(product: str, inspection: Inspection) -> Story:
    """Return the story of ``product`` from an inspection's verified content.

    Call it only for an inspection whose report is ok, or show the result as unverified: the
    content of a failed inspection is whatever parsed. Events and readings are ordered by the
    device time, then the log index.
    """
    devices: dict[str, str] = {}
    for entry in inspection.entries.values():
        if isinstance(entry, DeviceRegistered):
            devices[entry.device] = entry.party
    events: list[StoryEvent] = []
    readings: list[SensorPoint] = []
    parents: dict[str, tuple[str, ...]] = {}
    owners: dict[str, str] = {}
    created: int | None = None
    for index in sorted(inspection.messages):
        message = inspection.messages[index].message
        products = tuple(key.path for key in message.products)
        party = devices.get(message.device, "")
        if isinstance(message, Reading):
            readings.extend(
                SensorPoint(
                    index, message.time, message.device, products, s.type, float(s.value), s.uom
                )
                for s in message.sensors
            )
            continue
        if isinstance(message, Event):
            parent_keys = tuple(key.path for key in message.parents)
            if parent_keys:
                for key in products:
                    parents[key] = tuple(dict.fromkeys((*parents.get(key, ()), *parent_keys)))
            if message.step == "commissioning":
                for key in products:
                    if key not in owners:
                        owners[key] = party
                        if key == product:
                            created = message.time
            events.append(
                StoryEvent(
                    index=index,
                    time=message.time,
                    step=message.step,
                    device=message.device,
                    party=party,
                    products=products,
                    parents=parent_keys,
                    location=message.location,
                    data=None if message.data is None else dict(message.data),
                )
            )
    recalls = tuple(
        RecallNotice(index, e.time, e.by, e.reason, tuple(p.path for p in e.products))
        for index, e in sorted(inspection.entries.items())
        if isinstance(e, Recall)
    )
    lineage = {product, *_all_ancestors(product, parents)}
    return Story(
        product=product,
        owner=owners.get(product),
        created=created,
        owners=owners,
        heads=_heads(inspection),
        events=tuple(sorted(events, key=lambda e: (e.time, e.index))),
        readings=tuple(sorted(readings, key=lambda r: (r.time, r.index))),
        parents=parents,
        devices=devices,
        recalls=tuple(r for r in recalls if lineage.intersection(r.products)),
    )


_STORIES: dict[tuple[str, int], tuple[Inspection, Story]] = {}


def tell_story_memo(product: str, inspection: Inspection) -> Story:
    """:func:`tell_story`, remembered for the inspection object it was told from.

    Inspections are immutable and memoized themselves (tracecore.bundle.inspect_bundle_memo), so
    the same inspection object means the same content; the entry holds the inspection, so its
    id cannot be reused while the entry lives.
    """
    key = (product, id(inspection))
    found = _STORIES.get(key)
    if found is not None and found[0] is inspection:
        return found[1]
    story = tell_story(product, inspection)
    if len(_STORIES) >= 512:
        _STORIES.pop(next(iter(_STORIES)))
    _STORIES[key] = (inspection, story)
    return story


def _heads(inspection: Inspection) -> dict[str, int]:
    """The log index of each product's newest entry in the inspected evidence."""
    heads: dict[str, int] = {}
    for index, entry in inspection.entries.items():
        if isinstance(entry, DeviceMessageEntry):
            for position in entry.chains:
                path = position.product.path
                heads[path] = max(index, heads.get(path, -1))
    return heads


def _all_ancestors(product: str, parents: Mapping[str, tuple[str, ...]]) -> set[str]:
    seen: set[str] = set()
    frontier = [product]
    while frontier:
        key = frontier.pop()
        for parent in parents.get(key, ()):
            if parent not in seen:
                seen.add(parent)
                frontier.append(parent)
    return seen


def decide(checks: Iterable[Check], story: Story | None, *, suspect_copy: bool) -> Verdict:
    """Return the verdict for a scan from all its checks (see the module docstring)."""
    if not all(check.ok for check in checks) or story is None:
        return Verdict.INTEGRITY_FAILURE
    if story.recalls:
        return Verdict.RECALLED
    if suspect_copy:
        return Verdict.SUSPECT_COPY
    return Verdict.VERIFIED


def downsample(points: Sequence[SensorPoint], limit: int = MAX_CHART_POINTS) -> list[SensorPoint]:
    """Return at most ``limit`` points of one series, keeping each bucket's minimum and maximum.

    A chart of a long series must still show its excursions: plain decimation would drop a
    short spike, so each of ``limit // 2`` equal-count buckets keeps its lowest and highest
    value (in time order). Deterministic; ``points`` must be in time order.
    """
    if len(points) <= limit:
        return list(points)
    buckets = max(1, limit // 2)
    kept: list[SensorPoint] = []
    for b in range(buckets):
        chunk = points[b * len(points) // buckets : (b + 1) * len(points) // buckets]
        if not chunk:
            continue
        low = min(chunk, key=lambda p: (p.value, p.time, p.index))
        high = max(chunk, key=lambda p: (p.value, -p.time, -p.index))
        kept.extend(sorted({low, high}, key=lambda p: (p.time, p.index)))
    return kept
