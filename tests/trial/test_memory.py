"""Memory hygiene: sequential trials in one process (as a reused worker runs them) release their
models, trainers and optimizers, so the resident set size does not grow from trial to trial."""

from __future__ import annotations

import os

from autopipe import metrics as M
from autopipe.trial.run import run_trial
from autopipe.trial.settings import TrialSettings
from autopipe.trial.tasks import make_builtin

MIB = 1024 * 1024
CFG = {
    "sft.lr": 3e-3,
    "sft.steps": 4,
    "sft.batch_size": 8,
    "rl.algorithm": "grpo",
    "rl.lr": 5e-5,
    "rl.beta": 0.02,  # a reference model too
    "rl.num_generations": 4,
    "rl.batch_size": 4,
    "rl.steps": 2,
}
# NOTE: tiny-llama-wide has ~3M float32 parameters: one trial's SFT and GRPO models, gradients
# and Adam moments are >= 3M * 4 B * 4 = 48 MiB, so a trial that leaked its model and optimizer
# would add about that much per trial. benchmarks/rss.py measured +0.2 MiB over trials 2 -> 10
# (benchmarks/results/rss.txt); the bound leaves room for allocator noise and still catches a
# leak of one trial.
BOUND_MIB = 24.0


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def test_rss_does_not_grow_across_sequential_trials() -> None:
    data = make_builtin("sort", 64, 16, 8, seed=0)
    settings = TrialSettings(
        model_name="tiny-llama-wide",
        max_length=24,
        max_completion_length=4,
        threads=1,
        eval_samples=1,
        reports_per_stage=2,
    )
    rss = []
    for i in range(4):
        cfg = {**CFG, "sft.batch_size": 8 * (1 + i % 2)}
        out = run_trial(cfg, data, settings, lambda m, c: None)
        assert out.status == M.STATUS_COMPLETED, out.failure
        rss.append(rss_mib())
    # Trial 1 pays one-off costs (imports, caches); from trial 2 on RSS stays flat.
    assert rss[-1] - rss[1] < BOUND_MIB, rss
