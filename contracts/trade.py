"""Trade contracts: egg freshness at sale, and custody hand-overs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from contracts.base import Reason, Status
from contracts.history import History

__all__ = ["Custody", "EggFreshness"]

_DAY_MS: Final = 86_400_000
_HOUR_MS: Final = 3_600_000


@dataclass(frozen=True, slots=True)
class EggFreshness:
    """Eggs sold to consumers within 28 days of laying.

    # EU Regulation (EC) 589/2008 Art. 3: eggs are delivered to the consumer within 21 days of
    # laying, with a best-before date of at most 28 days; GB 2749-2015 (eggs) leaves the date
    # to the producer. 28 days is the default here, configurable.
    """

    id: str = "egg-freshness"
    version: int = 1
    kinds: frozenset[str] = frozenset({"egg"})
    max_age_ms: int = 28 * _DAY_MS

    def evaluate(self, history: History) -> tuple[Status, tuple[Reason, ...], Mapping[str, int]]:
        """Compare each retail sale with the laying (lot collection) time."""
        eggs = history.of_kind("egg")
        laid = [
            e
            for e in history.events_of(eggs, "commissioning")
            if history.kinds.get(e.products[0]) == "egg"
        ]
        if not laid:
            return Status.NOT_APPLICABLE, (Reason("no signed laying (lot commissioning)"),), {}
        lay = min(laid, key=lambda e: (e.time, e.index))
        sales = history.events_of(eggs, "retail_selling")
        if not sales:
            return (
                Status.PASS,
                (Reason(f"not sold yet (laid at entry {lay.index})", (lay.index,)),),
                {},
            )
        late = [s for s in sales if s.time - lay.time > self.max_age_ms]
        oldest = max(s.time - lay.time for s in sales)
        measures = {"max_age_ms": oldest}
        if late:
            first = late[0]
            return (
                Status.FAIL,
                (
                    Reason(
                        f"sold at entry {first.index}, {(first.time - lay.time) // _DAY_MS} "
                        f"days after laying (entry {lay.index})",
                        (lay.index, first.index),
                    ),
                ),
                measures,
            )
        return (
            Status.PASS,
            (
                Reason(
                    f"sold within {oldest // _DAY_MS + 1} day(s) of laying",
                    (lay.index, sales[0].index),
                ),
            ),
            measures,
        )


@dataclass(frozen=True, slots=True)
class Custody:
    """Every shipping is received by the party it names, within ``max_transit_ms``.

    A shipping event names its destination party in ``data.destination``; the matching
    receiving names one of the same products and is signed by a device of that party. A
    shipment without a receiving and without any later entry of its products is in transit:
    it passes until the history shows it was not received in time.
    """

    id: str = "custody"
    version: int = 1
    kinds: frozenset[str] = frozenset({"egg", "animal", "carcass", "cut", "flock", "other"})
    max_transit_ms: int = 48 * _HOUR_MS

    def evaluate(self, history: History) -> tuple[Status, tuple[Reason, ...], Mapping[str, int]]:
        """Match every shipping of the lineage with its receiving."""
        lineage = history.lineage()
        shipments = [
            e
            for e in history.events_of(lineage, "shipping")
            if isinstance((e.data or {}).get("destination"), str)
        ]
        if not shipments:
            return Status.NOT_APPLICABLE, (Reason("no shipping in the product's history"),), {}
        reasons: list[Reason] = []
        failed = False
        for ship in shipments:
            destination = str((ship.data or {})["destination"])
            later = [
                e
                for e in history.events_of(ship.products)
                if (e.time, e.index) > (ship.time, ship.index)
            ]
            received = [
                e
                for e in later
                if e.step == "receiving" and history.parties.get(e.device) == destination
            ]
            if received and received[0].time - ship.time <= self.max_transit_ms:
                reasons.append(
                    Reason(
                        f"shipping at entry {ship.index} received by {destination} at entry "
                        f"{received[0].index}",
                        (ship.index, received[0].index),
                    )
                )
            elif received:
                failed = True
                hours = (received[0].time - ship.time) // _HOUR_MS
                reasons.append(
                    Reason(
                        f"shipping at entry {ship.index} received by {destination} only after "
                        f"{hours} h",
                        (ship.index, received[0].index),
                    )
                )
            elif any(e.time - ship.time > self.max_transit_ms for e in later):
                failed = True
                reasons.append(
                    Reason(
                        f"shipping at entry {ship.index} to {destination} was never received",
                        (ship.index,),
                    )
                )
            else:
                reasons.append(
                    Reason(
                        f"shipping at entry {ship.index} to {destination}: in transit",
                        (ship.index,),
                    )
                )
        return (
            (Status.FAIL if failed else Status.PASS),
            tuple(reasons),
            {"shipments": len(shipments)},
        )
