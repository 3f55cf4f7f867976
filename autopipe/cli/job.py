"""``autopipe validate``, ``tune``, ``submit`` and ``best``: the commands of one job. Argument
parsing and printing only; the work is :mod:`autopipe.spec`, :mod:`autopipe.tune` and
:mod:`autopipe.tracking`."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from autopipe.errors import AutoPipeError, SpecError, one_line


def register(sub: Any) -> None:
    """Add ``validate``, ``tune``, ``submit`` and ``best`` to ``sub``."""
    v = sub.add_parser("validate", help="check job specs and print their search spaces")
    v.add_argument("spec", nargs="+", help="job YAML(s)")
    v.set_defaults(func=cmd_validate)

    t = sub.add_parser("tune", help="run a tuning job (embedded Ray, or --address)")
    t.add_argument("spec", help="job YAML")
    t.add_argument(
        "--address",
        default=None,
        help="existing Ray cluster: auto, HOST:PORT (its GCS, 6379 by default) or "
        "ray://HOST:10001; a token-protected one reads RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH",
    )
    t.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (overrides the spec)")
    t.add_argument("--max-trials", type=int, default=None, help="override budget.max_trials")
    t.add_argument("--quiet", action="store_true", help="no Ray Tune progress table")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the job's latest unfinished run (driver killed or Ctrl-C)",
    )
    t.set_defaults(func=cmd_tune)

    s = sub.add_parser("submit", help="submit a job to a Ray cluster via the Job Submission API")
    s.add_argument("spec", help="job YAML")
    s.add_argument("--address", required=True, help="Ray dashboard address, e.g. http://HOST:8265")
    s.add_argument("--wait", action="store_true", help="wait for the job to end and print its logs")
    s.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait with --wait")
    s.set_defaults(func=cmd_submit)

    b = sub.add_parser("best", help="print the best configuration of a job from MLflow")
    b.add_argument("--job", default=None, help="job name (its latest run with a result)")
    b.add_argument("--run-id", default=None, help="a job's parent MLflow run id")
    b.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or the local store)",
    )
    b.add_argument(
        "--full", action="store_true", help="print the whole record, not just the config"
    )
    b.set_defaults(func=cmd_best)


def cmd_validate(args: argparse.Namespace) -> int:
    """Check each spec; with one spec an error is the usual one line, with several each bad
    spec gets its line (prefixed with its path) and the others are still checked."""
    if len(args.spec) == 1:
        _validate_one(args.spec[0])
        return 0
    code = 0
    for path in args.spec:
        try:
            _validate_one(path)
        except AutoPipeError as e:
            print(f"autopipe: error: {path}: {one_line(e)}", file=sys.stderr)
            code = max(code, e.exit_code)
    return code


def _validate_one(path: str) -> None:
    from autopipe.spec import load_spec, preflight

    spec = load_spec(path)
    space = spec.to_space()
    report = preflight(spec, space)  # the checks `tune` makes before starting Ray
    print(
        f"{path}: ok - job {spec.name!r}, {len(space)} searched parameters "
        f"({', '.join(space.names)}), {spec.budget.max_trials} trials, search "
        f"{spec.search.algorithm}; {report.line()}"
    )


def cmd_tune(args: argparse.Namespace) -> int:
    from autopipe.spec import load_spec

    spec = load_spec(args.spec)  # validate before anything starts
    if args.max_trials is not None:
        if args.max_trials < 1:
            raise AutoPipeError(f"--max-trials must be >= 1, but got {args.max_trials}")
        spec.budget.max_trials = args.max_trials
        spec.budget.max_concurrent = min(spec.budget.max_concurrent, args.max_trials)
    if args.tracking_uri:
        spec.tracking.uri = args.tracking_uri
    # Ray reads its environment when it is imported: set what this connection needs first.
    if args.address:
        from autopipe.tune import address as A

        A.client_env(A.parse(args.address))
    else:
        from autopipe.tune.cluster import local_ray_env

        local_ray_env()
    from collections import Counter

    from autopipe import metrics as M
    from autopipe.tune.job import run_job
    from autopipe.tune.summary import format_summary

    res = run_job(spec, address=args.address, verbose=0 if args.quiet else 1, resume=args.resume)
    print(format_summary(res))
    if res.interrupted:
        return 130
    if no_trial_finished(res):
        n = len(res.statuses)
        counts = Counter(res.statuses.values())
        if res.stopped:
            what = (
                f"the first {res.stopped_after} trials all failed with the same error "
                f"({res.stopped}), so the job stopped instead of running its whole budget"
            )
        elif not n:
            what = "no trial ran"
        elif counts.get(M.STATUS_FAILED, 0) == n:
            what = f"all {n} trials failed"
        else:
            what = (
                "none at full fidelity with a score ("
                + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                + ")"
            )
        where = (
            f"the autopipe.failure tag of each trial run under MLflow run {res.parent_run_id} "
            f"({res.tracking_uri})"
        )
        if res.experiment_path:
            where += f" and the trials' error.txt in the Ray results folder {res.experiment_path}"
        print(f"autopipe: error: no trial finished: {what}; see {where}", file=sys.stderr)
        return 1
    return 0


def no_trial_finished(res: object) -> bool:
    """A job that ended by itself with no result: no trial finished at full fidelity with a
    score (every trial failed, or only early-stopped ones did and the promoted run failed)."""
    return getattr(res, "best_config", None) is None


def cmd_best(args: argparse.Namespace) -> int:
    import yaml

    from autopipe.tracking import Tracker
    from autopipe.tracking.best import read_best

    if not args.job and not args.run_id:
        raise AutoPipeError("best needs --job NAME or --run-id ID, but got neither")
    tracker = Tracker(args.tracking_uri, must_exist=True)  # reading: never create a store
    tracker.check()
    doc = read_best(tracker, job=args.job, run_id=args.run_id)
    if args.full:
        print(yaml.safe_dump(doc, sort_keys=False).rstrip())
    else:
        print(
            f"# job {doc.get('job')}: {doc.get('objective')} = {doc.get('value')}, "
            f"trial {doc.get('trial_id')}, MLflow run {doc.get('mlflow_run_id')}"
        )
        print(yaml.safe_dump(doc["config"], sort_keys=False).rstrip())
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from autopipe.spec import load_spec
    from autopipe.tune.submit import submit

    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise SpecError(f"--timeout must be a number of seconds > 0, but got {args.timeout:g}")
    spec = load_spec(args.spec)
    from autopipe.spec import preflight

    preflight(spec, address=args.address)  # its files and data, before anything is uploaded
    return submit(spec, args.spec, args.address, wait=args.wait, timeout_s=args.timeout)
