"""The pacing of unreceipted messages: the receipt clock and the in-flight window (pure)."""

from __future__ import annotations

import random

import pytest

from gateway.pacing import INITIAL_WINDOW, InFlight, ReceiptClock
from gateway.runtime import ResendPolicy


def test_the_receipt_clock_follows_rfc_6298() -> None:
    """First sample: SRTT = R, RTTVAR = R/2; then the 1/8 and 1/4 smoothing; timeout SRTT+4V."""
    clock = ReceiptClock()
    assert clock.timeout_ms() == 0  # nothing measured: no floor
    clock.observe(400)
    assert (clock.srtt_ms, clock.rttvar_ms) == (400, 200)
    assert clock.timeout_ms() == 400 + 4 * 200
    clock.observe(800)
    assert clock.rttvar_ms == pytest.approx(0.75 * 200 + 0.25 * 400)
    assert clock.srtt_ms == pytest.approx(0.875 * 400 + 0.125 * 800)


def test_a_timeout_doubles_the_wait_until_a_round_trip_is_measured() -> None:
    """RFC 6298 §5.5: after a wait in vain, wait at least twice as long; a sample ends that."""
    clock = ReceiptClock()
    clock.observe(100)
    clock.timed_out(1_000)
    assert clock.timeout_ms() == 2_000
    clock.timed_out(2_000)
    assert clock.timeout_ms() == 4_000
    clock.observe(100)
    assert clock.timeout_ms() < 1_000


def test_the_window_grows_with_receipts_and_halves_on_a_timeout() -> None:
    """Each receipt opens the window by one; a look that expires messages halves it once."""
    flight = InFlight(max_window=100)
    assert flight.room(0) == INITIAL_WINDOW
    for n in range(INITIAL_WINDOW):
        flight.sent(n, sent_ms=0, deadline_ms=1_000)
    assert flight.room(10) == 0  # full: nothing more goes out
    for n in range(10):
        flight.receipted(n, now_ms=50)
    assert flight.window == INITIAL_WINDOW + 10
    assert flight.room(60) == 20  # ten places freed, ten added
    assert flight.clock.srtt_ms == 50
    assert flight.room(1_000) == (INITIAL_WINDOW + 10) // 2  # 54 timed out at once: one halving
    assert flight.timeouts == INITIAL_WINDOW - 10
    assert len(flight) == 0
    assert flight.clock.timeout_ms() == 2_000  # they waited 1 s in vain
    for n in range(1_000):
        flight.sent(("x", n), sent_ms=2_000, deadline_ms=9_000)
        flight.receipted(("x", n), now_ms=2_010)
    assert flight.window == 100  # never above the maximum


def test_a_resent_message_gives_no_round_trip_sample() -> None:
    """Karn's rule: the receipt of a message sent twice could answer either copy."""
    flight = InFlight()
    flight.sent("m", sent_ms=0, deadline_ms=100)
    flight.sent("m", sent_ms=100, deadline_ms=300)
    flight.receipted("m", now_ms=120)
    assert flight.clock.srtt_ms is None
    flight.receipted("unknown", now_ms=130)  # a receipt for nothing in flight changes nothing
    assert flight.window == INITIAL_WINDOW + 1


def test_a_new_connection_starts_from_the_initial_window() -> None:
    """reset() forgets what was in flight on the lost connection; the clock is kept."""
    flight = InFlight(max_window=10)
    assert flight.window == 10  # the start is never above the maximum
    flight.sent("m", sent_ms=0, deadline_ms=100)
    flight.receipted("m", now_ms=30)
    flight.sent("n", sent_ms=0, deadline_ms=100)
    flight.reset()
    assert len(flight) == 0
    assert flight.clock.srtt_ms == 30
    with pytest.raises(ValueError, match="at least 1"):
        InFlight(max_window=0)


@pytest.mark.parametrize("seed", range(3))
def test_the_resend_wait_is_never_shorter_than_a_receipt_takes(seed: int) -> None:
    """A measured round trip raises the jittered bound to twice it, never above the cap."""
    policy = ResendPolicy(initial_s=5.0, max_s=300.0)
    rng = random.Random(seed)  # noqa: S311 (a seeded schedule, not cryptography)
    waits = [policy.delay_ms(1, rng, at_least_ms=20_000) for _ in range(500)]
    assert all(20_000 <= w <= 40_000 for w in waits)  # [b/2, b] with b = 2 x 20 s
    assert max(waits) - min(waits) > 10_000  # still jittered
    capped = [policy.delay_ms(1, rng, at_least_ms=10**9) for _ in range(500)]
    assert all(150_000 <= w <= 300_000 for w in capped)
    plain = [policy.delay_ms(3, rng, at_least_ms=1) for _ in range(500)]
    assert all(10_000 <= w <= 20_000 for w in plain)  # a short round trip changes nothing


def test_receipted_and_replaced_entries_neither_expire_nor_pile_up() -> None:
    """A resent message expires at its new deadline only; receipted ones leave no trace."""
    flight = InFlight(max_window=10_000)
    flight.sent("m", sent_ms=0, deadline_ms=100)
    flight.sent("m", sent_ms=100, deadline_ms=500)  # resent: the old deadline no longer counts
    assert flight.room(200) == flight.window - 1
    assert flight.timeouts == 0
    assert flight.room(500) == flight.window  # now it expired (and the window halved)
    assert flight.timeouts == 1
    for n in range(100_000):
        flight.sent(n, sent_ms=n, deadline_ms=n + 10**9)
        flight.receipted(n, now_ms=n + 5)
    assert len(flight._deadlines) <= 1024 + 1  # rebuilt as receipts came in
    assert len(flight) == 0


def test_a_late_receipt_undoes_the_halving_and_is_measured() -> None:
    """Eifel (RFC 3522): timed out but answered before a resend: the wait was too short."""
    flight = InFlight(max_window=1000)
    for n in range(100):
        flight.sent(n, sent_ms=0, deadline_ms=500)
        flight.receipted(n, now_ms=100)
    assert flight.window == INITIAL_WINDOW + 100
    flight.sent("slow", sent_ms=1_000, deadline_ms=1_500)
    flight.sent("lost", sent_ms=1_000, deadline_ms=1_500)
    flight.room(1_600)
    assert flight.window == (INITIAL_WINDOW + 100) // 2
    flight.receipted("slow", now_ms=2_000)  # late, never sent again
    assert flight.window == INITIAL_WINDOW + 100
    assert flight.late == 1
    assert flight.clock.timeout_ms() < 2_000  # measured again: the backoff is over
    flight.sent("lost", sent_ms=2_000, deadline_ms=3_000)  # resent: its receipt is ambiguous
    flight.room(3_100)
    halved = flight.window
    flight.receipted("lost", now_ms=3_200)
    assert flight.window == halved  # a resent message's late receipt proves nothing
    assert flight.late == 1
