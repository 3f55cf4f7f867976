"""Progress of a running trial: TRL's log records turned into AutoPipe reports (metric names of
:mod:`autopipe.metrics`, the trial's fraction, cost and stage), with the non-finite-loss check
and the injected NaN / crash faults.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

from autopipe import metrics as M
from autopipe.errors import TrialError
from autopipe.trial.settings import Reporter

# TRL log keys -> our metric names (producer side of autopipe.metrics)
_LOG_KEYS = {
    "loss": M.TRAIN_LOSS,
    "eval_loss": M.EVAL_LOSS,
    "grad_norm": M.GRAD_NORM,
    "learning_rate": M.LEARNING_RATE,
    "entropy": M.ENTROPY,
    "reward": M.REWARD_MEAN,
    "reward_std": M.REWARD_STD,
    "kl": M.KL,
    "completions/mean_length": M.COMPLETION_LENGTH,
    "rewards/margins": M.REWARD_MEAN,  # DPO: reward margin chosen - rejected
}


class Progress:
    """Shared by the trainer callbacks: turns TRL logs into reports with fractions."""

    def __init__(
        self, report: Reporter, total_steps: int, t0: float, world: int, cuda: bool = False
    ) -> None:
        self.report = report
        self.cuda = cuda
        self.total = max(1, total_steps)
        self.t0 = t0
        self.world = world
        self.offset = 0
        self.stage = "sft"
        self.last: dict[str, float] = {}
        self.objective = float("nan")
        self.fault: str | None = None
        self.stage_s: dict[str, float] = {}

    def base(self, step: int) -> dict[str, Any]:
        g = self.offset + step
        return {
            M.STAGE: self.stage,
            M.GLOBAL_STEP: g,
            M.FRACTION: min(1.0, g / self.total),
            M.ELAPSED_S: time.time() - self.t0,
            M.COST_S: (time.time() - self.t0) * self.world,
            M.OBJECTIVE: self.objective,
        }

    def resources(self) -> dict[str, float]:
        """Stage wall times so far and, on a GPU, the peak memory allocated since the start."""
        import torch

        out = dict(self.stage_s)
        if self.cuda:
            out[M.GPU_MEM_PEAK_MB] = torch.cuda.max_memory_allocated() / 2**20
        return out

    def on_log(self, logs: dict[str, Any], step: int) -> None:
        out = self.base(step)
        for k, v in logs.items():
            name = _LOG_KEYS.get(k)
            if name is None or not isinstance(v, (int, float)):
                continue
            out[name] = float(v)
        if self.fault == "nan" and M.TRAIN_LOSS in out:
            out[M.TRAIN_LOSS] = float("nan")
        if M.TRAIN_LOSS in out and not math.isfinite(out[M.TRAIN_LOSS]):
            raise TrialError(
                f"non-finite train loss ({out[M.TRAIN_LOSS]}) at step {out[M.GLOBAL_STEP]}"
            )
        self.last.update({k: v for k, v in out.items() if isinstance(v, float)})
        self.report(out, None)
        if self.fault in ("crash", "crash-always") and self.stage == "rl":
            os._exit(17)  # injected: the worker process dies mid-RL without any cleanup


def report_callback(progress: Progress) -> Any:
    from transformers import TrainerCallback

    class ReportCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            if logs and ("loss" in logs or "eval_loss" in logs or "reward" in logs):
                progress.on_log(logs, state.global_step)

    return ReportCallback()
