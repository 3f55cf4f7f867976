"""``autopipe prior {fit,evaluate}``: argument parsing and printing only, over
:mod:`autopipe.prior`. ``register(subparsers)`` adds them to the main parser."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from autopipe.cli.paths import check_out_dir, check_out_file, load_prior
from autopipe.errors import DataError
from autopipe.history.data import concat_histories
from autopipe.history.sources import load_history


def register(subparsers: Any) -> None:
    """Add ``prior {fit,evaluate}`` to ``subparsers``."""
    prior = subparsers.add_parser(
        "prior", help="fit and evaluate the dataset-conditioned ranking prior"
    )
    psub = prior.add_subparsers(dest="prior_command", metavar="{fit,evaluate}", required=True)

    fit = psub.add_parser("fit", help="fit the ranking prior on one or more histories")
    fit.add_argument(
        "--history", nargs="+", required=True, help="run table folders or mlflow:EXPERIMENT"
    )
    fit.add_argument("--out", required=True, help="folder to write the prior to")
    _ranker_args(fit)
    fit.set_defaults(func=cmd_prior_fit)

    ev = psub.add_parser("evaluate", help="evaluate the prior (leave-one-dataset-out with --lodo)")
    ev.add_argument("--history", required=True, help="run table folder or mlflow:EXPERIMENT")
    mode = ev.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--lodo", action="store_true", help="leave-one-group-out: refit without each task group"
    )
    mode.add_argument("--prior", default=None, help="evaluate a saved prior on every task instead")
    ev.add_argument(
        "--eval-configs",
        type=int,
        default=None,
        help="evaluate a subsample of N configurations per task (default: all)",
    )
    ev.add_argument(
        "--random-draws",
        type=int,
        default=10,
        help="random orders averaged for the random baseline",
    )
    ev.add_argument("--out", default=None, help="also write the markdown table to this file")
    ev.add_argument("--csv", default=None, help="also write the per-task rows to this CSV file")
    _ranker_args(ev)
    ev.set_defaults(func=cmd_prior_evaluate)


def _ranker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-configs",
        type=int,
        default=600,
        help="training configurations per task, sampled evenly (default 600)",
    )
    p.add_argument(
        "--models", type=int, default=3, help="ensemble members, one seed each (default 3)"
    )
    p.add_argument(
        "--no-meta", action="store_true", help="config-only features (ignore meta-features)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="XGBoost threads")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (for mlflow: sources)")


def _ranker_config(args: argparse.Namespace) -> Any:
    from autopipe.prior.ranker import RankerConfig

    for name, v in (
        ("--max-configs", args.max_configs),
        ("--models", args.models),
        ("--jobs", args.jobs),
    ):
        if v < 1:
            raise DataError(f"{name} must be >= 1, but got {v}")
    if args.seed < 0:
        raise DataError(f"--seed must be >= 0, but got {args.seed}")
    return RankerConfig(
        max_configs_per_task=args.max_configs,
        n_models=args.models,
        use_meta=not args.no_meta,
        seed=args.seed,
        n_jobs=args.jobs,
    )


def cmd_prior_fit(args: argparse.Namespace) -> int:
    from autopipe.prior.ranker import RankingPrior

    config = _ranker_config(args)
    check_out_dir(args.out, "--out")
    h = concat_histories([load_history(src, args.tracking_uri) for src in args.history])
    t0 = time.perf_counter()
    prior = RankingPrior.fit(h, config)
    fit_s = time.perf_counter() - t0
    path = prior.save(args.out)
    kept = prior.meta_filter.kept
    print(
        f"fitted {config.n_models} rankers on {len(prior.training['tasks'])} tasks "
        f"({prior.training['rows_per_model']} rows each) in {fit_s:.1f}s; "
        f"meta-features kept {len(kept)}: {', '.join(kept) or 'none'}"
    )
    print(f"wrote {path}")
    return 0


def cmd_prior_evaluate(args: argparse.Namespace) -> int:
    from autopipe.prior.evaluate import evaluate_prior, lodo_evaluate, render_markdown

    if args.eval_configs is not None and args.eval_configs < 2:
        raise DataError(f"--eval-configs must be >= 2, but got {args.eval_configs}")
    if args.random_draws < 1:
        raise DataError(f"--random-draws must be >= 1, but got {args.random_draws}")
    config = _ranker_config(args)
    check_out_file(args.out, "--out")
    check_out_file(args.csv, "--csv")
    h = load_history(args.history, args.tracking_uri)
    t0 = time.perf_counter()
    if args.lodo:
        res = lodo_evaluate(
            h,
            config,
            max_eval_configs=args.eval_configs,
            n_random=args.random_draws,
            seed=args.seed,
            progress=lambda msg: print(msg, file=sys.stderr),
        )
        title = f"{h.name}: leave-one-group-out ({h.tasks['group'].nunique()} groups)"
    else:
        res = evaluate_prior(
            load_prior(args.prior),
            h,
            max_eval_configs=args.eval_configs,
            n_random=args.random_draws,
            seed=args.seed,
        )
        title = f"{h.name}: prior {args.prior} on every task (not held out)"
    elapsed = time.perf_counter() - t0
    subset = f"a uniform subsample of {args.eval_configs}" if args.eval_configs else "all"
    note = (
        f"Objective {h.objective} ({h.mode}); metrics over {subset} configurations with a finite "
        f"seed-averaged objective of each evaluated task; {config.n_models} rankers, at most "
        f"{config.max_configs_per_task} training configurations per task; seed {args.seed}; "
        f"{elapsed:.0f}s."
    )
    md = render_markdown(res, title, note)
    print(md)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(md)
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        res.to_csv(args.csv, index=False)
    return 0
