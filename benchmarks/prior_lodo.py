"""Leave-one-dataset-out benchmark of the ranking prior on the shared run tables: runs
``autopipe prior evaluate --lodo`` on hpobench and hpolib, writes the markdown tables and per-task
CSVs to ``benchmarks/results/prior/``, and times one full fit and the scoring of 35,000
configurations. Usage: ``python benchmarks/prior_lodo.py [--data ../shared/data]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from autopipe.cli import main as cli_main  # noqa: E402
from autopipe.history.runtable import read_run_table  # noqa: E402
from autopipe.prior.ranker import RankerConfig, RankingPrior  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TABLES = ("hpobench", "hpolib")


def timing(data: Path, name: str, seed: int) -> str:
    """Fit on every task of ``name``; score 35,000 configurations of one task."""
    h = read_run_table(data / name)
    t0 = time.perf_counter()
    prior = RankingPrior.fit(h, RankerConfig(seed=seed))
    fit_s = time.perf_counter() - t0
    ct = h.config_table()
    rng = np.random.default_rng(seed)
    cand = ct.iloc[rng.choice(len(ct), 35_000, replace=False)]
    meta = h.meta_features(h.task_ids[0])
    prior.score(meta, cand.head(100))  # warm-up (first predict allocates)
    t0 = time.perf_counter()
    prior.score(meta, cand)
    score_s = time.perf_counter() - t0
    return (
        f"| {name} | {len(prior.training['tasks'])} | {prior.training['rows_per_model']} | "
        f"{fit_s:.1f} | {score_s:.3f} |"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--data", default=str(REPO.parent / "shared" / "data"), help="folder holding the run tables"
    )
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "prior"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        t0 = time.perf_counter()
        rc = cli_main(
            [
                "prior",
                "evaluate",
                "--history",
                str(data / name),
                "--lodo",
                "--seed",
                str(args.seed),
                "--out",
                str(out / f"{name}_lodo.md"),
                "--csv",
                str(out / f"{name}_lodo.csv"),
            ]
        )
        print(f"{name}: exit {rc} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        if rc != 0:
            return rc
    lines = [
        "| table | tasks | rows per model | fit (s, 3 models) | score 35,000 configs (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [timing(data, name, args.seed) for name in TABLES]
    text = "\n".join(lines) + "\n"
    (out / "timing.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
