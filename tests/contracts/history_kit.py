"""A builder of verified stories for contract tests (no database: contracts are pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from contracts import History
from tracecore.verdict import SensorPoint, Story, StoryEvent

__all__ = ["DAY", "HOUR", "MINUTE", "StoryBuilder"]

MINUTE: Final = 60_000
HOUR: Final = 60 * MINUTE
DAY: Final = 24 * HOUR


@dataclass
class StoryBuilder:
    """Events and readings appended in log order; ``history(product)`` builds the input."""

    devices: dict[str, str] = field(
        default_factory=lambda: {
            "farm-dev": "farm",
            "vet-dev": "farm",
            "lab-dev": "lab",
            "truck-dev": "carrier",
            "shop-dev": "shop",
            "plant-dev": "abattoir",
            "logger": "farm",
        }
    )
    events: list[StoryEvent] = field(default_factory=list)
    readings: list[SensorPoint] = field(default_factory=list)
    parents: dict[str, tuple[str, ...]] = field(default_factory=dict)
    index: int = 0

    def event(
        self,
        time: int,
        step: str,
        products: tuple[str, ...],
        *,
        parents: tuple[str, ...] = (),
        data: Mapping[str, object] | None = None,
        device: str = "farm-dev",
    ) -> int:
        """Append an event; return its log index."""
        self.index += 1
        self.events.append(
            StoryEvent(
                self.index, time, step, device, self.devices[device], products, parents, None, data
            )
        )
        for product in products:
            if parents:
                self.parents[product] = parents
        return self.index

    def reading(
        self, time: int, products: tuple[str, ...], celsius: float, device: str = "logger"
    ) -> int:
        """Append a temperature reading; return its log index."""
        self.index += 1
        self.readings.append(
            SensorPoint(self.index, time, device, products, "Temperature", celsius, "CEL")
        )
        return self.index

    def history(self, product: str) -> History:
        """The history of ``product`` (events and readings in time order, as a Story gives)."""
        story = Story(
            product=product,
            owner=None,
            created=None,
            owners={},
            heads={},
            events=tuple(sorted(self.events, key=lambda e: (e.time, e.index))),
            readings=tuple(sorted(self.readings, key=lambda r: (r.time, r.index))),
            parents=dict(self.parents),
            devices=dict(self.devices),
            recalls=(),
        )
        return History.from_story(story)
