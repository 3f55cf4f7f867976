"""Run one tuning job: the searcher from the registry behind Ray Tune's ``Searcher``, the
scheduler that stops trials early or for divergence, trials that are Ray Train runs, MLflow on
the driver, promotion of the shortlist to full fidelity, and the summary written back. A job
continues its previous execution with ``resume``.

This module wires parts together; it holds no search math, no stop rules and no training code.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import yaml

from autopipe import metrics as M
from autopipe.errors import ClusterError, SpecError, TrackingError
from autopipe.history.transfer import load_transfer
from autopipe.spec import JobSpec, parse_spec, preflight
from autopipe.tracking import Tracker, data_dir
from autopipe.tune.cluster import check_address, check_resources, init_ray, shutdown_ray
from autopipe.tune.summary import JobResult, prior_top, space_size, summarise
from autopipe.tune.trainable import make_trainable, storage_path

log = logging.getLogger(__name__)

_UNSET: Any = object()  # make_core's "prior not given" (None means "no prior")


@dataclass
class JobRun:
    """What the parts of one execution of a job share: the Tune run, promotion, the summary."""

    spec: JobSpec
    space: Any
    tracker: Tracker
    callback: Any  # autopipe.tune.callbacks.MLflowTrialCallback
    ledger: Any  # autopipe.scheduling.ledger.Ledger
    storage: str = ""
    run_name: str = ""
    verbose: int = 1
    stopper: Any = None  # autopipe.tune.stopper.SameFailureStopper
    restored: str = ""  # --resume: what the previous execution left (restored_line)


def run_job(
    spec: JobSpec, address: str | None = None, verbose: int = 1, resume: bool = False
) -> JobResult:
    """Run the whole job; always leaves the MLflow runs it opened closed.

    ``resume`` continues the job's latest execution if it did not finish (its driver was
    killed, or Ctrl-C): same parent run, same Tune experiment; finished trials stay as they are,
    unfinished ones restart from their last checkpoint.
    """
    t0 = time.time()
    space = spec.to_space()
    # Bad input is a one-line error before Ray or MLflow start (and before Ray is imported).
    preflight(spec, space, address)
    check_address(address)

    from autopipe.scheduling.ledger import Ledger
    from autopipe.tune.callbacks import MLflowTrialCallback

    tracker = Tracker(spec.tracking.uri)
    tracker.check()
    previous = _previous_execution(tracker, spec, resume)
    ds_tags, meta = dataset_tags(spec)
    # Before any MLflow run exists: a history of another space is a one-line error, not a
    # failed job run.
    transfer = load_transfer(spec, space, tracker.uri, log=log.info)
    # The searcher and the storage folder before Ray: their errors are the user's input.
    core = make_core(spec, space, meta, prior=transfer.prior)
    storage = storage_path(spec)
    # Ray before the job's MLflow run: a cluster that cannot be reached or started leaves no
    # run behind (and --resume nothing to find).
    started = init_ray(spec, address)
    try:
        check_resources(spec)
        common_tags = {M.TAG_JOB: spec.name, **ds_tags}
        exp_id, parent = _open_parent_run(tracker, spec, previous, common_tags)
    except BaseException:
        if started:
            shutdown_ray()
        raise
    result = JobResult(spec.name, exp_id, parent, tracker.uri, None, None, None)
    ledger = Ledger()
    # Each trial's params: its configuration, the space's constants and the training seed.
    trial_params = {**space.constants, "seed": spec.seed}
    callback = MLflowTrialCallback(tracker, exp_id, parent, common_tags, trial_params, ledger)
    run = JobRun(spec, space, tracker, callback, ledger, storage=storage, verbose=verbose)
    searcher = None
    errored = False
    try:
        if previous is None:
            _log_job(tracker, parent, spec, space, meta, ds_tags)
        _record_transfer(tracker, parent, transfer, resumed=previous is not None)
        result.transfer = list(transfer.notes)
        if transfer.predictor is not None:
            from autopipe.predictor.proxy import make_proxy

            ledger.proxy_fn = make_proxy(transfer.predictor, transfer.prior, space, meta, spec.seed)
        searcher = _job_searcher(run, core)
        tuner, done_before = _tuner(run, searcher, previous, parent, exp_id)
        result.prior_top = prior_top(core)
        result.restored = run.restored
        grid = tuner.fit()
        result.experiment_path = grid.experiment_path
        if run.stopper is not None and run.stopper.reason:
            result.stopped = run.stopper.reason
            result.stopped_after = run.stopper.n_failed
            log.error(
                "stopping the job: its first %d trials all failed with the same error (%s)",
                result.stopped_after,
                result.stopped,
            )
        elif spec.budget.early_stop_fraction < 1.0 and not _unfinished(callback, tracker):
            from autopipe.tune.promotion import promote

            promote(run, core, result, done_before)
    except Exception:
        errored = True
        raise
    finally:
        try:
            _finish(run, result, searcher, resumed=previous is not None, errored=errored)
        finally:
            if started:
                shutdown_ray()
            result.wall_s = time.time() - t0
            result.parent_run_id = tracker.resolve(parent)  # a placeholder during an outage
    return result


def _previous_execution(tracker: Tracker, spec: JobSpec, resume: bool) -> Any:
    """The unfinished execution ``--resume`` continues (``None`` without ``resume``; a warning
    says when there is one to continue)."""
    from autopipe.tune.resume import find_unfinished

    previous = find_unfinished(tracker, spec.name)
    if resume and previous is None:
        raise TrackingError(
            f"--resume: job {spec.name!r} has no unfinished run with a restorable Ray Tune "
            f"experiment in the tracking store at {tracker.uri}"
        )
    if previous is not None and not resume:
        log.warning(
            "job %r has an unfinished run %s (%s); `autopipe tune SPEC --resume` continues it. "
            "Starting a new run.",
            spec.name,
            previous.run_id,
            previous.status,
        )
        return None
    if previous is not None:
        _check_same_spec(tracker, previous.run_id, spec)
    return previous


def _open_parent_run(
    tracker: Tracker, spec: JobSpec, previous: Any, common_tags: dict[str, str]
) -> tuple[str, str]:
    """``(experiment id, parent run id)``: the resumed execution's run, reopened, or a new one."""
    from autopipe.tune.resume import reopen_run

    if previous is not None:
        reopen_run(tracker, previous.run_id)
        return previous.experiment_id, previous.run_id
    exp_id = tracker.experiment_id(spec.tracking.experiment or spec.name)
    parent = tracker.start_run(
        exp_id,
        f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
        {**common_tags, M.TAG_ROLE: "job", M.TAG_SEARCH: spec.search.algorithm},
    )
    return exp_id, parent


def _record_transfer(tracker: Tracker, parent: str, transfer: Any, resumed: bool) -> None:
    """Where the prior and predictor came from, on the parent run (a resumed run compares)."""
    if resumed:
        _check_same_transfer(tracker, parent, transfer)
    elif transfer.notes:
        tracker.set_tags(parent, transfer.tags)
        tracker.log_text(
            parent,
            json.dumps({"fingerprint": transfer.fingerprint, "notes": transfer.notes}),
            M.ARTIFACT_TRANSFER,
        )


def _job_searcher(run: JobRun, core: Any) -> Any:
    from autopipe.scheduling.budget import BudgetGate
    from autopipe.tune.searcher import JobSearcher

    budget = run.spec.budget
    gate = BudgetGate(
        run.ledger,
        budget.cost_cap_s,
        budget.early_stop_fraction,
        min(budget.promote, budget.max_trials),
    )
    return JobSearcher(core, run.ledger, gate, metric=M.OBJECTIVE, mode="max")


def _tuner(
    run: JobRun, searcher: Any, previous: Any, parent: str, exp_id: str
) -> tuple[Any, dict[str, str]]:
    """The job's Ray Tune ``Tuner``: a new one, or the previous execution's restored (finished
    trials replay their recorded results, unfinished ones restart from their checkpoints).
    Also returns the promotions a previous execution finished (source trial -> promoted)."""
    from ray import tune

    from autopipe.scheduling.policy import StopRules
    from autopipe.tune.resume import load_trials, promotions_done, replay_result
    from autopipe.tune.scheduler import AutoPipeScheduler
    from autopipe.tune.stopper import SameFailureStopper

    spec, space, tracker, callback = run.spec, run.space, run.tracker, run.callback
    rules = StopRules(
        early_stop_fraction=spec.budget.early_stop_fraction,
        kl_growth=spec.stopping.kl_growth,
        kl_floor=spec.stopping.kl_floor,
        reward_drop=spec.stopping.reward_drop,
        patience=spec.stopping.patience,
    )
    tune_config = tune.TuneConfig(
        search_alg=searcher,
        scheduler=AutoPipeScheduler(rules, run.ledger),
        metric=M.OBJECTIVE,
        mode="max",
        num_samples=spec.budget.max_trials,
        max_concurrent_trials=spec.budget.max_concurrent,
    )
    run.stopper = SameFailureStopper(callback, spec.budget.max_trials)
    if previous is None:
        run.run_name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        tracker.set_tags(parent, {M.TAG_TUNE_PATH: _join(run.storage, run.run_name)})
        tuner = tune.Tuner(
            make_trainable(spec, space.constants, run.storage),
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name=run.run_name,
                storage_path=run.storage,
                callbacks=[callback],
                stop=run.stopper,
                verbose=run.verbose,
            ),
        )
        return tuner, {}
    run.run_name = previous.path.rstrip("/").rsplit("/", 1)[-1]
    trials = load_trials(tracker, parent, exp_id)
    callback.resume_from(trials)
    done_before, promoted_cfgs = promotions_done(trials, space)
    run.restored = restored_line(trials, spec.budget.max_trials, parent)
    print(run.restored, flush=True)
    for tid, cfg in promoted_cfgs.items():
        callback.configs.setdefault(tid, cfg)
    replay = {t: replay_result(r) for t, r in trials.items() if r.done}
    tuner = tune.Tuner.restore(
        previous.path,
        trainable=make_trainable(spec, space.constants, run.storage, replay=replay),
        resume_unfinished=True,
        resume_errored=False,
    )
    _reattach(tuner, tune_config, [callback], run.verbose, run.stopper)
    return tuner, done_before


def restored_line(trials: dict[str, Any], max_trials: int, parent: str) -> str:
    """What ``--resume`` found of the previous execution: trials finished (not run again),
    unfinished ones (restarted from their last checkpoints) and those not yet proposed."""
    search = [t for t in trials.values() if not t.promoted_from]
    done = sum(t.done for t in search)
    restart = len(search) - done
    promoted = sum(bool(t.promoted_from) and t.done for t in trials.values())
    pending = max(0, max_trials - len(search))
    line = (
        f"--resume: run {parent}: {done} trial{'s' * (done != 1)} finished (not run again), "
        f"{restart} restarted from {'their' if restart != 1 else 'its'} last checkpoint"
        f"{'s' * (restart != 1)}, {pending} not yet proposed"
    )
    return line + (f"; {promoted} promotion{'s' * (promoted != 1)} finished" if promoted else "")


def _finish(run: JobRun, result: JobResult, searcher: Any, resumed: bool, errored: bool) -> None:
    """Close what the job left open (trials of a Ctrl-C are ``killed``), summarise it on the
    parent run and end every MLflow run it opened; a tracking error here never hides the
    job's own."""
    spec, callback, tracker = run.spec, run.callback, run.tracker
    if resumed:
        callback.drop_orphans()
    open_trials = _unfinished(callback, tracker)
    for t in open_trials:
        callback.status[t] = M.STATUS_KILLED
    n_search = len([t for t in callback.status if t not in result.promoted])
    ended_by_itself = (
        n_search >= min(spec.budget.max_trials, space_size(run.space))
        or (searcher is not None and (searcher.finished_by_budget or searcher.exhausted))
        or bool(result.stopped)
    )
    # trials still open when the run was stopped for repeating one error were stopped with it
    result.interrupted = (bool(open_trials) and not result.stopped) or not ended_by_itself
    try:
        # Close the child runs the callback could not finish (Ctrl-C), then summarise.
        for t in open_trials:
            tracker.set_tags(callback.runs[t], {M.TAG_STATUS: M.STATUS_KILLED})
            tracker.end_run(callback.runs[t], "KILLED")
        summarise(result, callback, run.space.constants, tracker)
    except TrackingError as e:  # never hide the job's own error behind a tracking one
        log.error("could not finish the MLflow records of the job: %s", e)
    finally:
        tracker.close_open("FAILED" if errored else "KILLED" if result.interrupted else "FINISHED")


def dataset_tags(spec: JobSpec) -> tuple[dict[str, str], dict[str, float]]:
    """Dataset id and meta-features (computed on the driver before any training)."""
    from autopipe.trial.tasks import load_dataset

    data = load_dataset(spec.dataset, spec.base_dir)
    meta = compute_meta(data)
    tags = {M.TAG_DATASET: data.dataset_id()}
    tags.update({f"{M.TAG_META_PREFIX}{k}": f"{v:.6g}" for k, v in meta.items()})
    return tags, meta


def compute_meta(data: Any) -> dict[str, float]:
    """Text meta-features of the SFT split against the evaluation split, cached by content hash."""
    from autopipe.history.metafeatures import cached_text_meta_features

    rec = data.to_records()
    return cached_text_meta_features(rec["train"], rec["eval"], data_dir() / "meta_cache")


def _log_job(
    tracker: Tracker,
    parent: str,
    spec: JobSpec,
    space: Any,
    meta: dict[str, float],
    ds_tags: dict[str, str],
) -> None:
    """The parent run's record of the job: spec, space, meta-features, main parameters."""
    tracker.log_text(parent, json.dumps(space.to_json(), indent=1), M.ARTIFACT_SPACE)
    tracker.log_text(parent, yaml.safe_dump(spec.dump(), sort_keys=False), M.ARTIFACT_SPEC)
    tracker.log_text(parent, json.dumps(meta, indent=1, sort_keys=True), M.ARTIFACT_META)
    tracker.log_params(
        parent,
        {
            "search.algorithm": spec.search.algorithm,
            "budget.max_trials": spec.budget.max_trials,
            "budget.early_stop_fraction": spec.budget.early_stop_fraction,
            "dataset": ds_tags[M.TAG_DATASET],
            "model": spec.model.name,
        },
    )


def _join(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else os.path.join(storage, name)


def _check_same_transfer(tracker: Tracker, parent: str, transfer: Any) -> None:
    """``--resume`` refits or reloads the prior and predictor: warn when what they came from
    (the history's runs, the saved model files) changed since the job started."""
    text = tracker.read_text(parent, M.ARTIFACT_TRANSFER)
    old = json.loads(text).get("fingerprint", "") if text else ""
    if old != transfer.fingerprint:
        log.warning(
            "--resume: the history or saved models differ from when run %s started; the "
            "resumed search and early-stop scoring use models from the current ones",
            parent,
        )


def _check_same_spec(tracker: Tracker, parent: str, spec: JobSpec) -> None:
    """``--resume`` continues the same search: refuse a spec that changed since (Tune would keep
    the old trial count and searcher, and a changed space breaks the searcher's saved state)."""
    text = tracker.read_text(parent, M.ARTIFACT_SPEC)
    if text is None:
        return  # no record of the original spec: nothing to compare with
    old = yaml.safe_load(text) or {}
    try:
        # fields added since the run was recorded compare at their defaults
        old = parse_spec(old).dump()
    except SpecError:
        pass  # compare what was recorded
    new = spec.dump()
    changed = []
    for k in sorted(set(old) | set(new)):
        if k == "tracking" or old.get(k) == new.get(k):  # where records go may change
            continue
        o, n = old.get(k), new.get(k)
        if isinstance(o, dict) and isinstance(n, dict):
            changed += [f"{k}.{s}" for s in sorted(set(o) | set(n)) if o.get(s) != n.get(s)]
        else:
            changed.append(k)
    if changed:
        raise SpecError(
            f"--resume: the job spec differs from the run being resumed ({parent}) in "
            f"{', '.join(changed)}; resume with the original spec or start a new run without "
            "--resume"
        )


def _reattach(
    tuner: Any, tune_config: Any, callbacks: list[Any], verbose: int, stopper: Any = None
) -> None:
    """Give a restored Tuner this execution's searcher, scheduler and callbacks.

    ``Tuner.restore`` unpickles the ones the first execution started with: empty, and bound to
    the dead driver's MLflow client. Tune then loads the searcher's saved state (with the
    ledger) into the new searcher from the experiment directory (``Searcher.restore_from_dir``).
    NOTE: private attributes of ``ray.tune.Tuner`` as of Ray 2.60 (pinned in pyproject.toml);
    tests/tune/test_resume.py fails if they move.
    """
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None:
        raise ClusterError(
            "--resume works with an embedded Ray or --address of a cluster this machine is part "
            "of (auto, HOST:6379), not through Ray Client (ray://); submit the job instead"
        )
    internal._tune_config = tune_config
    internal._run_config.callbacks = callbacks
    internal._run_config.verbose = verbose
    internal._run_config.stop = stopper


def _unfinished(callback: Any, tracker: Tracker) -> list[str]:
    return [t for t, rid in callback.runs.items() if rid in tracker.open_runs]


def make_core(spec: JobSpec, space: Any, meta: dict[str, float], prior: Any = _UNSET) -> Any:
    """The searcher's Ray-free core from the registry (:func:`autopipe.search.build_core`), with
    the job's prior (``prior``: a loaded or fitted one, or ``None``; by default the one
    ``history.prior`` names) for cores that use one."""
    from autopipe import search

    algo = spec.search.algorithm
    if search.get_core_factory(algo).USES_PRIOR:
        prior = load_prior(spec) if prior is _UNSET else prior
        if prior is None:
            log.warning(
                "search.algorithm %s without a prior (history.prior or history.run_tables): "
                "plain GP-BO, no transfer",
                algo,
            )
    else:
        prior = None
    return search.build_core(
        algo,
        space,
        seed=spec.search.seed,
        options=spec.search.options,
        budget=spec.budget.max_trials,
        prior=prior,
        meta=meta,
    )


def load_prior(spec: JobSpec) -> Any:
    """The prior ``history.prior`` names, else ``None``."""
    if not spec.history.prior:
        return None
    from autopipe.prior.ranker import RankingPrior

    return RankingPrior.load(spec.resolve(spec.history.prior))


def load_proxy(spec: JobSpec, meta: dict[str, float], tracking_uri: str | None = None) -> Any:
    """The proxy of early-stopped trials: the job's learned predictor (named by
    ``history.predictor`` or fitted from its histories, see :mod:`autopipe.history.transfer`), else
    ``None``. A residual predictor's prior z-score of a configuration is computed against a
    fixed seeded reference sample of the space (:func:`autopipe.predictor.proxy.make_proxy`)."""
    from autopipe.predictor.proxy import make_proxy

    space = spec.to_space()
    transfer = load_transfer(spec, space, tracking_uri)
    if transfer.predictor is None:
        return None
    return make_proxy(transfer.predictor, transfer.prior, space, meta, spec.seed)
