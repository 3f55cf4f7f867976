"""Memory hygiene between trials: 10 sequential SFT -> GRPO trials in one process (``run_trial``
directly, as a reused worker process would run them), printing the resident set size after each.

    .venv/bin/python benchmarks/rss.py [--trials 10] [--out benchmarks/results/rss.txt]
    .venv/bin/python benchmarks/rss.py --no-release --out /tmp/rss_no_release.txt  # counterfactual

The growth that counts is from the end of trial 2 to the end of the last trial: trial 1 pays the
one-off costs (imports, tokenizer and kernel caches, the allocator's first arenas).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

MIB = 1024 * 1024
CONFIG = {
    "sft.lr": 3e-3,
    "sft.steps": 20,
    "sft.warmup_ratio": 0.05,
    "rl.algorithm": "grpo",
    "rl.lr": 5e-5,
    "rl.beta": 0.02,
    "rl.num_generations": 4,
    "rl.temperature": 1.0,
    "rl.batch_size": 8,
    "rl.steps": 4,
}
BATCH_SIZES = (8, 16, 32)  # trials differ in shape, as a search's trials do


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(trials: int, release: bool = True) -> list[float]:
    """RSS in MiB after each of ``trials`` sequential trials (``release=False``: without
    ``release_memory``, to see what it buys)."""
    from autopipe.trial import run as trial_run
    from autopipe.trial.run import run_trial
    from autopipe.trial.settings import TrialSettings
    from autopipe.trial.tasks import make_builtin

    if not release:
        trial_run.release_memory = lambda: None

    data = make_builtin("sort", 400, 64, 32, seed=0)
    settings = TrialSettings(
        max_length=32, max_completion_length=8, threads=1, eval_samples=2, reports_per_stage=4
    )
    out = []
    for i in range(trials):
        cfg = {**CONFIG, "sft.batch_size": BATCH_SIZES[i % len(BATCH_SIZES)]}
        t = time.time()
        res = run_trial(cfg, data, settings, lambda m, c: None)
        out.append(rss_bytes() / MIB)
        print(
            f"trial {i + 1:2d}: {res.status:9s} {time.time() - t:5.1f} s  RSS {out[-1]:7.1f} MiB",
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/rss.txt")
    ap.add_argument("--no-release", action="store_true", help="skip release_memory between trials")
    args = ap.parse_args()
    if args.trials < 3:
        ap.error(f"--trials must be >= 3, but got {args.trials}")
    rss = run(args.trials, release=not args.no_release)
    growth = rss[-1] - rss[1]
    per = growth / (len(rss) - 2)
    lines = [
        f"{args.trials} sequential trials in one process (run_trial: SFT {CONFIG['sft.steps']} steps"
        f" -> GRPO {CONFIG['rl.steps']} steps, tiny-llama, sort, batch sizes {list(BATCH_SIZES)},"
        f" 1 thread); {platform.machine()}, {os.cpu_count()} cores, no GPU"
        + ("; WITHOUT release_memory" if args.no_release else ""),
        "RSS after each trial (MiB): " + ", ".join(f"{v:.1f}" for v in rss),
        f"after trial 1: {rss[0]:.1f} MiB; after trial 2: {rss[1]:.1f} MiB; "
        f"after trial {len(rss)}: {rss[-1]:.1f} MiB",
        f"growth trial 2 -> {len(rss)}: {growth:+.1f} MiB ({per:+.2f} MiB per trial); "
        f"max - min over trials 2..{len(rss)}: {max(rss[1:]) - min(rss[1:]):.1f} MiB",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
