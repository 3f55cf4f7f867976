"""Calibrate the built-in tasks for the history corpus: one mid-range SFT -> GRPO trial per task,
run in this process on one thread (no Ray), printing the sampled accuracy right after SFT, the
final one, and the trial's wall time. The corpus needs post-SFT accuracy in about [0.2, 0.8] (so
GRPO has signal) and 10-30 s per trial on one core.

    .venv/bin/python benchmarks/calibrate_tasks.py --tasks add1 sort --sft-steps 100
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    from autopipe import metrics as M
    from autopipe.corpus.generate import CORPUS_TASKS, N_EVAL, N_RL
    from autopipe.spec import load_spec
    from autopipe.trial.run import run_trial
    from autopipe.trial.settings import TrialSettings
    from autopipe.trial.tasks import make_builtin
    from autopipe.tune.trainable import trial_settings

    ap = argparse.ArgumentParser()
    ap.add_argument("--job", default="jobs/demo.yaml", help="template job: model, space, eval")
    ap.add_argument("--tasks", nargs="+", default=sorted(CORPUS_TASKS))
    ap.add_argument("--sft-steps", type=int, default=None)
    ap.add_argument("--sft-lr", type=float, default=None)
    args = ap.parse_args()
    spec = load_spec(args.job)
    space = spec.to_space()
    # whole trials, whatever the template's early-stop fraction (the demo stops at 0.5)
    settings = TrialSettings(**{**trial_settings(spec), "early_stop_fraction": 1.0})
    # The middle of the space (GRPO), plus its constants.
    mid = {**space.constants, **space.from_unit([0.5] * len(space.params)), "rl.algorithm": "grpo"}
    mid = {**space.constants, **space.complete(mid)}
    print("config:", {k: v for k, v in mid.items()})
    print(f"{'task':8} {'n_train':>7} {'after_sft':>9} {'final':>6} {'greedy':>6} {'wall_s':>6}")
    for task in args.tasks:
        n_train = CORPUS_TASKS.get(task, spec.dataset.n_train)
        data = make_builtin(task, n_train, N_RL, N_EVAL, seed=0)
        cfg = dict(mid)
        if args.sft_steps:
            cfg["sft.steps"] = args.sft_steps
        if args.sft_lr:
            cfg["sft.lr"] = args.sft_lr
        last: dict = {}

        def report(metrics: dict, ckpt: str | None, last=last) -> None:
            last.update(metrics)

        t0 = time.time()
        out = run_trial(cfg, data, settings, report)
        m = out.metrics
        print(
            f"{task:8} {n_train:7d} {m.get(M.ACCURACY_AFTER_SFT, float('nan')):9.3f} "
            f"{out.objective:6.3f} {m.get(M.ACCURACY_GREEDY, float('nan')):6.3f} "
            f"{time.time() - t0:6.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
