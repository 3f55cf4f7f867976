"""Promotion, a job's last step when its trials stop early: the searcher's shortlist resumes
from the early-stopped trials' checkpoints to full fidelity (their prefix is not recomputed),
in a second Ray Tune run; the best full result is the job's answer (:mod:`.summary`)."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from autopipe import metrics as M
from autopipe.tune.summary import JobResult

if TYPE_CHECKING:
    from autopipe.tune.job import JobRun

log = logging.getLogger(__name__)


def _list_searcher(configs: list[dict[str, Any]]) -> Any:
    """A Ray Tune searcher that suggests ``configs`` in order, then finishes. Each dict is a
    whole trial config (no param_space to merge with), so configurations of a conditional space
    keep exactly their own keys."""
    from ray.tune.search import Searcher

    class ListSearcher(Searcher):
        def __init__(self) -> None:
            super().__init__(metric=M.OBJECTIVE, mode="max")
            self._todo = [dict(c) for c in configs]

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            return self._todo.pop(0) if self._todo else Searcher.FINISHED

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            pass

    return ListSearcher()


def plan_promotions(
    run: JobRun, core: Any, result: JobResult, done_before: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], list[Any]]:
    """The trial configurations to resume to full fidelity and their early-stopped sources.

    The searcher's shortlist (``budget.promote`` configurations; a model-based searcher's
    recommendation first), each resuming its early-stopped trial. Shortlisted configurations
    that already ran to the end are not rerun: trials that completed during the search, and
    (``done_before``, on ``--resume``: early-stopped source trial id -> its completed promoted
    trial) promotions a previous execution finished, which are credited to ``result`` here."""
    from autopipe.tune.callbacks import PROMOTED_FROM_KEY, RESUME_KEY

    space = run.space
    shortlist = core.shortlist(run.spec.budget.promote)
    if not shortlist:
        log.warning("no trial produced a score; nothing to promote")
        return [], []
    early: dict[tuple, Any] = {}
    for r in run.ledger.trials.values():
        if r.status != M.STATUS_EARLY_STOPPED:
            continue
        key = space.config_key({k: v for k, v in r.config.items() if k in space.names})
        best = early.get(key)
        # the same configuration stopped twice (a design with repeats): resume one that can be
        # resumed, with the better proxy
        if best is None or resumable_rank(r) > resumable_rank(best):
            early[key] = r
    done_before = dict(done_before or {})
    points, sources = [], []
    for cfg in shortlist:
        source = early.get(space.config_key(cfg))
        if source is None:
            continue  # ran to full fidelity already (or failed): its own result stands
        if source.trial_id in done_before:  # promoted by the execution this one resumes
            t = done_before[source.trial_id]
            result.promoted[t] = source.trial_id
            _count_saved(result, t, source, run.callback, tag=False)
            continue
        config = dict(cfg)
        if source.checkpoint:
            config[RESUME_KEY] = source.checkpoint
            config[PROMOTED_FROM_KEY] = source.trial_id
        points.append(config)
        sources.append(source)
    return points, sources


def promote(
    run: JobRun, core: Any, result: JobResult, done_before: dict[str, str] | None = None
) -> None:
    """Run :func:`plan_promotions`' configurations to full fidelity in a second Ray Tune run
    (same storage, same MLflow callback) and record which trial each promoted run resumed; the
    best full result is the job's answer (:func:`autopipe.tune.summary.summarise`)."""
    from ray import tune

    from autopipe.tune.trainable import make_trainable

    points, sources = plan_promotions(run, core, result, done_before)
    if not points:
        return
    spec, space, callback = run.spec, run.space, run.callback
    tuner = tune.Tuner(
        make_trainable(spec, space.constants, run.storage, full_fidelity=True),
        tune_config=tune.TuneConfig(
            search_alg=_list_searcher(points),
            num_samples=len(points),
            max_concurrent_trials=spec.budget.max_concurrent,
            metric=M.OBJECTIVE,
            mode="max",
        ),
        run_config=tune.RunConfig(
            name=f"{run.run_name}-promote",
            storage_path=run.storage,
            callbacks=[callback],
            verbose=run.verbose,
        ),
    )
    before = set(callback.configs)
    tuner.fit()
    by_key = {space.config_key(p): s for p, s in zip(points, sources, strict=True)}
    for t in [t for t in callback.configs if t not in before]:
        cfg = {k: v for k, v in callback.configs[t].items() if k in space.names}
        source = by_key.get(space.config_key(cfg))
        result.promoted[t] = source.trial_id if source is not None else ""
        if source is not None and source.checkpoint:
            _count_saved(result, t, source, callback, tag=True)


def resumable_rank(r: Any) -> tuple[bool, float]:
    """Order of early-stopped trials of one configuration: one with a checkpoint first, then
    the better proxy (a trial without a proxy last)."""
    return bool(r.checkpoint), -math.inf if r.proxy is None else float(r.proxy)


def _count_saved(result: JobResult, t: str, source: Any, callback: Any, tag: bool) -> None:
    """Credit promoted trial ``t`` with its source's prefix, which it did not recompute."""
    saved = float(source.cost_s)
    result.saved_by[t] = saved
    result.cost_saved_s += saved
    rid = callback.runs.get(t)
    if tag and rid:
        callback.tracker.set_tags(rid, {M.TAG_COST_SAVED: f"{saved:.2f}"})
