"""``autopipe history {show,export,generate}``: argument parsing and printing only, over
:mod:`autopipe.history` and :mod:`autopipe.corpus`. ``register(subparsers)`` adds them to the main
parser; each handler (``args.func``) returns an exit code and raises
:class:`~autopipe.errors.AutoPipeError` subclasses for bad input.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path
from typing import Any

from autopipe.cli.paths import check_out_dir
from autopipe.errors import DataError
from autopipe.history.sources import load_history
from autopipe.spec.schema import JOB_NAME_PATTERN, MIN_N_TRAIN


def register(subparsers: Any) -> None:
    """Add ``history {show,export,generate}`` to ``subparsers``."""
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
    from autopipe.corpus import generate as G
    from autopipe.spec import load_spec
    from autopipe.trial.tasks import TASKS

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
    from autopipe.corpus.generate import run_plan

    return run_plan(jobs, template, prefix, args.experiment, args.max_concurrent, args.n_train)
