"""Where a method's regret comes from: the replay benchmark's leave-one-group-out protocol
(direct engine, the same priors and searchers as `autopipe bench`), scoring at each budget not
only the method's recommendation but also the best single observed draw and the best
configuration it evaluated (its regret if it could pick perfectly among what it ran).

    OMP_THREAD_LIMIT=1 python benchmarks/bench_diagnose.py --data ../shared/data/hpobench \
        --methods autopipe no-bo global-best --seeds 3 --budgets 15 30 50

Prints mean regret over held-out tasks per (method, budget) for the three choices; --out writes
the per-(task, seed) rows as CSV.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import pandas as pd

from autopipe.bench import core as C
from autopipe.bench.direct import DirectReplayRunner
from autopipe.bench.methods import METHODS
from autopipe.history.runtable import read_run_table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="run table folder (no curves)")
    ap.add_argument("--methods", nargs="+", default=["autopipe", "no-bo", "global-best"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budgets", nargs="+", type=int, default=[15, 30, 50])
    ap.add_argument("--out", default=None, help="per-(method, task, seed, budget) rows as CSV")
    a = ap.parse_args()
    unknown = [m for m in a.methods if m not in METHODS or METHODS[m].offline]
    if unknown:
        ok = sorted(m for m, v in METHODS.items() if not v.offline)
        print(f"--methods must be among {ok}, but got {unknown}", file=sys.stderr)
        return 2
    h = read_run_table(a.data)
    methods = [METHODS[m] for m in a.methods]
    groups = h.group_of()
    runner = DirectReplayRunner()
    rows = []
    t0 = time.time()
    for g in sorted(set(groups.values())):
        train = [t for t, gg in groups.items() if gg != g]
        prior, gbest = C._fit_offline(h, train, methods, None)
        for t in [t for t, gg in groups.items() if gg == g]:
            truth = C.TaskTruth.from_history(h, t)
            ctx = C._context(h, t, prior, gbest, methods, a.budgets, max(a.budgets))
            for m in methods:
                bs = C.budget_of(m, a.budgets, max(a.budgets))
                for seed in range(a.seeds):
                    tr = runner(ctx, m, seed, max(bs), bs)
                    for b in bs:
                        regret, _, _ = tr.score(truth, b)
                        ev = tr.evals[:b]
                        obs = [e for e in ev if e.observed is not None]
                        best_draw = max(obs, key=lambda e: e.observed).key if obs else None
                        rows.append(
                            {
                                "method": m.name,
                                "task": t,
                                "seed": seed,
                                "budget": b,
                                "recommended": regret,
                                "best_observed_draw": truth.regret(best_draw),
                                "best_evaluated": min(
                                    (truth.regret(e.key) for e in ev), default=np.nan
                                ),
                            }
                        )
    df = pd.DataFrame(rows)
    if a.out:
        df.to_csv(a.out, index=False)
    cols = ["recommended", "best_observed_draw", "best_evaluated"]
    per_task = df.groupby(["method", "budget", "task"])[cols].mean()
    table = per_task.groupby(["method", "budget"]).mean().round(3)
    print(
        f"{h.name}: {df['task'].nunique()} held-out tasks x {a.seeds} seeds, {time.time() - t0:.0f}s"
    )
    print(table.to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
