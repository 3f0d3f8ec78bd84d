"""Animal-health contracts: drug withdrawal periods and brucellosis testing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from contracts.base import Reason, Status
from contracts.history import History

__all__ = ["Brucellosis", "DrugWithdrawal"]

_DAY_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class DrugWithdrawal:
    """No slaughter of a treated animal, and no sale of eggs of a treated flock, too early.

    # GB 31650-2019 (maximum residue limits of veterinary drugs in food) and the Ministry of
    # Agriculture's withdrawal periods; US 21 CFR 530: food from a treated animal enters the
    # food chain only after the drug's withdrawal period.
    A treatment is an event on an animal or flock whose data carries
    ``treatment: {drug, withdrawal_days}``. A ``killing`` of the animal before treatment time +
    withdrawal period fails; so does a ``retail_selling`` of eggs collected from the flock
    between the treatment and the end of its withdrawal period.
    """

    id: str = "drug-withdrawal"
    version: int = 1
    kinds: frozenset[str] = frozenset({"animal", "carcass", "cut", "egg"})

    def evaluate(self, history: History) -> tuple[Status, tuple[Reason, ...], Mapping[str, int]]:
        """Compare each treatment's withdrawal end with the slaughter or the egg sales."""
        sources = history.of_kind("animal", "flock")
        treatments = [
            e
            for e in history.events_of(sources)
            if isinstance((e.data or {}).get("treatment"), Mapping)
        ]
        if not treatments:
            return Status.PASS, (Reason("no treatment recorded for the animals or flocks"),), {}
        reasons: list[Reason] = []
        failed = False
        for treatment in treatments:
            plan = (treatment.data or {})["treatment"]
            assert isinstance(plan, Mapping)  # noqa: S101 (filtered above)
            days = plan.get("withdrawal_days")
            if not isinstance(days, int) or isinstance(days, bool) or days < 0:
                failed = True
                reasons.append(
                    Reason(
                        f"treatment at entry {treatment.index} has no valid withdrawal_days",
                        (treatment.index,),
                    )
                )
                continue
            until = treatment.time + days * _DAY_MS
            drug = plan.get("drug", "?")
            for animal in (p for p in treatment.products if history.kinds.get(p) == "animal"):
                for kill in history.events_of([animal], "killing"):
                    if kill.time < until:
                        failed = True
                        reasons.append(
                            Reason(
                                f"{animal} killed at entry {kill.index} during the {days}-day "
                                f"withdrawal of {drug} (treated at entry {treatment.index})",
                                (treatment.index, kill.index),
                            )
                        )
            for flock in (p for p in treatment.products if history.kinds.get(p) == "flock"):
                lots = [
                    e
                    for e in history.events
                    if flock in e.parents
                    and e.step == "commissioning"
                    and treatment.time <= e.time < until
                ]
                for lot in lots:
                    made = set(lot.products)
                    made |= {
                        p for p, parents in history.parents.items() if made.intersection(parents)
                    }
                    for sale in history.events_of(made, "retail_selling"):
                        failed = True
                        reasons.append(
                            Reason(
                                f"eggs collected at entry {lot.index} during the {days}-day "
                                "withdrawal "
                                f"of {drug} (treated at entry {treatment.index}) sold at entry "
                                f"{sale.index}",
                                (treatment.index, lot.index, sale.index),
                            )
                        )
            if not failed:
                reasons.append(
                    Reason(
                        f"withdrawal of {drug} ({days} days, entry {treatment.index}) respected",
                        (treatment.index,),
                    )
                )
        return (
            (Status.FAIL if failed else Status.PASS),
            tuple(reasons),
            {"treatments": len(treatments)},
        )


@dataclass(frozen=True, slots=True)
class Brucellosis:
    """Cattle and sheep need a negative brucellosis test within 30 days before moving or slaughter.

    # GB 16548-2006 / NY/T 1467 practice and the Ministry of Agriculture and Rural Affairs'
    # brucellosis control plan: ruminants are tested negative before movement and slaughter.
    A test is an event on the animal with ``test: {disease: brucellosis, result}``; the
    movement is a ``shipping`` of the animal, the slaughter its ``killing``.
    """

    id: str = "brucellosis"
    version: int = 1
    kinds: frozenset[str] = frozenset({"animal", "carcass", "cut"})
    window_ms: int = 30 * _DAY_MS

    def evaluate(self, history: History) -> tuple[Status, tuple[Reason, ...], Mapping[str, int]]:
        """Find, for every movement and slaughter of an animal, a negative test before it."""
        animals = history.of_kind("animal")
        if not animals:
            return Status.NOT_APPLICABLE, (Reason("no animal in the product's history"),), {}
        reasons: list[Reason] = []
        failed = False
        checked = 0
        for animal in animals:
            tests = [
                (e, test)
                for e in history.events_of([animal])
                if (test := _brucellosis_test(e.data)) is not None
            ]
            for moment in history.events_of([animal]):
                if moment.step not in ("shipping", "killing"):
                    continue
                checked += 1
                valid = [
                    e
                    for e, test in tests
                    if moment.time - self.window_ms <= e.time <= moment.time
                    and str(test.get("result", "")).lower() == "negative"
                ]
                if valid:
                    best = max(valid, key=lambda t: (t.time, t.index))
                    reasons.append(
                        Reason(
                            f"{animal}: {moment.step} at entry {moment.index} after the "
                            f"negative test at entry {best.index}",
                            (best.index, moment.index),
                        )
                    )
                else:
                    failed = True
                    reasons.append(
                        Reason(
                            f"{animal}: {moment.step} at entry {moment.index} without a "
                            "negative brucellosis test in the 30 days before",
                            (moment.index,),
                        )
                    )
        if not checked:
            return (
                Status.PASS,
                (Reason("no movement or slaughter of an animal yet"),),
                {"checked": 0},
            )
        return (Status.FAIL if failed else Status.PASS), tuple(reasons), {"checked": checked}


def _brucellosis_test(data: Mapping[str, object] | None) -> Mapping[str, object] | None:
    """The ``test`` map of an event's data when it is a brucellosis test."""
    test = (data or {}).get("test")
    if isinstance(test, Mapping) and str(test.get("disease", "")).lower() == "brucellosis":
        return test
    return None
