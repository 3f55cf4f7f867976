"""The stop policy on scripted curves, one comment per assertion."""

from __future__ import annotations

import math

import pytest

from autopipe import metrics as M
from autopipe.scheduling.policy import Decision, StopRules, decide

RULES = StopRules(early_stop_fraction=0.5)


def sft(frac: float, loss: float = 1.0, **kw: float) -> dict:
    return {M.STAGE: "sft", M.FRACTION: frac, M.TRAIN_LOSS: loss, **kw}


def rl(frac: float, kl: float | None = None, reward: float | None = None) -> dict:
    r: dict = {M.STAGE: "rl", M.FRACTION: frac, M.TRAIN_LOSS: 0.1}
    if kl is not None:
        r[M.KL] = kl
    if reward is not None:
        r[M.REWARD_MEAN] = reward
    return r


def test_empty_and_healthy_curves_continue() -> None:
    # No reports yet: nothing to decide.
    assert decide([], RULES).decision is Decision.CONTINUE
    # A decreasing SFT loss below the early point continues.
    assert decide([sft(0.1, 2.0), sft(0.2, 1.5)], RULES).decision is Decision.CONTINUE


def test_non_finite_loss_fails() -> None:
    # NaN train loss: the trial failed.
    v = decide([sft(0.1, 2.0), sft(0.2, math.nan)], RULES)
    assert v.decision is Decision.STOP_FAILED and "non-finite train_loss" in v.reason
    # +inf eval loss: failed too.
    assert (
        decide([sft(0.1, 1.0, **{M.EVAL_LOSS: math.inf})], RULES).decision is Decision.STOP_FAILED
    )


def test_non_finite_kl_or_reward_fails_while_the_loss_is_finite() -> None:
    # An infinite KL (KL penalty off, so the loss stays finite): the trial failed.
    v = decide([rl(0.6, kl=0.01), rl(0.7, kl=math.inf)], RULES)
    assert v.decision is Decision.STOP_FAILED and "non-finite kl" in v.reason
    # A NaN mean reward: failed too.
    v = decide([rl(0.6, reward=0.5), rl(0.7, reward=math.nan)], RULES)
    assert v.decision is Decision.STOP_FAILED and "non-finite reward_mean" in v.reason
    # An RL report without KL or reward at all is not a failure.
    assert decide([rl(0.6), rl(0.7)], RULES).decision is Decision.CONTINUE
    # A NaN KL on an earlier report followed by a finite one: only the latest report counts.
    assert decide([rl(0.6, kl=math.nan), rl(0.7, kl=0.01)], RULES).decision is Decision.CONTINUE


def test_early_point_needs_the_trials_own_flag() -> None:
    # Reaching the fraction on an ordinary log report is not yet the stop (the trial is saving).
    assert decide([sft(0.5)], RULES).decision is Decision.CONTINUE
    # The flagged report at the early point stops early.
    assert decide([sft(0.5, **{M.EARLY_STOPPED: 1.0})], RULES).decision is Decision.STOP_EARLY
    # A trainable that cannot stop itself is stopped as soon as the fraction is reached.
    rules = StopRules(early_stop_fraction=0.5, trial_stops_itself=False)
    assert decide([sft(0.6)], rules).decision is Decision.STOP_EARLY
    # An early point past the end of SFT stops at the SFT/RL boundary, below the fraction: the
    # trial's flag decides, not the fraction.
    assert decide([sft(0.2, **{M.EARLY_STOPPED: 1.0})], RULES).decision is Decision.STOP_EARLY
    # early_stop_fraction 1.0 never stops early.
    assert decide([sft(1.0, **{M.EARLY_STOPPED: 1.0})], StopRules()).decision is Decision.CONTINUE


def test_kl_growth_for_five_reports_fails() -> None:
    kls = [0.01, 0.012, 0.0145, 0.0175, 0.021, 0.026]  # +20..24 % each step, 5 growth steps
    v = decide([rl(0.6 + i / 100, kl=k) for i, k in enumerate(kls)], RULES)
    # Five consecutive >15 % increases: diverging.
    assert v.decision is Decision.STOP_FAILED and "KL grew" in v.reason
    # Four increases are not enough.
    assert (
        decide([rl(0.6 + i / 100, kl=k) for i, k in enumerate(kls[:5])], RULES).decision
        is Decision.CONTINUE
    )
    # A dip resets the run of increases.
    dipped = [0.01, 0.012, 0.0145, 0.010, 0.012, 0.0145, 0.0175]
    assert decide([rl(0.6, kl=k) for k in dipped], RULES).decision is Decision.CONTINUE


def test_kl_near_zero_is_guarded() -> None:
    # KL doubling from 1e-6 is noise, not divergence: below kl_floor it does not count.
    tiny = [1e-6 * 2**i for i in range(8)]
    assert decide([rl(0.6, kl=k) for k in tiny], RULES).decision is Decision.CONTINUE
    # Exactly zero KL (beta = 0 logs nothing or 0) never triggers a division problem.
    assert decide([rl(0.6, kl=0.0) for _ in range(8)], RULES).decision is Decision.CONTINUE


def test_reward_collapse_and_stuck_at_zero() -> None:
    falling = [0.8, 0.7, 0.6, 0.5, 0.4, 0.3]  # each >10 % below the last, 5 drops
    v = decide([rl(0.6, reward=r) for r in falling], RULES)
    # Reward dropping >10 % for 5 consecutive reports: failed.
    assert v.decision is Decision.STOP_FAILED and "reward dropped" in v.reason
    # Small fluctuations are fine.
    assert (
        decide([rl(0.6, reward=r) for r in [0.5, 0.48, 0.5, 0.47, 0.49, 0.46]], RULES).decision
        is Decision.CONTINUE
    )
    # Reward exactly zero for 5 reports: stuck, failed.
    v = decide([rl(0.6, reward=0.0) for _ in range(5)], RULES)
    assert v.decision is Decision.STOP_FAILED and "stuck at zero" in v.reason
    # Four zeros are not yet stuck.
    assert decide([rl(0.6, reward=0.0) for _ in range(4)], RULES).decision is Decision.CONTINUE


def test_rules_validate() -> None:
    # A fraction outside (0, 1] is a configuration error.
    with pytest.raises(ValueError, match="early_stop_fraction"):
        StopRules(early_stop_fraction=0.0)
