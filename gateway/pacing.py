"""How many unreceipted messages a fleet keeps waiting for a receipt, and how long it waits.

A receipt is the only sign a message arrived, so a fleet that resends on a fixed timeout
repeats everything whenever receipts come slower than that timeout: after an outage the whole
backlog goes out at once, ingest works through it for longer than the resend timeout, and each
message is sent again, and again (docs/gateway.md, "When the broker is down", has the numbers).
Two things, after TCP's (RFC 6298, RFC 5681), keep the copies few:

* :class:`ReceiptClock` estimates how long receipts take to come back (smoothed round trip and
  its variation, RFC 6298 §2); the fleet waits at least that long before resending
  (:meth:`~gateway.runtime.ResendPolicy.delay_ms`);
* :class:`InFlight` bounds how many messages may wait for their receipt at once (a window).
  Each receipt opens the window by one, up to its maximum; a resend timeout that passes without
  a receipt halves it, down to one: while ingest or the broker is slow or away, the fleet probes
  with a few messages instead of resending its whole backlog on every timeout. A receipt that
  comes after its timeout, for a message not sent again, shows the timeout was too short: the
  halving is undone and the round trip measured (as TCP's Eifel detection, RFC 3522), so a
  backlog that merely makes receipts slower does not shrink the window to nothing.

Pure: times are milliseconds passed in by the caller; nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Final

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "InFlight", "ReceiptClock"]

#: Messages that may wait for their receipt at once. A fleet that loses every receipt (ingest
#: away) resends at most this many before its timeouts shrink the window.
DEFAULT_MAX_IN_FLIGHT: Final = 1024
#: The window a new connection starts with: a backlog goes out a window at a time, growing
#: while receipts come back (doubling each round trip), never all at once.
INITIAL_WINDOW: Final = 64
_ALPHA: Final = 1 / 8  # RFC 6298 §2.3
_BETA: Final = 1 / 4
_K: Final = 4
_GRANULARITY_MS: Final = 10.0


@dataclass(slots=True)
class ReceiptClock:
    """The receipt round trip of a fleet: smoothed estimate and variation (RFC 6298 §2)."""

    srtt_ms: float | None = None
    rttvar_ms: float = 0.0
    #: After a timeout, at least twice the wait that was too short (RFC 6298 §5.5), until a
    #: round trip is measured again: receipts of timed-out messages give no sample (Karn),
    #: so without this a fleet whose every message times out would never learn to wait longer.
    backoff_ms: int = 0

    def observe(self, sample_ms: float) -> None:
        """Take one round trip: from a message's publish to its receipt, in ms."""
        sample = max(0.0, sample_ms)
        self.backoff_ms = 0
        if self.srtt_ms is None:  # RFC 6298 §2.2
            self.srtt_ms = sample
            self.rttvar_ms = sample / 2
            return
        # RFC 6298 §2.3: RTTVAR first, from the old SRTT.
        self.rttvar_ms = (1 - _BETA) * self.rttvar_ms + _BETA * abs(self.srtt_ms - sample)
        self.srtt_ms = (1 - _ALPHA) * self.srtt_ms + _ALPHA * sample

    def timed_out(self, waited_ms: int) -> None:
        """Note that a message waited ``waited_ms`` for its receipt in vain."""
        self.backoff_ms = max(self.backoff_ms, 2 * waited_ms)

    def timeout_ms(self) -> int:
        """Return how long a receipt may reasonably take (0 before the first sample)."""
        if self.srtt_ms is None:
            return self.backoff_ms
        estimate = int(self.srtt_ms + max(_GRANULARITY_MS, _K * self.rttvar_ms))
        return max(estimate, self.backoff_ms)


@dataclass(slots=True)
class _Entry:
    sent_ms: int
    deadline_ms: int
    sends: int


@dataclass(slots=True)
class InFlight:
    """Messages published on the current connection that wait for their receipt.

    An entry leaves on its receipt (:meth:`receipted`) or when its resend time passes
    (:meth:`room` expires it: the message is due again and the window halves).
    """

    max_window: int = DEFAULT_MAX_IN_FLIGHT
    window: int = INITIAL_WINDOW
    clock: ReceiptClock = field(default_factory=ReceiptClock)
    _entries: dict[Hashable, _Entry] = field(default_factory=dict)
    # Timed out, not sent again yet: a receipt for one of these was merely late.
    _expired: dict[Hashable, _Entry] = field(default_factory=dict)
    _window_before: int = 0
    # Deadlines in order, so that expiring is not a scan of every entry; an item whose entry
    # has gone or been replaced since is skipped when it comes up.
    _deadlines: list[tuple[int, int, Hashable, _Entry]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)
    timeouts: int = 0
    #: Timeouts shown too short by a late receipt.
    late: int = 0

    def __post_init__(self) -> None:
        """Check the window: at least one message, the start no larger than the maximum."""
        if self.max_window < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.window = max(1, min(self.window, self.max_window))

    def __len__(self) -> int:
        """Return how many messages wait for their receipt."""
        return len(self._entries)

    def reset(self) -> None:
        """Forget every entry and start from the initial window (a new connection)."""
        self._entries.clear()
        self._expired.clear()
        self._deadlines.clear()
        self.window = min(INITIAL_WINDOW, self.max_window)

    def room(self, now_ms: int) -> int:
        """Expire entries whose resend time has come; return how many more may be sent now."""
        expired = 0
        while self._deadlines and self._deadlines[0][0] <= now_ms:
            _, _, key, entry = heapq.heappop(self._deadlines)
            if self._entries.get(key) is entry:
                del self._entries[key]
                self._expired[key] = entry
                self.clock.timed_out(entry.deadline_ms - entry.sent_ms)
                expired += 1
        if expired:
            self.timeouts += expired
            self._window_before = max(self._window_before, self.window)
            # RFC 5681 §3.1 halves on a loss; one halving per look, not per message, so that a
            # window of messages timing out together does not collapse it at once to one.
            self.window = max(1, self.window // 2)
        return max(0, self.window - len(self._entries))

    def sent(self, key: Hashable, sent_ms: int, deadline_ms: int) -> None:
        """Record a publish of ``key`` at ``sent_ms``, due again at ``deadline_ms``."""
        previous = self._entries.get(key) or self._expired.pop(key, None)
        sends = 1 if previous is None else previous.sends + 1
        entry = _Entry(sent_ms, deadline_ms, sends)
        self._entries[key] = entry
        heapq.heappush(self._deadlines, (deadline_ms, next(self._order), key, entry))

    def receipted(self, key: Hashable, now_ms: int) -> None:
        """Take ``key``'s receipt: free its place, open the window, measure the round trip.

        Only a message published once on this connection gives a sample (Karn's rule, RFC
        6298 §3): a receipt of a resent message could answer either copy.
        """
        entry = self._entries.pop(key, None)
        if entry is None:
            late = self._expired.pop(key, None)
            if late is not None and late.sends == 1:
                # Timed out, yet answered before being sent again: the wait was too short.
                self.late += 1
                self.clock.observe(now_ms - late.sent_ms)
                self.window = min(self.max_window, max(self.window, self._window_before))
                self._window_before = 0
            return
        if len(self._deadlines) > 4 * len(self._entries) + 1024:
            # Mostly receipted items: rebuild, so memory follows what is in flight.
            self._deadlines = [
                item for item in self._deadlines if self._entries.get(item[2]) is item[3]
            ]
            heapq.heapify(self._deadlines)
        if entry.sends == 1:
            self.clock.observe(now_ms - entry.sent_ms)
        self.window = min(self.max_window, self.window + 1)
