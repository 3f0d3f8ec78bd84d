"""Jittered exponential backoff: how long to wait before the next reconnect or resend.

Pure arithmetic (no clock, no sleeping), shared by the services that reconnect to the broker
(ingest) and the device runtime that resends (firmware_sim). The jitter (by default a uniform
draw between half the nominal delay and the nominal delay) keeps a fleet of clients that lost
the broker at the same moment from reconnecting in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with jitter: ``initial * factor**n``, capped at ``cap``, jittered.

    Call :meth:`next_delay` after each failure and :meth:`reset` after a success.
    """

    initial: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def __post_init__(self) -> None:
        """Check the parameters: positive times, a factor of at least 1, jitter in [0, 1]."""
        if self.initial <= 0 or self.cap < self.initial:
            raise ValueError("backoff needs 0 < initial <= cap")
        if self.factor < 1:
            raise ValueError("backoff factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be in [0, 1]")

    def nominal(self, failures: int) -> float:
        """Return the delay before jitter after ``failures`` consecutive failures (>= 1)."""
        # min() before the power would still overflow for huge counts; clamp the exponent.
        exponent = min(max(failures - 1, 0), 64)
        return float(min(self.cap, self.initial * self.factor**exponent))

    def next_delay(self) -> float:
        """Count one more failure and return the seconds to wait before the next attempt."""
        self.failures += 1
        delay = self.nominal(self.failures)
        return delay * (1 - self.jitter * self.rng.random())

    def reset(self) -> None:
        """Forget past failures (call after a successful attempt)."""
        self.failures = 0
