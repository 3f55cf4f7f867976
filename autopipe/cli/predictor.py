"""The ``autopipe predictor`` subcommands (``fit`` and ``evaluate``): argument parsing and printing
only, over :mod:`autopipe.predictor`. ``register(subparsers)`` adds them to the main parser; each
handler (``args.func``) returns an exit code and raises :class:`~autopipe.errors.AutoPipeError`
subclasses for bad input. Nothing here starts Ray.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from autopipe.cli.paths import check_out_dir, check_out_file, load_prior
from autopipe.errors import DataError

DEFAULT_FRACTIONS = (0.1, 0.25, 0.5)


def register(subparsers: Any) -> None:
    """Add ``predictor {fit,evaluate}`` to ``subparsers``."""
    pred = subparsers.add_parser(
        "predictor", help="fit and evaluate the early predictor of the final objective"
    )
    psub = pred.add_subparsers(dest="predictor_command", metavar="{fit,evaluate}", required=True)

    fit = psub.add_parser("fit", help="fit the early predictor on one or more histories")
    fit.add_argument(
        "--history", nargs="+", required=True, help="run table folders or mlflow:EXPERIMENT"
    )
    fit.add_argument(
        "--fraction", type=float, required=True, help="prefix fraction f in (0, 1] to predict from"
    )
    fit.add_argument("--out", required=True, help="folder to write the predictor to")
    fit.add_argument(
        "--prior",
        default=None,
        help="saved prior folder: fit the residual variant over its z-scores (default: direct)",
    )
    _common_args(fit)
    fit.set_defaults(func=cmd_predictor_fit)

    ev = psub.add_parser(
        "evaluate",
        help="cross-validate the predictor against curve baselines (LODO or k-fold over runs)",
    )
    ev.add_argument("--history", required=True, help="run table folder or mlflow:EXPERIMENT")
    ev.add_argument(
        "--fraction",
        type=float,
        nargs="+",
        default=list(DEFAULT_FRACTIONS),
        help="prefix fractions, one table row block each (default 0.1 0.25 0.5)",
    )
    ev.add_argument(
        "--signal",
        default=None,
        help="curve column the baselines use (default: the objective's column, else a loss)",
    )
    ev.add_argument(
        "--folds",
        type=int,
        default=5,
        help="k of the k-fold over configurations when there is one task group (default 5)",
    )
    ev.add_argument(
        "--peers",
        type=int,
        default=7,
        help="other trials of the held-out task each prefix is ranked among, as in a job of "
        "peers + 1 trials (default 7)",
    )
    ev.add_argument("--out", default=None, help="also write the markdown table to this file")
    ev.add_argument("--csv", default=None, help="also write the per-task rows to this CSV file")
    _common_args(ev)
    ev.set_defaults(func=cmd_predictor_evaluate)


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models", type=int, default=5, help="ensemble members, one seed each (default 5)"
    )
    p.add_argument(
        "--no-meta", action="store_true", help="ignore dataset meta-features (config + prefix only)"
    )
    p.add_argument(
        "--linear-alpha",
        default="0.01",
        help="ridge penalty of the linear base the trees start from, per training row; "
        "'none': trees only (default 0.01)",
    )
    p.add_argument(
        "--bag",
        choices=["task", "run"],
        default="task",
        help="what each ensemble member's 80 %% bag samples: whole training tasks, or runs "
        "regardless of task (default task; a history of 1-2 tasks always samples runs)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="XGBoost threads (default 1)")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (for mlflow: sources)")


def _predictor_config(args: argparse.Namespace) -> Any:
    from autopipe.predictor.early import PredictorConfig

    for name, v in (("--models", args.models), ("--jobs", args.jobs)):
        if v < 1:
            raise DataError(f"{name} must be >= 1, but got {v}")
    if args.seed < 0:
        raise DataError(f"--seed must be >= 0, but got {args.seed}")
    alpha: float | None = None
    if str(args.linear_alpha).lower() != "none":
        try:
            alpha = float(args.linear_alpha)
        except ValueError:
            alpha = math.nan
        if not (alpha > 0 and math.isfinite(alpha)):
            raise DataError(
                f"--linear-alpha must be a number > 0 or 'none', but got {args.linear_alpha!r}"
            )
    return PredictorConfig(
        n_models=args.models,
        use_meta=not args.no_meta,
        seed=args.seed,
        n_jobs=args.jobs,
        linear_alpha=alpha,
        bag_unit=args.bag,
    )


def _check_fraction(f: float) -> None:
    if not (0.0 < f <= 1.0):
        raise DataError(f"--fraction must be in (0, 1], but got {f}")


# --------------------------------------------------------------------------- handlers
def cmd_predictor_fit(args: argparse.Namespace) -> int:
    from autopipe.history.data import concat_histories
    from autopipe.history.sources import load_history
    from autopipe.predictor.early import EarlyPredictor
    from autopipe.predictor.targets import prior_scores, run_targets

    _check_fraction(args.fraction)
    config = _predictor_config(args)
    check_out_dir(args.out, "--out")
    h = concat_histories([load_history(src, args.tracking_uri) for src in args.history])
    h.require_curves("the early predictor needs")
    prior_z = None
    if args.prior:
        # The prior scores its own training tasks in-sample here: fit it without these tasks
        # for an honest residual (see `autopipe predictor evaluate`, which cross-fits).
        prior_z = prior_scores(load_prior(args.prior), h, run_targets(h))
    t0 = time.perf_counter()
    model = EarlyPredictor.fit(h, args.fraction, prior_z=prior_z, config=config)
    fit_s = time.perf_counter() - t0
    path = model.save(args.out)
    tr = model.training
    print(
        f"fitted the {model.variant} predictor ({config.n_models} regressors) at f={args.fraction:g} "
        f"on {tr['runs']} runs of {len(tr['tasks'])} tasks ({tr['runs_with_prefix']} with a prefix) "
        f"in {fit_s:.1f}s; signals: {', '.join(model.signals)}; features kept: "
        f"{len(model.prefix_kept)} prefix, {len(model.meta_filter.kept)} meta; "
        f"noise floor {model.floor:.3f} (OOB MSE {tr['oob_mse']:.3f})"
    )
    print(f"wrote {path}")
    return 0


def cmd_predictor_evaluate(args: argparse.Namespace) -> int:
    from autopipe.history.sources import load_history
    from autopipe.predictor.evaluate import evaluate_predictor, render_markdown

    for f in args.fraction:
        _check_fraction(f)
    if args.folds < 2:
        raise DataError(f"--folds must be >= 2, but got {args.folds}")
    config = _predictor_config(args)
    check_out_file(args.out, "--out")
    check_out_file(args.csv, "--csv")
    h = load_history(args.history, args.tracking_uri)
    h.require_curves("the early predictor and its baselines need")
    ev = evaluate_predictor(
        h,
        fractions=args.fraction,
        signal=args.signal,
        n_folds=args.folds,
        config=config,
        seed=args.seed,
        progress=lambda msg: print(msg, file=sys.stderr),
        n_peers=args.peers,
    )
    bags = (
        "training tasks (of the runs where there are 2 or fewer)"
        if config.bag_unit == "task"
        else "training runs"
    )
    note = (
        f"Objective {h.objective} ({h.mode}); {config.n_models} XGBoost regressors per predictor, "
        f"each on {config.bag_fraction:.0%} of the {bags}; seed {args.seed}. Proxy vs. the true "
        "seed-averaged final objective of each run's configuration; metrics per task, averaged "
        "over tasks."
    )
    md = render_markdown(ev, f"{h.name}: early predictor vs. curve baselines", note)
    print(md)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(md)
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        ev.rows.to_csv(args.csv, index=False)
    return 0
