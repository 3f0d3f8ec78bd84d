"""A settable clock for apps under test (``create_app(..., clock=...)``)."""

from __future__ import annotations

__all__ = ["Clock"]


class Clock:
    """A settable clock in ms since the Unix epoch: move ``now_ms`` to move time."""

    def __init__(self, start_ms: int) -> None:
        """Start at ``start_ms``."""
        self.now_ms = start_ms

    def __call__(self) -> int:
        """Return the current reading."""
        return self.now_ms
