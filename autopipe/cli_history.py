"""The ``autopipe history`` and ``autopipe prior`` subcommands: argument parsing and printing
only, over :mod:`autopipe.history` and :mod:`autopipe.prior`. ``register(subparsers)`` adds them
to the main parser; each handler (``args.func``) returns an exit code and raises
:class:`~autopipe.errors.AutoPipeError` subclasses for bad input.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from autopipe.cli_paths import check_out_dir, check_out_file, load_prior
from autopipe.errors import DataError
from autopipe.history.model import History, concat_histories

# a job's name (the spec's `name`) and the smallest SFT set a job accepts (`dataset.n_train`)
JOB_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
MIN_N_TRAIN = 8


def register(subparsers: Any) -> None:
    """Add ``history {show,export}`` and ``prior {fit,evaluate}`` to ``subparsers``."""
    hist = subparsers.add_parser("history", help="inspect and export offline run histories")
    hsub = hist.add_subparsers(
        dest="history_command", metavar="{show,export,generate}", required=True
    )

    show = hsub.add_parser("show", help="summarize a run table or an MLflow experiment")
    show.add_argument("source", help="run table folder, or mlflow:EXPERIMENT")
    show.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (for mlflow: sources)"
    )
    show.set_defaults(func=cmd_history_show)

    exp = hsub.add_parser("export", help="write a history as a run table folder")
    exp.add_argument(
        "--from", dest="source", required=True, help="mlflow:EXPERIMENT or a run table folder"
    )
    exp.add_argument("--out", required=True, help="run table folder to write (new or empty)")
    exp.add_argument(
        "--force", action="store_true", help="replace the run table files in a non-empty --out"
    )
    exp.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (for mlflow: sources)"
    )
    exp.set_defaults(func=cmd_history_export)

    gen = hsub.add_parser(
        "generate",
        help="run real SFT -> RL trials over a space-filling design of built-in tasks "
        "(resumes from MLflow)",
    )
    gen.add_argument(
        "--job",
        default="jobs/demo.yaml",
        help="template job: model, search space, evaluation, resources (default jobs/demo.yaml)",
    )
    gen.add_argument("--tasks", nargs="+", default=None, help="built-in tasks (default: corpus)")
    gen.add_argument("--configs-per-task", type=int, default=48, help="design size per task")
    gen.add_argument(
        "--replicates", type=int, default=8, help="design points trained with extra seeds"
    )
    gen.add_argument("--seeds", type=int, default=3, help="seeds per replicated point")
    gen.add_argument("--seed", type=int, default=0, help="design and base training seed")
    gen.add_argument("--experiment", default="tinypost", help="MLflow experiment to write")
    gen.add_argument("--prefix", default=None, help="job name prefix (default: the experiment)")
    gen.add_argument("--max-concurrent", type=int, default=2, help="trials at a time")
    gen.add_argument(
        "--n-train", type=int, default=None, help="SFT set size for every task (default: per task)"
    )
    gen.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    gen.add_argument("--dry-run", action="store_true", help="print what is left to run and stop")
    gen.set_defaults(func=cmd_history_generate)

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


def load_history(source: str, tracking_uri: str | None = None) -> History:
    """A run table folder or ``mlflow:EXPERIMENT`` -> History."""
    from autopipe.history.mlflow_reader import parse_source, read_mlflow_experiment
    from autopipe.history.runtable import read_run_table

    kind, where = parse_source(source)
    if kind == "mlflow":
        return read_mlflow_experiment(where, tracking_uri=tracking_uri)
    return read_run_table(where)


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


# --------------------------------------------------------------------------- handlers
def cmd_history_show(args: argparse.Namespace) -> int:
    h = load_history(args.source, args.tracking_uri)
    print(format_summary(h.summary()))
    return 0


def format_summary(s: dict[str, Any]) -> str:
    def num(v: float) -> str:
        return "nan" if not math.isfinite(v) else f"{v:.6g}"

    lines = [
        f"history {s['name']} ({s['source']})",
        f"  objective  {s['objective']} ({s['mode']}): min {num(s['y_min'])}, median {num(s['y_median'])}, max {num(s['y_max'])}",
        f"  cost unit  {s['cost_unit']}",
        f"  params     {len(s['params'])}: {', '.join(s['params'])}",
        f"  tasks      {s['tasks']} in {s['groups']} groups, {s['meta_features']} meta-features",
        f"  runs       {s['runs']} ({', '.join(f'{k} {v}' for k, v in sorted(s['status'].items()))}), {s['seeds']} seeds",
        f"  configs    {s['configs']} (task, configuration) pairs",
        f"  curves     {s['curve_rows']} rows; signals: {', '.join(s['curve_signals']) or 'none'}",
        "",
        f"  {'task':<28} {'group':<28} {'runs':>9} {'configs':>8} {'best':>11} {'median':>11}"
        f" {'replicated':>10} {'seed sd':>9} {'sd/span':>7}",
    ]
    for t in s["per_task"]:
        lines.append(
            f"  {t['task'][:28]:<28} {t['group'][:28]:<28} {t['runs']:>9} {t['configs']:>8} "
            f"{num(t['best']):>11} {num(t['median']):>11} {t['replicated']:>10} "
            f"{_short(t['seed_sd']):>9} {_short(t['seed_sd_ratio']):>7}"
        )
    lines += [
        "",
        "  replicated: configurations with 2+ finite runs; seed sd: the median over them of the "
        "objective's standard deviation across seeds; sd/span: that over |best - median|",
    ]
    return "\n".join(lines)


def _short(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.3g}"


def cmd_history_export(args: argparse.Namespace) -> int:
    from autopipe.history.mlflow_reader import parse_source
    from autopipe.history.runtable import write_run_table

    kind, where = parse_source(args.source)
    if kind != "mlflow" and Path(where).resolve() == Path(args.out).resolve():
        raise DataError(f"--out {args.out} is the --from run table; expected another folder")
    check_out_dir(args.out, "--out", empty=True, force=args.force)
    h = load_history(args.source, args.tracking_uri)
    out = write_run_table(
        h,
        args.out,
        readme=(
            f"{h.name}: {len(h.tasks)} tasks, {len(h.runs)} runs, exported by `autopipe history export "
            f"--from {args.source}`.\nObjective: {h.objective} ({h.mode}). Cost: {h.cost_unit}.\n"
        ),
    )
    print(f"wrote {len(h.runs)} runs of {len(h.tasks)} tasks to {out}")
    return 0


def cmd_history_generate(args: argparse.Namespace) -> int:
    from autopipe.history import generate as G
    from autopipe.spec import load_spec
    from autopipe.tasks import TASKS

    template = load_spec(args.job)
    if args.tracking_uri:
        template.tracking.uri = args.tracking_uri
    tasks = args.tasks or list(G.CORPUS_TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise DataError(f"--tasks must be built-in tasks {sorted(TASKS)}, but got {unknown}")
    if args.max_concurrent < 1:
        raise DataError(f"--max-concurrent must be >= 1, but got {args.max_concurrent}")
    if args.n_train is not None and args.n_train < MIN_N_TRAIN:
        raise DataError(
            f"--n-train must be >= {MIN_N_TRAIN} (dataset.n_train's minimum), but got {args.n_train}"
        )
    if args.configs_per_task < 1:
        raise DataError(f"--configs-per-task must be >= 1, but got {args.configs_per_task}")
    if args.seed < 0:
        raise DataError(f"--seed must be >= 0, but got {args.seed}")
    if not args.experiment.strip():
        raise DataError("--experiment must name an MLflow experiment, but got an empty name")
    prefix = args.prefix or args.experiment
    if not re.fullmatch(JOB_NAME_PATTERN, prefix):
        flag = "--prefix" if args.prefix else "--experiment (the default job name prefix)"
        raise DataError(
            f"{flag} must match {JOB_NAME_PATTERN} (letters, digits, _ . -; jobs are named "
            f"PREFIX-TASK-sSEED), but got {prefix!r}"
        )
    space = template.to_space()
    jobs = G.plan(space, tasks, args.configs_per_task, args.replicates, args.seeds, args.seed)
    G.resolve_todo(jobs, space, template.tracking.uri, args.experiment, prefix)
    total = sum(len(j.configs) for j in jobs)
    left = sum(len(j.todo) for j in jobs)
    print(
        f"history generate: {len(jobs)} jobs, {total} trials planned, {total - left} already "
        f"in mlflow:{args.experiment}, {left} to run"
    )
    if args.dry_run:
        for j in jobs:
            print(f"  {j.name(prefix)}: {j.done}/{len(j.configs)} done")
        return 0
    if left == 0:
        return 0
    from autopipe.tune.runner import local_ray_env

    local_ray_env()  # before Ray is imported
    import ray

    from autopipe.tune.runner import check_resources, init_ray

    t0 = time.time()
    # One embedded Ray for every job of the plan (run_job leaves a Ray it did not start running).
    started = init_ray(template, None)
    try:
        check_resources(template)
        return _generate(jobs, template, prefix, args, t0)
    finally:
        if started:
            ray.shutdown()


def _generate(
    jobs: list[Any], template: Any, prefix: str, args: argparse.Namespace, t0: float
) -> int:
    from autopipe.history import generate as G
    from autopipe.tune.runner import run_job

    for j in jobs:
        if not j.todo:
            continue
        spec = G.job_spec(template, j, prefix, args.experiment, args.max_concurrent, args.n_train)
        res = run_job(spec, verbose=0)
        ok = sum(1 for v in res.statuses.values() if v == "completed")
        print(
            f"{j.name(prefix)}: {len(j.todo)} trials, {ok} completed, "
            f"{res.wall_s:.0f} s (total {time.time() - t0:.0f} s)",
            flush=True,
        )
        if res.interrupted:
            print("history generate: interrupted; run the same command again to resume")
            return 130
    print(
        f"history generate: done in {time.time() - t0:.0f} s; export with `autopipe history "
        f"export --from mlflow:{args.experiment} --out DIR`"
    )
    return 0


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
