"""The budget gate: stop proposing once spent cost plus the final run's reserve reaches the cap."""

from __future__ import annotations

import pytest

from autopipe import metrics as M
from autopipe.scheduling.budget import BudgetGate
from autopipe.scheduling.ledger import Ledger, fallback_proxy


def _add(ledger: Ledger, tid: str, fraction: float, cost: float) -> None:
    ledger.record(tid, {"x": tid}, {M.FRACTION: fraction, M.COST_S: cost, M.TRAIN_LOSS: 1.0})


def test_early_stopped_trials_count_at_their_fraction_and_a_reserve_is_kept() -> None:
    ledger = Ledger()
    gate = BudgetGate(ledger, cost_cap_s=100.0, early_stop_fraction=0.5)
    assert not gate.exhausted() and gate.reserve_s() == 0.0  # nothing known yet
    _add(ledger, "a", 0.5, 20.0)  # a full run would cost 40 s
    assert gate.full_run_cost_s() == pytest.approx(40.0)
    assert gate.reserve_s() == pytest.approx(20.0)  # promotion resumes the second half
    _add(ledger, "b", 0.5, 20.0)
    _add(ledger, "c", 0.5, 20.0)
    assert ledger.spent_s() == pytest.approx(60.0)
    assert not gate.exhausted()  # 60 + 20 < 100
    _add(ledger, "d", 0.5, 20.0)
    assert gate.exhausted()  # 80 + 20 >= 100: keep the rest for the final full run


def test_the_reserve_covers_every_promoted_trial() -> None:
    ledger = Ledger()
    gate = BudgetGate(ledger, cost_cap_s=100.0, early_stop_fraction=0.5, promote=3)
    _add(ledger, "a", 0.5, 10.0)  # a full run would cost 20 s, its second half 10 s
    assert gate.reserve_s() == pytest.approx(30.0)  # three trials resume their second half
    _add(ledger, "b", 0.5, 10.0)
    assert not gate.exhausted()  # 20 + 30 < 100
    for t in "cdefg":
        _add(ledger, t, 0.5, 10.0)
    assert gate.exhausted()  # 70 + 30 >= 100


def test_no_cap_and_full_fidelity() -> None:
    ledger = Ledger()
    _add(ledger, "a", 1.0, 1e9)
    assert not BudgetGate(ledger, None, 0.5).exhausted()  # no cost cap: max_trials decides
    assert BudgetGate(ledger, 10.0, 1.0).reserve_s() == 0.0  # no promotion without early stops


def test_ledger_scores() -> None:
    ledger = Ledger()
    _add(ledger, "e", 0.5, 1.0)
    ledger.record("e", {}, {M.FRACTION: 0.5, M.EVAL_LOSS: 0.7, M.EARLY_STOPPED: 1.0})
    ledger.mark_early_stopped("e")
    assert ledger.score("e", None, M.OBJECTIVE) == (pytest.approx(-0.7), None)  # fallback proxy
    ledger.mark_failed("f", "diverged")
    assert ledger.score("f", {M.OBJECTIVE: 0.9}, M.OBJECTIVE) == (None, None)
    assert ledger.score("g", {M.OBJECTIVE: 0.9}, M.OBJECTIVE) == (0.9, None)  # completed
    assert ledger.score("h", {M.OBJECTIVE: float("nan")}, M.OBJECTIVE) == (None, None)
    assert fallback_proxy([], {})[0] != fallback_proxy([], {})[0]  # NaN without any loss


def test_a_trial_restarted_from_a_checkpoint_keeps_one_ordered_curve() -> None:
    ledger = Ledger()
    for step in (10, 20, 30):
        ledger.record("t", {}, {M.GLOBAL_STEP: step, M.KL: float(step)})
    # The trial's worker died; it restarts from its step-20 checkpoint and reports 20, 25.
    ledger.record("t", {}, {M.GLOBAL_STEP: 20, M.KL: 2.0})
    ledger.record("t", {}, {M.GLOBAL_STEP: 25, M.KL: 2.5})
    steps = [r[M.GLOBAL_STEP] for r in ledger.get("t").reports]
    assert steps == [10, 20, 25]  # the rewound steps replace what came after the checkpoint
    assert ledger.get("t").reports[1][M.KL] == 2.0  # the latest report of step 20
    # A final report at the same step as the last one is not a rewind: both are kept.
    ledger.record("t", {}, {M.GLOBAL_STEP: 25, M.OBJECTIVE: 0.5})
    assert [r[M.GLOBAL_STEP] for r in ledger.get("t").reports] == [10, 20, 25, 25]


def test_a_retried_trial_keeps_what_its_earlier_attempt_spent() -> None:
    ledger = Ledger()
    gate = BudgetGate(ledger, cost_cap_s=150.0, early_stop_fraction=1.0)
    for step in range(1, 11):  # the first attempt: 10 steps, 10 s each
        ledger.record("t", {}, {M.GLOBAL_STEP: step, M.FRACTION: step / 20, M.COST_S: 10.0 * step})
    assert ledger.spent_s() == 100.0
    # Ray Train retries it from its step-5 checkpoint in a new process: its clock starts again
    ledger.record("t", {}, {M.GLOBAL_STEP: 6, M.FRACTION: 0.3, M.COST_S: 5.0})
    assert ledger.spent_s() == 105.0  # the first attempt's 100 s are still spent
    for step in range(7, 12):
        ledger.record("t", {}, {M.GLOBAL_STEP: step, M.FRACTION: step / 20, M.COST_S: 5.0 * step})
    assert ledger.spent_s() == 155.0 and gate.exhausted()  # the cap counts both attempts
    # A clock that carries on from the checkpoint (step 8 at 40 s): only what the abandoned
    # attempt ran past it is added (55 - 40 = 15 s).
    ledger.record("t", {}, {M.GLOBAL_STEP: 9, M.FRACTION: 0.45, M.COST_S: 45.0})
    assert ledger.spent_s() == pytest.approx(100.0 + 15.0 + 45.0)
    # the earlier attempts' cost survives a save/restore of the ledger
    restored = Ledger()
    restored.load_state(ledger.state())
    assert restored.spent_s() == ledger.spent_s()


def test_a_proxy_that_raises_leaves_the_trial_unscored_not_the_job_dead() -> None:
    from autopipe.errors import DataError

    def broken(reports, config, peers):
        raise DataError("fraction must be > 0")

    ledger = Ledger(broken)
    _add(ledger, "t", 0.5, 1.0)
    rec = ledger.mark_early_stopped("t")  # runs in Tune's event loop: must not raise
    assert rec.status == M.STATUS_EARLY_STOPPED and rec.proxy is None
    assert rec.reason == "no proxy score: DataError: fraction must be > 0"
    assert ledger.score("t", None, M.OBJECTIVE) == (None, None)  # the searcher sees no value


def test_proxy_gets_the_other_trials_as_peers_but_not_failed_ones() -> None:
    seen: list[list] = []

    def proxy(reports, config, peers):
        seen.append(peers)
        return 0.0, 0.1

    ledger = Ledger(proxy)
    _add(ledger, "done", 0.5, 1.0)
    _add(ledger, "diverged", 0.5, 1.0)
    ledger.mark_failed("diverged", "kl growth")
    _add(ledger, "oom", 0.2, 1.0)
    ledger.record("oom", {}, {M.FRACTION: 0.2, M.FAILED: 1.0, M.FAILURE_REASON: "OOM"})
    _add(ledger, "me", 0.5, 1.0)
    ledger.mark_early_stopped("me")
    # one peer: not the trial itself, not one the scheduler failed, not one that ended in error
    assert len(seen) == 1 and len(seen[0]) == 1
    assert seen[0][0] == ledger.get("done").reports
