"""What a trial is given besides its configuration (:class:`TrialSettings`, from the job spec),
what it returns, how it reports, and how many steps it runs and where it stops early.
No torch, no TRL.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# metrics: dict of metric name -> value; checkpoint: a local directory to persist, or None
Reporter = Callable[[dict[str, Any], "str | None"], None]


@dataclass
class TrialSettings:
    """Everything a trial needs besides its configuration (from the job spec)."""

    model_name: str = "tiny-llama"
    model_path: str | None = None
    max_length: int = 64
    max_completion_length: int = 16
    dtype: str = "float32"
    eval_samples: int = 4
    eval_temperature: float = 0.8
    reward_format_weight: float = 0.1
    rewards: list[tuple[str, float]] | None = None  # (name, weight) of autopipe.trial.rewards
    deepspeed: int | None = None
    # "cuda": the trial was given GPUs; "cpu": it was not (a CPU trial on a GPU machine must not
    # put tensors on a GPU its gloo process group cannot reduce); "auto": CUDA when present
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    reports_per_stage: int = 10
    eval_loss_examples: int = 64
    early_stop_fraction: float = 1.0  # stop after this fraction of the full trial (1.0 = never)


@dataclass
class TrialOutcome:
    status: str  # metrics.STATUS_*
    objective: float
    metrics: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None


def _sft_steps(cfg: dict[str, Any], n_train: int, world: int) -> int:
    if "sft.steps" in cfg:
        return int(cfg["sft.steps"])
    per_step = max(1, int(cfg["sft.batch_size"]) * world)
    return max(1, math.ceil(float(cfg["sft.epochs"]) * n_train / per_step))


def plan_steps(cfg: dict[str, Any], n_train: int, world: int = 1) -> tuple[int, int]:
    """``(sft_steps, rl_steps)`` of a full trial."""
    rl = int(cfg.get("rl.steps", 0)) if cfg.get("rl.algorithm") else 0
    return _sft_steps(cfg, n_train, world), rl


def early_stop_step(
    sft_steps: int, rl_steps: int, fraction: float, at_boundary: bool = False
) -> int | None:
    """The SFT step at which a trial stops early, or ``None`` to run to the end.

    AutoPipe stops inside SFT; an early point at or beyond the end of SFT stops at the SFT/RL
    boundary (step ``sft_steps``), where the SFT model is the resumption point. ``at_boundary``
    moves any early point there (checkpoints inside SFT that cannot be resumed).
    """
    if fraction >= 1.0:
        return None
    if at_boundary:
        return sft_steps
    step = max(1, math.ceil(fraction * (sft_steps + rl_steps)))
    return min(step, sft_steps)
