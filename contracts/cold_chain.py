"""Temperature contracts: egg cold chain, chilled meat, cold-chain continuity.

All arithmetic is on integers: hundredths of a degree (:func:`contracts.history.centi`) and
milliseconds. A reading holds until the same device's next reading, for at most
``hold_ms`` (a device that went silent is not assumed to have kept its last value for ever;
the continuity contract reports such gaps).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from contracts.base import Reason, Status
from contracts.history import History, centi
from tracecore.verdict import SensorPoint

__all__ = ["ChilledMeat", "ColdChainContinuity", "EggColdChain", "Excursions", "excursions"]

_MINUTE_MS: Final = 60_000
_HOUR_MS: Final = 3_600_000
_COLD_STEPS: Final = frozenset({"storing", "shipping", "receiving", "loading", "unloading"})
#: Excursion readings cited by name in a reason; the rest are counted.
_CITED: Final = 20


@dataclass(frozen=True, slots=True)
class Excursions:
    """Time above a limit: the readings, degree-minutes (°C x 100 x min), the time in total
    and the longest continuous span."""

    readings: tuple[int, ...]
    centidegree_minutes: int
    total_ms: int
    longest_ms: int


def excursions(points: Iterable[SensorPoint], limit_centi: int, hold_ms: int) -> Excursions:
    """Integrate the time above ``limit_centi`` over ``points`` (per device, in time order)."""
    by_device: dict[str, list[SensorPoint]] = {}
    for point in points:
        by_device.setdefault(point.device, []).append(point)
    above: list[int] = []
    area = 0  # centidegree-milliseconds
    total = 0
    longest = 0
    for device in sorted(by_device):
        series = by_device[device]
        run_start: int | None = None
        for n, point in enumerate(series):
            value = centi(point.value)
            following = series[n + 1].time if n + 1 < len(series) else point.time
            held = min(following - point.time, hold_ms)
            if value > limit_centi:
                above.append(point.index)
                area += (value - limit_centi) * held
                total += held
                run_start = point.time if run_start is None else run_start
                longest = max(longest, point.time + held - run_start)
            else:
                run_start = None
    return Excursions(tuple(sorted(above)), area // _MINUTE_MS, total, longest)


def _cite(found: Excursions, what: str) -> Reason:
    shown = ", ".join(str(i) for i in found.readings[:_CITED])
    more = f" and {len(found.readings) - _CITED} more" if len(found.readings) > _CITED else ""
    return Reason(f"{len(found.readings)} reading(s) {what}: entries {shown}{more}", found.readings)


@dataclass(frozen=True, slots=True)
class EggColdChain:
    """Eggs held at ≤ 7.2 °C ambient from 36 h after laying.

    # US FDA 21 CFR 118.4(e): shell eggs held and transported at or below 45 °F (7.2 °C)
    # ambient temperature beginning 36 hours after time of lay.
    Laying time is the egg lot's commissioning (collection); the readings are those of the egg
    lot and the cases packed from it. Reports degree-minutes above the limit and the longest
    excursion.
    """

    id: str = "egg-cold-chain"
    version: int = 1
    kinds: frozenset[str] = frozenset({"egg"})
    limit_centi: int = 720
    after_lay_ms: int = 36 * _HOUR_MS
    hold_ms: int = 30 * _MINUTE_MS

    def evaluate(self, history: History) -> tuple[Status, tuple[Reason, ...], Mapping[str, int]]:
        """Judge the eggs' temperatures after the 36 h grace period."""
        eggs = history.of_kind("egg")
        laid = [
            e
            for e in history.events_of(eggs, "commissioning")
            if history.kinds.get(e.products[0]) == "egg"
        ]
        if not laid:
            return Status.NOT_APPLICABLE, (Reason("no signed laying (lot commissioning)"),), {}
        lay = min(laid, key=lambda e: (e.time, e.index))
        start = lay.time + self.after_lay_ms
        points = [p for p in history.temperatures(eggs) if p.time >= start]
        found = excursions(points, self.limit_centi, self.hold_ms)
        measures = {
            "readings": len(points),
            "centidegree_minutes_above": found.centidegree_minutes,
            "longest_excursion_ms": found.longest_ms,
            "ms_above": found.total_ms,
        }
        basis = Reason(f"laid (collected) at entry {lay.index}", (lay.index,))
        if found.readings:
            return (
                Status.FAIL,
                (basis, _cite(found, f"above {self.limit_centi / 100:g} °C")),
                measures,
            )
        return (
            Status.PASS,
            (basis, Reason(f"{len(points)} reading(s) after 36 h, none above the limit")),
            measures,
        )


@dataclass(frozen=True, slots=True)
class ChilledMeat:
    """Carcasses ≤ 7 °C core before leaving the slaughterhouse; cuts ≤ 4 °C.

    # EU Regulation (EC) 853/2004 Annex III Section I Chapter VII: carcasses chilled to ≤ 7 °C
    # (offal 3 °C) before transport; GB/T 40466-2021 (chilled meat) keeps cuts at 0-4 °C.
    A carcass's last reading before its first shipping (or before a cut is made from it) must be
    at or below the carcass limit; a cut's readings may be above 4 °C for at most
    ``tolerated_ms`` in total.
    """

    id: str = "chilled-meat"
    version: int = 1
    kinds: frozenset[str] = frozenset({"carcass", "cut"})
    carcass_limit_centi: int = 700
    cut_limit_centi: int = 400
    tolerated_ms: int = 30 * _MINUTE_MS
    hold_ms: int = 30 * _MINUTE_MS

    def evaluate(self, history: History) -> tuple[Status, tuple[Reason, ...], Mapping[str, int]]:
        """Judge each carcass's departure temperature and each cut's time above 4 °C."""
        reasons: list[Reason] = []
        failed = False
        measures: dict[str, int] = {}
        for carcass in history.of_kind("carcass"):
            leaving = [e.time for e in history.events_of([carcass], "shipping")]
            leaving += [
                e.time for e in history.events if carcass in e.parents and e.step == "commissioning"
            ]
            points = history.temperatures([carcass])
            if leaving:
                points = [p for p in points if p.time <= min(leaving)]
            if not points:
                failed = True
                reasons.append(Reason(f"{carcass}: no core temperature before it left"))
                continue
            last = points[-1]
            value = centi(last.value)
            measures[f"carcass_core_centi:{carcass}"] = value
            ok = value <= self.carcass_limit_centi
            failed |= not ok
            verdict = "≤" if ok else ">"
            reasons.append(
                Reason(
                    f"{carcass}: {value / 100:g} °C {verdict} "
                    f"{self.carcass_limit_centi / 100:g} °C before leaving",
                    (last.index,),
                )
            )
        for cut in history.of_kind("cut"):
            found = excursions(history.temperatures([cut]), self.cut_limit_centi, self.hold_ms)
            measures[f"cut_ms_above:{cut}"] = found.total_ms
            measures[f"cut_centidegree_minutes:{cut}"] = found.centidegree_minutes
            if found.total_ms > self.tolerated_ms:
                failed = True
                reasons.append(_cite(found, f"of {cut} above {self.cut_limit_centi / 100:g} °C"))
            else:
                reasons.append(
                    Reason(
                        f"{cut}: within {self.cut_limit_centi / 100:g} °C (tolerance "
                        f"{self.tolerated_ms // _MINUTE_MS} min)"
                    )
                )
        return (Status.FAIL if failed else Status.PASS), tuple(reasons), measures


@dataclass(frozen=True, slots=True)
class ColdChainContinuity:
    """No gap longer than ``max_gap_ms`` between temperature readings in the cold chain.

    The cold chain of a food product (egg, carcass, cut) starts at its first storing, shipping,
    receiving, loading or unloading event and ends at its retail sale or its last event.
    """

    id: str = "cold-chain-continuity"
    version: int = 1
    kinds: frozenset[str] = frozenset({"egg", "carcass", "cut"})
    max_gap_ms: int = 60 * _MINUTE_MS

    def evaluate(self, history: History) -> tuple[Status, tuple[Reason, ...], Mapping[str, int]]:
        """Find the longest silence of the loggers while the food was in the cold chain."""
        food = history.of_kind("egg", "carcass", "cut")
        events = history.events_of(food)
        cold = [e for e in events if e.step in _COLD_STEPS]
        if not cold:
            return (
                Status.NOT_APPLICABLE,
                (Reason("the product has not entered the cold chain"),),
                {},
            )
        start = cold[0]
        sold = [e for e in events if e.step == "retail_selling" and e.time >= start.time]
        end = sold[0] if sold else events[-1]
        points = [p for p in history.temperatures(food) if start.time <= p.time <= end.time]
        times = [start.time, *(p.time for p in points), end.time]
        gaps = [(b - a, n) for n, (a, b) in enumerate(itertools.pairwise(times))]
        longest, at = max(gaps) if gaps else (0, 0)
        measures = {"readings": len(points), "longest_gap_ms": longest}
        span = Reason(
            f"cold chain from entry {start.index} to entry {end.index}", (start.index, end.index)
        )
        if longest > self.max_gap_ms:
            before = start.index if at == 0 else points[at - 1].index
            after = end.index if at >= len(points) else points[at].index
            gap = Reason(
                f"no reading for {longest // _MINUTE_MS} min (more than "
                f"{self.max_gap_ms // _MINUTE_MS}) "
                f"between entries {before} and {after}",
                (before, after),
            )
            return Status.FAIL, (span, gap), measures
        return Status.PASS, (span, Reason(f"longest gap {longest // _MINUTE_MS} min")), measures
