"""What a buyer takes in from a product page: the facts above the fold and the journey.

:func:`summarise` turns a verified :class:`~tracecore.verdict.Story` (and the contract results
and registry profiles beside it) into a :class:`Summary` in the page's language: what the product
is (from the signed commissioning data), where it comes from, the dates that matter for its
kind, the cold chain in one line, the compliance checks in one line, and the journey as stages
(farm -> packing -> cold store -> truck -> shop). It is pure: the same inputs give the same page,
which is what the tests and docs/trace.md rely on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from contracts import EggFreshness, History
from traceapi.i18n import Lang, text
from traceapi.pages import DISPLAY_TZ
from traceapi.vocabulary import (
    Row,
    data_rows,
    event_name,
    format_number,
    mentioned_parties,
    pick,
    product_label,
    term,
)
from tracecore.errors import IdentifierError
from tracecore.identifiers import ProductKey, parse_party_id
from tracecore.storage.trace import PartyInfo
from tracecore.verdict import SensorPoint, Story, StoryEvent

__all__ = [
    "STAGE_RECORDS",
    "ColdChain",
    "Excursion",
    "PartyView",
    "Related",
    "Stage",
    "StageEvent",
    "Summary",
    "chart_series",
    "cold_chain_limit",
    "describe",
    "duration",
    "excursions",
    "judged_series",
    "origin_party",
    "short_date",
    "story_parties",
    "summarise",
]

_MINUTE_MS: Final = 60_000
#: Links shown for related products before "and N more".
RELATED_SHOWN: Final = 3
#: Signed records shown per stage (the first and the last ones); the rest are counted, and the
#: evidence bundle holds them all. It keeps a long history's page light on a phone.
STAGE_RECORDS: Final = 24


@dataclass(frozen=True, slots=True)
class PartyView:
    """A party as a page shows it: name and place in the page's language, the stall page."""

    id: str
    name: str
    place: str | None
    href: str


@dataclass(frozen=True, slots=True)
class Excursion:
    """A run of readings of one device above the limit: from the first reading above it to
    the first reading back at or below it (or the last reading above it, if none follows)."""

    device: str
    start_ms: int
    end_ms: int
    peak: float

    @property
    def minutes(self) -> int:
        """The length in whole minutes (at least 1: one reading above the limit counts)."""
        return max(1, round((self.end_ms - self.start_ms) / _MINUTE_MS))


@dataclass(frozen=True, slots=True)
class ColdChain:
    """The cold chain in one line: ``ok`` is None when there is nothing to judge."""

    ok: bool | None
    line: str
    limit: float | None
    excursions: tuple[Excursion, ...] = ()


@dataclass(frozen=True, slots=True)
class StageEvent:
    """A signed record in a stage: its name, time, the device's place and decoded data."""

    index: int
    time_ms: int
    name: str
    device: str
    device_place: str | None
    rows: tuple[Row, ...]
    others: int  # further products the record names (not this product or its ancestors)


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage of the journey: what happened, by whom, where, when, and the records."""

    kind: str
    name: str
    party: PartyView
    start_ms: int
    end_ms: int
    events: tuple[StageEvent, ...]
    temperatures: tuple[float, float, int] | None = None  # min, max, readings
    hidden: int = 0  # records of the stage not shown (see STAGE_RECORDS)


@dataclass(frozen=True, slots=True)
class Related:
    """Products related to this one, summarised: a sentence and the first few links."""

    line: str
    links: tuple[tuple[str, str], ...]
    more: int


@dataclass(frozen=True, slots=True)
class Summary:
    """Everything the product page says about a verified product, in one language."""

    what: str
    what_detail: str | None
    origin: PartyView | None
    handler: PartyView | None
    dates: tuple[tuple[str, str, int], ...]  # label, text, epoch ms
    cold_chain: ColdChain
    compliance_ok: bool | None
    compliance: str
    stages: tuple[Stage, ...]
    made_from: Related | None
    made_into: Related | None
    series_names: Mapping[str, str] = field(default_factory=dict)


def cold_chain_limit(story: Story) -> float | None:
    """The temperature limit the product is held to (°C), by what the product is.

    Only food made from something has one: a flock or a live animal (a product without
    parents) has none. Meat cuts 4 °C and carcasses 7 °C (EU Reg. 853/2004 Annex III §I.VII;
    GB/T 40466-2021 chilled meat), eggs 7.2 °C (US FDA 21 CFR 118.4(e)); None when the evidence
    says neither. Whether the limit was kept is the contracts' verdict, not the chart's.
    """
    if not story.parents.get(story.product):
        return None
    steps = {e.step for e in story.events}
    if "killing" in steps:
        own = [e for e in story.events if story.product in e.products]
        return 4.0 if any("cut" in (e.data or {}) for e in own) else 7.0
    egg_words = {"eggs_per_case", "hens"}
    if "collecting" in steps or any(egg_words & set(e.data or {}) for e in story.events):
        return 7.2
    return None


def chart_series(story: Story) -> dict[str, list[SensorPoint]]:
    """The temperature series (°C) of the product's cold chain, one per device.

    They are the readings of the product and of its ancestors that are food themselves (have
    parents): a hen house or a live animal is not held to the food's cold-chain limit.
    """
    food = {story.product} | {a for a in story.ancestors() if story.parents.get(a)}
    series: dict[str, list[SensorPoint]] = {}
    for point in story.readings:
        if point.type == "Temperature" and point.uom == "CEL" and food.intersection(point.products):
            series.setdefault(point.device, []).append(point)
    return series


def excursions(series: Mapping[str, Sequence[SensorPoint]], limit: float) -> list[Excursion]:
    """Every run of readings above ``limit``, per device, in time order."""
    found: list[Excursion] = []
    for device, points in sorted(series.items()):
        start: SensorPoint | None = None
        last: SensorPoint | None = None
        peak = limit
        for point in points:
            if point.value > limit:
                if start is None:
                    start, peak = point, point.value
                last, peak = point, max(peak, point.value)
            elif start is not None and last is not None:
                found.append(Excursion(device, start.time, point.time, peak))
                start = last = None
        if start is not None and last is not None:
            found.append(Excursion(device, start.time, last.time, peak))
    return sorted(found, key=lambda e: (e.start_ms, e.device))


def duration(lang: Lang, minutes: int) -> str:
    """``14 min``, ``2 h 5 min`` (``14 分钟``, ``2 小时 5 分钟``)."""
    hours, rest = divmod(minutes, 60)
    if lang == "zh":
        return f"{hours} 小时 {rest} 分钟" if hours else f"{rest} 分钟"
    return f"{hours} h {rest} min" if hours else f"{rest} min"


def short_date(lang: Lang, ms: int) -> str:
    """``12月4日`` or ``4 Dec`` (China Standard Time)."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(DISPLAY_TZ)
    if lang == "zh":
        return f"{moment.month}月{moment.day}日"
    return f"{moment.day} {moment.strftime('%b')}"


def _short_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(DISPLAY_TZ).strftime("%m-%d %H:%M")


class _Context:
    """The lookups a summary needs, in one language."""

    def __init__(
        self,
        lang: Lang,
        story: Story,
        profiles: Mapping[str, PartyInfo],
        places: Mapping[str, tuple[str | None, str | None]],
    ) -> None:
        self.lang = lang
        self.story = story
        self.profiles = profiles
        self.places = places
        self.kinds = History.from_story(story).kinds
        self.slaughtered = any(e.step == "killing" for e in story.events)

    def party(self, party_id: str) -> PartyView:
        info = self.profiles.get(party_id)
        href = f"/p/{party_id}?lang={self.lang}"
        if info is None:
            return PartyView(party_id, party_id, None, href)
        name = info.name_en if self.lang == "en" and info.name_en else pick(self.lang, info.name)
        place = info.place_en if self.lang == "en" and info.place_en else info.place
        return PartyView(party_id, name, place, href)

    def device_place(self, device: str) -> str | None:
        zh, en = self.places.get(device, (None, None))
        return (en or zh) if self.lang == "en" else (zh or en)

    def link(self, kind: str, value: str) -> tuple[str, str | None]:
        """A party id or product key in signed data as a name and a link to its page.

        The text comes from a device, so only a well-formed id or key becomes a link (and
        then to its canonical path on this site): anything else is shown as plain text.
        """
        try:
            if kind == "party":
                view = self.party(parse_party_id(value))
                return view.name, view.href
            key = ProductKey.parse(value)
        except IdentifierError:
            return value, None
        return product_label(self.lang, key.path), f"/{key.path}?lang={self.lang}"

    def t(self, key: str, **values: object) -> str:
        return text(self.lang, key, **values)


def _commissioning(story: Story, product: str) -> StoryEvent | None:
    return next(
        (e for e in story.events if e.step == "commissioning" and product in e.products), None
    )


def _number(value: object) -> float | None:
    """A signed number (not a boolean), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _egg(ctx: _Context, data: Mapping[str, object]) -> str:
    name = ctx.t("what.egg")
    if (per_case := _number(data.get("eggs_per_case"))) is not None:
        name += " · " + ctx.t("what.per_case", n=format_number(per_case, ctx.lang))
    elif (count := _number(data.get("count"))) is not None:
        name += " · " + ctx.t("what.eggs_in_lot", n=format_number(count, ctx.lang))
    if isinstance(data.get("grade"), str):
        name += " · " + ctx.t("what.grade", grade=data["grade"])
    return name


def _cut(ctx: _Context, data: Mapping[str, object]) -> str:
    cut = pick(ctx.lang, str(data["cut"])) if isinstance(data.get("cut"), str) else ""
    name = ctx.t("what.chilled", name=cut or ctx.t("what.cut"))
    if (net := _number(data.get("net_kg"))) is not None:
        name += f" · {format_number(net, ctx.lang)} kg"
    return name


def _carcass(ctx: _Context, data: Mapping[str, object]) -> str:
    name = ctx.t("what.carcass")
    if (weight := _number(data.get("hot_carcass_kg"))) is not None:
        name += f" · {format_number(weight, ctx.lang)} kg"
    return name


def _flock(ctx: _Context, data: Mapping[str, object]) -> str:
    name = ctx.t("what.flock")
    if (hens := _number(data.get("hens"))) is not None:
        name += " · " + ctx.t("what.hens", n=format_number(hens, ctx.lang))
    return name


_WHAT: Final[Mapping[str, Callable[[_Context, Mapping[str, object]], str]]] = {
    "egg": _egg,
    "cut": _cut,
    "carcass": _carcass,
    "flock": _flock,
    "animal": lambda ctx, _data: ctx.t("what.animal"),
}


def _what(ctx: _Context) -> tuple[str, str | None]:
    """What the product is, and a detail line (breed, species), from commissioning data."""
    story, lang = ctx.story, ctx.lang
    kind = ctx.kinds.get(story.product, "other")
    own = _commissioning(story, story.product)
    data = (own.data if own is not None else None) or {}
    describe = _WHAT.get(kind)
    name = ctx.t("what.other") if describe is None else describe(ctx, data)
    lineage = (story.product, *story.ancestors())
    detail: list[str] = []
    # The nearest commissioning that names a breed or species says it most precisely.
    for product in lineage:
        event = _commissioning(story, product)
        found = (event.data if event is not None else None) or {}
        if not detail and isinstance(found.get("breed"), str):
            detail.append(pick(lang, str(found["breed"])))
        if ctx.kinds.get(product) == "animal" and isinstance(found.get("species"), str):
            detail.insert(0, term(lang, str(found["species"])))
            break
    return name, (" · ".join(detail) or None)


def _dates(ctx: _Context) -> list[tuple[str, str, int]]:
    """The dates a buyer uses for this kind of product."""
    story, lang = ctx.story, ctx.lang
    kind = ctx.kinds.get(story.product, "other")
    lineage = {story.product, *story.ancestors()}
    out: list[tuple[str, str, int]] = []
    own = _commissioning(story, story.product)
    if kind == "egg":
        laid = [
            e
            for e in story.events
            if e.step == "commissioning"
            and ctx.kinds.get(e.products[0]) == "egg"
            and set(e.products) & lineage
            and "eggs_per_case" not in (e.data or {})
        ]
        if laid:
            lay = min(laid, key=lambda e: (e.time, e.index)).time
            out.append((ctx.t("date.laid"), short_date(lang, lay), lay))
        if own is not None and "eggs_per_case" in (own.data or {}):
            out.append((ctx.t("date.packed"), short_date(lang, own.time), own.time))
        if laid:
            # The freshness contract's limit is the best-before date (docs/contracts.md).
            best = lay + EggFreshness().max_age_ms
            out.append((ctx.t("date.best_before"), short_date(lang, best), best))
        return out
    if kind in ("cut", "carcass"):
        kills = [e for e in story.events if e.step == "killing" and set(e.products) & lineage]
        if kills:
            first = min(kills, key=lambda e: (e.time, e.index)).time
            out.append((ctx.t("date.slaughtered"), short_date(lang, first), first))
        if kind == "cut" and own is not None:
            out.append((ctx.t("date.cut"), short_date(lang, own.time), own.time))
        return out
    if own is not None:
        out.append((ctx.t("date.registered"), short_date(lang, own.time), own.time))
    return out


def judged_series(story: Story, limit: float) -> dict[str, list[SensorPoint]]:
    """The readings the cold-chain line judges: the product's own temperatures.

    Ancestors' readings stay on the chart but are held to their own rules (a carcass cooling
    from 38 °C is not an excursion of the cuts made from it; the contracts judge each product of
    the lineage). A carcass is judged from its first reading at or below the limit: before it,
    it is being chilled (EU Reg. 853/2004 Annex III §I.VII: chilled to 7 °C after slaughter).
    """
    own: dict[str, list[SensorPoint]] = {}
    carcass = History.from_story(story).kind == "carcass"
    for device, points in chart_series(story).items():
        mine = [p for p in points if story.product in p.products]
        if carcass:
            first = next((n for n, p in enumerate(mine) if p.value <= limit), len(mine))
            mine = mine[first:]
        if mine:
            own[device] = mine
    return own


def _cold_chain(ctx: _Context) -> ColdChain:
    limit = cold_chain_limit(ctx.story)
    if limit is None:
        return ColdChain(None, "", None)
    series = judged_series(ctx.story, limit)
    points = [p for s in series.values() for p in s]
    if not points:
        return ColdChain(None, ctx.t("cold.none"), limit)
    found = excursions(series, limit)
    if not found:
        top = max(p.value for p in points)
        return ColdChain(
            True,
            ctx.t("cold.ok", limit=f"{limit:g}", max=f"{top:g}", n=len(points)),
            limit,
        )
    worst = max(found, key=lambda e: (e.end_ms - e.start_ms, e.peak))
    place = ctx.device_place(worst.device) or worst.device
    line = ctx.t(
        "cold.excursion",
        duration=duration(ctx.lang, worst.minutes),
        limit=f"{limit:g}",
        when=_short_time(worst.start_ms),
        place=place,
    )
    if len(found) > 1:
        line = ctx.t("cold.excursions", n=len(found)) + line
    return ColdChain(False, line, limit, tuple(found))


def _compliance(ctx: _Context, contracts: Sequence[tuple[str, str]]) -> tuple[bool | None, str]:
    """``contracts`` as ``(id, status)``; the not applicable ones are left out."""
    applicable = [(c, s) for c, s in contracts if s != "not_applicable"]
    if not applicable:
        return None, ctx.t("compliance.none")
    failed = [ctx.t("contract." + c) for c, s in applicable if s == "fail"]
    if not failed:
        return True, ctx.t("compliance.ok", n=len(applicable))
    sep = "、" if ctx.lang == "zh" else ", "
    return False, ctx.t(
        "compliance.failed", failed=len(failed), n=len(applicable), names=sep.join(failed)
    )


_HAND_OVER: Final = frozenset({"shipping", "departing", "loading", "staging_outbound"})


# Which stage of the journey an event belongs to: the first rule that holds, else the farm.
# Arguments: the event, the kind of the product it names first, the party's kind.
_STAGE_RULES: Final[tuple[tuple[Callable[[StoryEvent, str, str], bool], str], ...]] = (
    (lambda _e, _k, party: party in ("carrier", "retailer", "inspector"), ""),
    (lambda _e, _k, party: party == "lab", "tests"),
    (lambda e, kind, _p: e.step == "killing" or kind == "carcass", "slaughter"),
    (lambda e, _k, _p: "cut" in (e.data or {}) or e.step == "disassembling", "cutting"),
    (lambda e, _k, _p: e.step == "storing", "coldstore"),
    (
        lambda e, _k, party: (
            "eggs_per_case" in (e.data or {})
            or e.step in ("packing", "repackaging")
            or party == "packer"
        ),
        "packing",
    ),
    (lambda _e, _k, party: party == "processor", "processing"),
)


def _stage_kind(ctx: _Context, event: StoryEvent, party_kind: str) -> str:
    """Which stage of the journey an event belongs to (see :data:`_STAGE_RULES`)."""
    product_kind = ctx.kinds.get(event.products[0], "other") if event.products else "other"
    for rule, stage in _STAGE_RULES:
        if rule(event, product_kind, party_kind):
            if stage == "processing" and ctx.slaughtered:
                return "slaughter"  # the plant's goods-in of animals it slaughters
            return stage or party_kind
    return "farm"


# The order of a food supply chain, for stages whose signed times overlap or run backwards (two
# devices' clocks a few seconds apart, or accelerated simulations): farm before slaughter
# before the truck before the shop. Stages of the same rank keep their time order.
_RANK: Final = {
    "farm": 0,
    "tests": 1,
    "packing": 2,
    "coldstore": 3,
    "slaughter": 4,
    "cutting": 5,
    "processing": 6,
    "carrier": 7,
    "retailer": 8,
    "inspector": 9,
}


def _grouped(ctx: _Context) -> list[tuple[str, str, list[StoryEvent]]]:
    """The story's events grouped into stages ``(kind, party, events)``, in journey order.

    A stage is one party doing one kind of work; a dispatch (shipping, loading) belongs to the
    stage of the party handing the goods over.
    """
    groups: dict[tuple[str, str], list[StoryEvent]] = {}
    last: dict[str, tuple[str, str]] = {}
    for event in ctx.story.events:
        info = ctx.profiles.get(event.party)
        key = (_stage_kind(ctx, event, info.kind if info else ""), event.party)
        if event.step in _HAND_OVER and event.party in last:
            key = last[event.party]
        groups.setdefault(key, []).append(event)
        last[event.party] = key
    ordered = sorted(groups.items(), key=lambda item: (_RANK.get(item[0][0], 6), item[1][0].time))
    return [(kind, party, events) for (kind, party), events in ordered]


def _stages(ctx: _Context, series: Mapping[str, Sequence[SensorPoint]]) -> list[Stage]:
    story = ctx.story
    lineage = {story.product, *story.ancestors()}
    raw = _grouped(ctx)
    starts = sorted(events[0].time for _, _, events in raw)
    stages: list[Stage] = []
    points = sorted((p for s in series.values() for p in s), key=lambda p: p.time)
    for kind, party, events in raw:
        start = events[0].time
        # The party's readings from this stage's start until another stage starts.
        end = next((t for t in starts if t > start), None)
        mine = [
            p.value
            for p in points
            if story.devices.get(p.device) == party
            and p.time >= start
            and (end is None or p.time < end)
        ]
        shown = events
        if len(events) > STAGE_RECORDS:
            half = STAGE_RECORDS // 2
            shown = events[:half] + events[-half:]
        stages.append(
            Stage(
                kind=kind,
                name=ctx.t("stage." + kind),
                party=ctx.party(party),
                start_ms=start,
                end_ms=events[-1].time,
                events=tuple(
                    StageEvent(
                        index=e.index,
                        time_ms=e.time,
                        name=event_name(ctx.lang, e.step, e.data),
                        device=e.device,
                        device_place=ctx.device_place(e.device),
                        rows=tuple(data_rows(ctx.lang, e.data or {}, ctx.link)),
                        others=len(set(e.products) - lineage),
                    )
                    for e in shown
                ),
                temperatures=(min(mine), max(mine), len(mine)) if mine else None,
                hidden=len(events) - len(shown),
            )
        )
    return stages


def _related(ctx: _Context, keys: Sequence[str], key: str) -> Related | None:
    if not keys:
        return None
    kinds = {ctx.kinds.get(k, "other") for k in keys}
    noun = kinds.pop() if len(kinds) == 1 else "other"
    line = ctx.t(key, n=len(keys), noun=ctx.t("noun." + noun))
    links = tuple((product_label(ctx.lang, k), f"/{k}?lang={ctx.lang}") for k in keys)
    return Related(line, links[:RELATED_SHOWN], max(0, len(keys) - RELATED_SHOWN))


def describe(story: Story, lang: Lang) -> tuple[str, str | None]:
    """What the product of ``story`` is, in ``lang``: a name and a detail line (breed)."""
    return _what(_Context(lang, story, {}, {}))


def story_parties(story: Story) -> set[str]:
    """Every party a page about ``story`` names: signers, recallers, parties in signed data."""
    found = {*story.devices.values(), *(r.by for r in story.recalls), *story.owners.values()}
    for event in story.events:
        found.update(mentioned_parties(event.data or {}))
    return found


def origin_party(story: Story) -> str | None:
    """Where the product comes from: the owner of its oldest ancestors (the farm)."""
    roots = [p for p in (story.product, *story.ancestors()) if not story.parents.get(p)]
    return next((story.owners[r] for r in reversed(roots) if r in story.owners), story.owner)


def summarise(
    story: Story,
    *,
    lang: Lang,
    contracts: Sequence[tuple[str, str]],
    profiles: Mapping[str, PartyInfo],
    places: Mapping[str, tuple[str | None, str | None]],
    children: Sequence[str],
) -> Summary:
    """The buyer's summary of a verified product in ``lang``.

    ``contracts`` are the product's contract results as ``(contract id, status)``; ``profiles``
    and ``places`` the registry's public data of the parties and devices in the story;
    ``children`` the products made from this one.
    """
    ctx = _Context(lang, story, profiles, places)
    series = chart_series(story)
    what, detail = _what(ctx)
    origin_id = origin_party(story)
    origin = None if origin_id is None else ctx.party(origin_id)
    handler = None
    if story.owner is not None and story.owner != origin_id:
        handler = ctx.party(story.owner)
    ok, compliance = _compliance(ctx, contracts)
    names = {}
    for device in series:
        place = ctx.device_place(device)
        party = ctx.party(story.devices.get(device, ""))
        names[device] = f"{place} · {party.name}" if place else f"{party.name} · {device}"
    return Summary(
        what=what,
        what_detail=detail,
        origin=origin,
        handler=handler,
        dates=tuple(_dates(ctx)),
        cold_chain=_cold_chain(ctx),
        compliance_ok=ok,
        compliance=compliance,
        stages=tuple(_stages(ctx, series)),
        made_from=_related(ctx, story.parents.get(story.product, ()), "related.from"),
        made_into=_related(ctx, list(children), "related.into"),
        series_names=names,
    )
