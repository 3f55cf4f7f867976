"""The stop policy: given the reports a trial has made so far, CONTINUE, STOP_EARLY (it reached
its early-stop fraction) or STOP_FAILED (it diverged). Ray-free and stateless: the decision is a
pure function of the curve so far.

Rules (JF-HPO's divergence rules, thresholds configurable):
- a non-finite train or eval loss, or an RL report's non-finite KL or mean reward (with the KL
  penalty off or a reward masked, the loss can stay finite while these are not);
- RL KL growing by more than ``kl_growth`` (15 %) per report for ``patience`` (5) consecutive
  reports, counted only while the previous KL is above ``kl_floor`` (relative growth of a KL
  near zero is noise);
- RL mean reward dropping by more than ``reward_drop`` (10 %) per report for ``patience``
  consecutive reports (only while the previous reward is above ``reward_floor``), or exactly
  zero for ``patience`` consecutive reports.
This module does not predict final scores (autopipe.predictor does) and does not know Ray.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autopipe import metrics as M


class Decision(enum.Enum):
    CONTINUE = "continue"
    STOP_EARLY = "stop-early"
    STOP_FAILED = "stop-failed"


@dataclass(frozen=True)
class StopRules:
    early_stop_fraction: float = 1.0  # >= 1: never stop early
    kl_growth: float = 0.15
    kl_floor: float = 1e-3
    reward_drop: float = 0.10
    reward_floor: float = 1e-6
    patience: int = 5
    # The trial stops itself at its early point (after saving a resumable checkpoint) and flags
    # that report; then only the flagged report means STOP_EARLY, so the scheduler never kills a
    # trial half-way through saving. Trainables that cannot stop themselves set this to False.
    trial_stops_itself: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.early_stop_fraction <= 1:
            raise ValueError(
                f"early_stop_fraction must be in (0, 1], but got {self.early_stop_fraction}"
            )
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, but got {self.patience}")


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str = ""


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _rl_series(reports: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in reports if r.get(M.STAGE) == "rl" and _finite(r.get(key))]


def _run_length(values: list[float], bad: Any) -> int:
    """Length of the trailing run of consecutive steps where ``bad(prev, cur)`` holds."""
    n = 0
    for prev, cur in zip(reversed(values[:-1]), reversed(values[1:]), strict=True):
        if not bad(prev, cur):
            break
        n += 1
    return n


def decide(reports: Sequence[dict[str, Any]], rules: StopRules) -> Verdict:
    """Decide on the latest report of a trial given all its reports so far (oldest first)."""
    if not reports:
        return Verdict(Decision.CONTINUE)
    last = reports[-1]
    for key in (M.TRAIN_LOSS, M.EVAL_LOSS):
        v = last.get(key)
        if v is not None and not _finite(v):
            return Verdict(
                Decision.STOP_FAILED, f"non-finite {key} ({v}) at step {last.get(M.GLOBAL_STEP)}"
            )
    if last.get(M.STAGE) == "rl":
        for key in (M.KL, M.REWARD_MEAN):
            v = last.get(key)
            if v is not None and not _finite(v):
                return Verdict(
                    Decision.STOP_FAILED,
                    f"non-finite {key} ({v}) at step {last.get(M.GLOBAL_STEP)}",
                )
    kl = _rl_series(reports, M.KL)
    grow = _run_length(kl, lambda a, b: a > rules.kl_floor and b > a * (1 + rules.kl_growth))
    if grow >= rules.patience:
        return Verdict(
            Decision.STOP_FAILED,
            f"KL grew by more than {rules.kl_growth:.0%} for {grow} consecutive reports (now {kl[-1]:.4g})",
        )
    reward = _rl_series(reports, M.REWARD_MEAN)
    drop = _run_length(
        reward, lambda a, b: a > rules.reward_floor and b < a * (1 - rules.reward_drop)
    )
    if drop >= rules.patience:
        return Verdict(
            Decision.STOP_FAILED,
            f"reward dropped by more than {rules.reward_drop:.0%} for {drop} consecutive reports "
            f"(now {reward[-1]:.4g})",
        )
    if len(reward) >= rules.patience and all(r == 0.0 for r in reward[-rules.patience :]):
        return Verdict(Decision.STOP_FAILED, f"reward stuck at zero for {rules.patience} reports")
    if rules.trial_stops_itself:
        # The trial's flagged report is its early point, whatever its fraction: a point past
        # the end of SFT stops at the SFT/RL boundary, below the configured fraction.
        if rules.early_stop_fraction < 1.0 and last.get(M.EARLY_STOPPED):
            return Verdict(Decision.STOP_EARLY, "reached its early point (flagged by the trial)")
        return Verdict(Decision.CONTINUE)
    frac = last.get(M.FRACTION)
    if (
        rules.early_stop_fraction < 1.0
        and _finite(frac)
        and frac >= rules.early_stop_fraction - 1e-9
    ):
        return Verdict(
            Decision.STOP_EARLY, f"reached the early-stop fraction {rules.early_stop_fraction:g}"
        )
    return Verdict(Decision.CONTINUE)
