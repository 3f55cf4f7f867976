"""Benchmark of the early predictor on the shared scan_llm run table: runs ``autopipe predictor
evaluate`` at fractions 0.1, 0.25 and 0.5 (5-fold over configurations, the table has one task)
and writes the markdown table and per-task CSV to ``benchmarks/results/predictor/``, then times
one fit and one online prediction. It does not run hpobench/hpolib: they have no curves and the
command exits 2 on them. Usage: ``python benchmarks/predictor_eval.py [--data ../shared/data]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from autopipe.cli import main as cli_main  # noqa: E402
from autopipe.history.runtable import read_run_table  # noqa: E402
from autopipe.predictor.early import EarlyPredictor, PredictorConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FRACTIONS = ("0.1", "0.25", "0.5")


def timing(data: Path, seed: int) -> str:
    """Fit the direct predictor on all of scan_llm at f = 0.25; time 100 online predictions."""
    h = read_run_table(data / "scan_llm")
    t0 = time.perf_counter()
    model = EarlyPredictor.fit(h, 0.25, config=PredictorConfig(seed=seed))
    fit_s = time.perf_counter() - t0
    run = h.runs.iloc[0]
    rows = h.curves.loc[h.curves["run_id"] == run["run_id"]]
    reports = rows.drop(columns="run_id").to_dict("records")
    config = {n: run[n] for n in h.space.names}
    model.predict_reports(reports, config, None, None)  # warm-up
    t0 = time.perf_counter()
    for _ in range(100):
        model.predict_reports(reports, config, None, None)
    per_call_ms = (time.perf_counter() - t0) * 10.0
    return (
        "| fit, direct variant, f = 0.25, all 1,193 runs (5 regressors) | predict_reports, one trial |\n"
        "|---:|---:|\n"
        f"| {fit_s:.1f} s | {per_call_ms:.1f} ms |\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--data", default=str(REPO.parent / "shared" / "data"), help="folder holding the run tables"
    )
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "predictor"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rc = cli_main(
        [
            "predictor",
            "evaluate",
            "--history",
            str(data / "scan_llm"),
            "--fraction",
            *FRACTIONS,
            "--seed",
            str(args.seed),
            "--out",
            str(out / "scan_llm.md"),
            "--csv",
            str(out / "scan_llm.csv"),
        ]
    )
    print(f"scan_llm: exit {rc} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    if rc != 0:
        return rc
    text = timing(data, args.seed)
    (out / "timing.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
