"""Producer credit scores: deterministic, explained, capped, never below zero."""

from __future__ import annotations

from contracts.credit import Complaint, Failure, RecallFact, Weights, credit_score


def test_a_clean_record_scores_100() -> None:
    """No failures, recalls or complaints: 100 and nothing to explain."""
    score = credit_score("farm", failures=[], recalls=[], complaints=[])
    assert (score.score, score.deductions) == (100, ())


def test_each_deduction_is_explained_and_capped() -> None:
    """7 cold-chain failures cost the cap of 30; a recall 20; 12 complaints the cap of 20."""
    failures = [Failure(f"01/06901234567892/10/L{n}", "egg-cold-chain", 10) for n in range(7)]
    failures.append(Failure("01/06901234567892/10/L9", "custody", 12))
    score = credit_score(
        "farm",
        failures=failures,
        recalls=[RecallFact(40, "01/06901234567892/10/L1", "Salmonella")],
        complaints=[Complaint(n, "01/06901234567892/10/L1") for n in range(12)],
    )
    points = [d.points for d in score.deductions]
    assert points == [5, 30, 20, 20]  # custody, egg-cold-chain (sorted), the recall, complaints
    assert score.score == 100 - 75
    assert "recall (entry 40)" in score.deductions[2].reason
    assert "7 product(s)" in score.deductions[1].reason


def test_the_score_does_not_depend_on_input_order_and_stops_at_zero() -> None:
    """Same facts in any order, same score; many recalls floor it at 0."""
    recalls = [RecallFact(n, f"01/06901234567892/10/L{n}", "x") for n in range(8)]
    forward = credit_score("farm", failures=[], recalls=recalls, complaints=[])
    backward = credit_score("farm", failures=[], recalls=list(reversed(recalls)), complaints=[])
    assert forward == backward
    assert forward.score == 0
    stricter = credit_score(
        "farm", failures=[], recalls=recalls[:1], complaints=[], weights=Weights(recall=50)
    )
    assert stricter.score == 50
