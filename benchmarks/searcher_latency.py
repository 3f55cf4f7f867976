"""Latency of ``suggest`` (``propose``) and ``on_trial_complete`` (``observe``) of the model-based
searchers over a 35,000-point grid with 200+ observations and 4 running trials; writes
``benchmarks/results/searcher_latency.md``. Measures time only, not search quality.

Usage: ``.venv/bin/python benchmarks/searcher_latency.py [--rounds 100] [--warm 200]``
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from autopipe.search import get_core_factory
from autopipe.space import Param, Space

OUT = Path(__file__).parent / "results" / "searcher_latency.md"
CONCURRENT = 4


def grid_space() -> Space:
    """10 x 7 x 5 x 5 x 4 x 5 = 35,000 configurations, 13 features."""
    return Space(
        [
            Param("sft.lr", "float", values=tuple(np.geomspace(1e-5, 1e-3, 10)), log=True),
            Param("sft.batch", "int", values=(8, 16, 32, 64, 128, 256, 512), log=True),
            Param("sft.epochs", "int", values=(1, 2, 3, 4, 5)),
            Param("lora_r", "int", values=(4, 8, 16, 32, 64), log=True),
            Param("opt", "categorical", choices=("adamw", "sgd", "lion", "adafactor")),
            Param("rl.beta", "float", values=(0.01, 0.03, 0.1, 0.3, 1.0), log=True),
        ]
    )


def objective(space: Space, cfg: dict[str, Any], rng: np.random.Generator) -> float:
    u = space.to_unit(cfg)
    bonus = {"adamw": 0.1, "lion": 0.05}.get(cfg["opt"], 0.0)
    return float(0.6 - 0.3 * np.sum((u - 0.35) ** 2) + bonus + 0.01 * rng.normal())


class SmoothPrior:
    """A prior that is roughly right (optimum at 0.4 instead of 0.35 on the numeric features)."""

    def score_features(self, meta: Any, X: np.ndarray) -> np.ndarray:
        num = X[:, [0, 1, 2, 3, 8]]
        s = -((num - 0.4) ** 2).sum(1)
        return (s - s.mean()) / s.std()


def pct(a: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(a) * 1e3, q))


def run(name: str, options: dict[str, Any], warm: int, rounds: int) -> dict[str, Any]:
    space = grid_space()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    core = get_core_factory(name)(space, seed=0, **options)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(warm):
        cfg = core.propose(f"w{i}")
        core.observe(f"w{i}", objective(space, cfg, rng))
    warm_s = time.perf_counter() - t0
    pending: deque[tuple[str, dict[str, Any]]] = deque()
    for i in range(CONCURRENT - 1):
        pending.append((f"p{i}", core.propose(f"p{i}")))
    sug, obs = [], []
    for i in range(rounds):
        t = time.perf_counter()
        cfg = core.propose(f"r{i}")
        sug.append(time.perf_counter() - t)
        pending.append((f"r{i}", cfg))
        tid, c = pending.popleft()
        value = objective(space, c, rng)
        t = time.perf_counter()
        core.observe(tid, value)
        obs.append(time.perf_counter() - t)
    return {
        "searcher": name + (" + prior" if options.get("prior") else ""),
        "build_s": build_s,
        "warm_s": warm_s,
        "n_obs": f"{warm}-{warm + rounds}",
        "p50": pct(sug, 50),
        "p95": pct(sug, 95),
        "p99": pct(sug, 99),
        "max": pct(sug, 100),
        "obs_p95": pct(obs, 95),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warm", type=int, default=200, help="observations before timing")
    ap.add_argument("--rounds", type=int, default=100, help="timed suggest/observe rounds")
    args = ap.parse_args()
    # Import the model stack before timing: module import (~3 s) is not a per-searcher cost.
    import botorch  # noqa: F401

    import autopipe.search.model_based  # noqa: F401

    rows = [
        run(
            "autopipe",
            {"prior": SmoothPrior(), "budget": args.warm + args.rounds},
            args.warm,
            args.rounds,
        ),
        run("autopipe", {"budget": args.warm + args.rounds}, args.warm, args.rounds),
        run("gp-ei", {}, args.warm, args.rounds),
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Searcher latency",
        "",
        f"35,000-point grid (13 features), {args.warm} observations before timing, then "
        f"{args.rounds} rounds of one suggest and one completion with {CONCURRENT} trials running; "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
        f"1-minute load average {load:.1f} at the end. Milliseconds.",
        "",
        "| searcher | build (s) | first 200 obs (s) | observations | suggest p50 | suggest p95 | "
        "suggest p99 | suggest max | complete p95 |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['searcher']} | {r['build_s']:.2f} | {r['warm_s']:.1f} | {r['n_obs']} | "
            f"{r['p50']:.1f} | {r['p95']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['obs_p95']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
