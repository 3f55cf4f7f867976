"""The ``autopipe bench`` subcommand: the leave-one-group-out replay benchmark over run tables
(:mod:`autopipe.bench`). Argument checks and output paths only; ``register(subparsers)`` adds it
to the main parser. Bad input raises :class:`~autopipe.errors.AutoPipeError` before Ray starts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from autopipe.cli.paths import check_out_dir
from autopipe.errors import DataError

DEFAULT_BUDGETS = (15, 30, 50, 100, 150)


def register(subparsers: Any) -> None:
    from autopipe.bench.methods import DEFAULT_METHODS

    b = subparsers.add_parser(
        "bench",
        help="replay benchmark: tune held-out tasks of run tables with each method (LOGO)",
    )
    b.add_argument("--data", nargs="+", required=True, help="run table folders, one benchmark each")
    b.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_METHODS),
        help=f"default: {' '.join(DEFAULT_METHODS)}",
    )
    b.add_argument(
        "--budget",
        type=int,
        nargs="+",
        default=list(DEFAULT_BUDGETS),
        help="evaluation budgets at which regret is scored; the baselines run to the largest "
        "(default 15 30 50 100 150)",
    )
    b.add_argument(
        "--autopipe-budget",
        type=int,
        default=50,
        help="AutoPipe, its ablations and global-best run to this many evaluations (default 50)",
    )
    b.add_argument(
        "--engine",
        choices=("tune", "direct"),
        default="tune",
        help="tune: one Ray Tune Tuner per (method, task, seed); direct: the same searchers and "
        "schedulers driven in-process through their Tune interfaces, no Ray (not bohb on tables "
        "with curves, whose scheduler pauses trials; default tune)",
    )
    b.add_argument(
        "--early-fraction",
        type=float,
        default=0.5,
        help="tables with curves: AutoPipe and its ablations stop each trial at this fraction "
        "and score it by the predictor fitted on the training tasks (1: full runs; default 0.5)",
    )
    b.add_argument(
        "--promote",
        type=int,
        default=None,
        help="tables with curves and --early-fraction < 1: how many early-stopped configurations "
        "of the searcher's shortlist (its recommendation, then the best proxies) AutoPipe and "
        "its ablations run to full fidelity at the end, the best full result recommended, each "
        "charged a full run (default: a job's budget.promote default, 3)",
    )
    b.add_argument("--seeds", type=int, default=10, help="seeds per held-out task (default 10)")
    b.add_argument("--tasks", type=int, default=None, help="hold out only the first N tasks")
    b.add_argument("--prior-models", type=int, default=3, help="ranker ensemble size (default 3)")
    b.add_argument(
        "--out",
        default="benchmarks/results",
        help="writes OUT/<name>/ (default benchmarks/results)",
    )
    b.add_argument("--name", default=None, help="result folder name (default: bench_<table name>)")
    b.set_defaults(func=cmd_bench)


def _check(args: argparse.Namespace) -> None:
    from autopipe.bench.methods import get_methods

    if args.seeds < 1:
        raise DataError(f"--seeds must be >= 1, but got {args.seeds}")
    if any(b < 1 for b in args.budget):
        raise DataError(f"--budget values must be >= 1, but got {args.budget}")
    if args.autopipe_budget < 1:
        raise DataError(f"--autopipe-budget must be >= 1, but got {args.autopipe_budget}")
    if args.tasks is not None and args.tasks < 1:
        raise DataError(f"--tasks must be >= 1, but got {args.tasks}")
    if args.prior_models < 1:
        raise DataError(f"--prior-models must be >= 1, but got {args.prior_models}")
    if not (0.0 < args.early_fraction <= 1.0):
        raise DataError(f"--early-fraction must be in (0, 1], but got {args.early_fraction}")
    if args.promote is None:
        from autopipe.spec import BudgetSpec

        args.promote = BudgetSpec().promote
    if args.promote < 1:
        raise DataError(f"--promote must be >= 1, but got {args.promote}")
    if args.name is not None and len(args.data) > 1:
        raise DataError(f"--name names one result folder, but got {len(args.data)} --data folders")
    get_methods(args.methods)
    for d in args.data:
        if Path(d).is_file():
            raise DataError(f"--data {d} is a file, expected a run table folder")
        if not Path(d).is_dir():
            raise DataError(f"--data {d}: run table folder does not exist")
    check_out_dir(args.out, "--out")


# What the replay benchmark needs beyond a plain install (the `bench` extra): module -> package
BENCH_MODULES = {
    "optuna": "optuna",
    "hpbandster": "hpbandster",
    "ConfigSpace": "ConfigSpace",
    "matplotlib": "matplotlib",
}


def _check_extra() -> None:
    import importlib.util

    missing = [pkg for mod, pkg in BENCH_MODULES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise DataError(
            f"autopipe bench needs the bench extra (missing {', '.join(missing)}); install it "
            "with: pip install 'autopipe[bench]'"
        )


def cmd_bench(args: argparse.Namespace) -> int:
    _check(args)
    _check_extra()
    from autopipe.bench.core import logo_benchmark
    from autopipe.bench.methods import get_methods
    from autopipe.bench.report import write_outputs
    from autopipe.history.runtable import read_run_table
    from autopipe.prior.ranker import RankerConfig

    methods = get_methods(args.methods)
    budgets = sorted(set(args.budget))
    histories = [read_run_table(d) for d in args.data]  # all readable before Ray starts
    for h in histories:
        n_groups = h.tasks["group"].nunique()
        if n_groups < 2:
            raise DataError(
                f"{h.where}: leave-one-group-out needs 2 or more task groups, but got {n_groups}"
            )
    for h in histories:
        if args.engine == "direct" and h.curves is not None and "bohb" in args.methods:
            raise DataError(
                f"{h.where}: --engine direct cannot run bohb on a table with curves "
                "(HyperBandForBOHB pauses trials at its rungs); use --engine tune"
            )

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    runner_cls: Any
    if args.engine == "direct":
        from autopipe.bench.direct import DirectReplayRunner as runner_cls
    else:
        from autopipe.bench.ray_runner import RayReplayRunner as runner_cls
    with runner_cls() as runner:
        for h in histories:
            t0 = time.perf_counter()
            tasks = h.task_ids[: args.tasks] if args.tasks else None
            name = args.name or f"bench_{h.name}"

            def partial(rows: Any, h: Any = h, name: str = name, t0: float = t0) -> None:
                done = rows["task"].nunique()
                note = _note(args, h, budgets, done, time.perf_counter() - t0) + " (partial)"
                write_outputs(rows, Path(args.out) / name, f"Replay benchmark: {h.name}", note)

            rows = logo_benchmark(
                h,
                methods,
                runner,
                budgets,
                args.seeds,
                args.autopipe_budget,
                tasks=tasks,
                prior_config=RankerConfig(n_models=args.prior_models),
                progress=say,
                on_task=partial,
                early_fraction=args.early_fraction,
                promote=args.promote,
            )
            wall = time.perf_counter() - t0
            note = _note(args, h, budgets, rows["task"].nunique(), wall)
            paths = write_outputs(rows, Path(args.out) / name, f"Replay benchmark: {h.name}", note)
            print(f"{h.name}: wrote {', '.join(str(p) for p in paths)} ({wall:.0f} s)")
    return 0


def _note(args: argparse.Namespace, h: Any, budgets: list[int], n_tasks: int, wall: float) -> str:
    return (
        f"`autopipe bench --data {h.source} --methods {' '.join(args.methods)} --budget "
        f"{' '.join(map(str, budgets))} --autopipe-budget {args.autopipe_budget} --seeds "
        f"{args.seeds}{f' --tasks {args.tasks}' if args.tasks else ''} --engine {args.engine}"
        f"{f' --early-fraction {args.early_fraction:g}' if h.curves is not None else ''}"
        f"{f' --promote {args.promote}' if h.curves is not None else ''}`: "
        f"{n_tasks} held-out "
        f"tasks x {args.seeds} seeds, {wall / 60:.1f} min wall."
    )
