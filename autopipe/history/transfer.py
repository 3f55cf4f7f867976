"""What a tuning job transfers from earlier runs: the ranking prior and the early-signal
predictor, loaded from the folders a job names (``history.prior`` / ``history.predictor``, written
by ``autopipe prior fit`` / ``autopipe predictor fit``) or fitted when the job starts from the
histories it names (``history.run_tables`` / ``history.mlflow_experiments``). Ray-free; it builds
models, it does not search or schedule.

Fitting at job start: the prior on every task of the pooled histories; the predictor (only when
the job stops trials early, ``budget.early_stop_fraction < 1``, and the histories have curves) at
that fraction, as the residual variant over out-of-fold prior scores (each task scored by a
ranker fitted on the other tasks, as ``autopipe predictor evaluate`` does), or the direct variant
when the histories hold a single task.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from autopipe.errors import DataError, SpecError
from autopipe.spec import JobSpec

Log = Callable[[str], Any]


@dataclass
class Transfer:
    """The job's prior and predictor (each ``None`` when there is none) and how they were made."""

    prior: Any = None  # autopipe.prior.ranker.RankingPrior
    predictor: Any = None  # autopipe.predictor.early.EarlyPredictor
    notes: list[str] = field(default_factory=list)  # one line per model, for the log and MLflow
    # what the models came from (history contents, saved model files): a resumed job compares it
    fingerprint: str = ""

    @property
    def tags(self) -> dict[str, str]:
        return {f"autopipe.history.transfer.{i}": n for i, n in enumerate(self.notes)}


def history_sources(spec: JobSpec) -> list[str]:
    """The job's histories as ``autopipe`` source strings (folders resolved, ``mlflow:EXP``)."""
    return [str(spec.resolve(p)) for p in spec.history.run_tables] + [
        f"mlflow:{e}" for e in spec.history.mlflow_experiments
    ]


def load_transfer(
    spec: JobSpec, space: Any, tracking_uri: str | None = None, log: Log | None = None
) -> Transfer:
    """The prior and predictor of ``spec``: files it names win; otherwise fitted from its
    histories (see the module docstring). Raises :class:`SpecError` for a history whose space is
    not the job's, or a residual predictor file without a prior."""
    from autopipe.predictor.early import RESIDUAL, EarlyPredictor
    from autopipe.prior.ranker import RankingPrior

    log = log or (lambda msg: None)
    out = Transfer()
    digest = hashlib.sha1()
    early = spec.budget.early_stop_fraction
    if spec.history.prior:
        out.prior = RankingPrior.load(spec.resolve(spec.history.prior))
        _check_space("history.prior", out.prior.space, space)
        digest.update(_folder_bytes(spec.resolve(spec.history.prior)))
        out.notes.append(f"prior: loaded from {spec.history.prior}")
    if spec.history.predictor:
        out.predictor = EarlyPredictor.load(spec.resolve(spec.history.predictor))
        _check_space("history.predictor", out.predictor.space, space)
        digest.update(_folder_bytes(spec.resolve(spec.history.predictor)))
        if early < 1.0 and abs(out.predictor.fraction - early) > 1e-9:
            raise SpecError(
                f"history.predictor was fitted at fraction {out.predictor.fraction:g}, but "
                f"budget.early_stop_fraction is {early:g}; fit one at the job's fraction "
                f"(autopipe predictor fit --fraction {early:g})"
            )
        out.notes.append(f"predictor: loaded from {spec.history.predictor}")
    sources = history_sources(spec)
    # the prior serves the autopipe searcher and the residual predictor; other searchers with
    # full-length trials use neither, so nothing is fitted for them
    need_pred = out.predictor is None and early < 1.0
    need_prior = out.prior is None and (spec.search.algorithm == "autopipe" or need_pred)
    if sources and (need_prior or need_pred):
        history = _load_histories(sources, space, tracking_uri)
        digest.update(pd.util.hash_pandas_object(history.runs, index=False).to_numpy().tobytes())
        prior, pred, notes = fit_transfer(
            history,
            fraction=early if need_pred else None,
            seed=spec.search.seed,
            fit_prior=need_prior,
            log=log,
        )
        out.prior = out.prior if prior is None else prior
        out.predictor = out.predictor if pred is None else pred
        out.notes += notes
    if out.predictor is not None and out.predictor.variant == RESIDUAL and out.prior is None:
        raise SpecError(
            "history.predictor is a residual predictor and needs history.prior (or "
            "history.run_tables to fit one), but got none"
        )
    out.fingerprint = digest.hexdigest()[:16] if out.notes else ""
    return out


def fit_transfer(
    history: Any,
    fraction: float | None,
    seed: int = 0,
    fit_prior: bool = True,
    log: Log | None = None,
) -> tuple[Any, Any, list[str]]:
    """``(prior or None, predictor or None, notes)`` fitted on ``history``: the prior when
    ``fit_prior``, the predictor at ``fraction`` when it is given and the history has curves."""
    from autopipe.prior.ranker import RankerConfig, RankingPrior

    log = log or (lambda msg: None)
    notes: list[str] = []
    n_runs, n_tasks = len(history.runs), len(history.task_ids)
    prior = None
    if fit_prior:
        t0 = time.perf_counter()
        prior = RankingPrior.fit(history, RankerConfig(seed=seed, n_jobs=1))
        notes.append(
            f"prior: fitted on {history.where} ({n_runs} runs, {n_tasks} tasks) in "
            f"{time.perf_counter() - t0:.1f}s"
        )
        log(notes[-1])
    pred = None
    if fraction is not None and fraction < 1.0:
        if not history.curve_signals:
            notes.append(f"predictor: none ({history.where} has no learning curves)")
            log(notes[-1])
            return prior, None, notes
        t0 = time.perf_counter()
        pred = fit_predictor(history, fraction, seed=seed)
        notes.append(
            f"predictor: {pred.variant} variant fitted at f={fraction:g} on {history.where} "
            f"({pred.training['runs']} runs) in {time.perf_counter() - t0:.1f}s"
        )
        log(notes[-1])
    return prior, pred, notes


def fit_predictor(
    history: Any,
    fraction: float,
    tasks: Sequence[str] | None = None,
    prior: Any = None,
    ranker_config: Any = None,
    config: Any = None,
    seed: int = 0,
) -> Any:
    """The ``EarlyPredictor`` at ``fraction`` fitted on the runs of ``tasks`` (default all).

    With 2 or more task groups: the residual variant over out-of-fold prior z-scores, each group
    scored by a ranker (``ranker_config``, default one seeded model) fitted on the other groups,
    so the residual it learns is the one it meets on a task the prior has not seen (in-sample
    scores would teach it to trust the prior more than it deserves). With one group: the
    residual variant over ``prior``'s in-sample scores when a prior is given, else the direct
    variant."""
    from autopipe.predictor.early import EarlyPredictor, PredictorConfig
    from autopipe.predictor.targets import prior_scores, run_targets
    from autopipe.prior.ranker import RankerConfig, RankingPrior

    config = config or PredictorConfig(seed=seed)
    ranker_config = ranker_config or RankerConfig(seed=seed, n_models=1, n_jobs=1)
    tasks = [str(t) for t in (history.task_ids if tasks is None else tasks)]
    ids = history.runs.loc[history.runs["task"].astype(str).isin(tasks), "run_id"]
    ids = ids.astype(str).tolist()
    frame = run_targets(history, ids)
    groups = history.group_of()
    g = frame["task"].map(groups).to_numpy()
    names = sorted(set(g))
    if len(names) >= 2:
        p = np.zeros(len(frame))
        for name in names:
            held = g == name
            others = [t for t in tasks if groups[t] != name]
            # out-of-fold scores for the residual predictor's training: no cost model needed
            ranker = RankingPrior.fit(history, replace(ranker_config, fit_cost=False), tasks=others)
            p[held] = prior_scores(ranker, history, frame.loc[held].reset_index(drop=True))
    elif prior is not None:
        p = prior_scores(prior, history, frame)
    else:
        return EarlyPredictor.fit(history, fraction, run_ids=ids, config=config)
    return EarlyPredictor.fit(history, fraction, prior_z=p, run_ids=ids, config=config)


def _folder_bytes(path: Any) -> bytes:
    """The bytes of a saved model folder's files, in name order."""
    from pathlib import Path

    root = Path(path)
    return b"".join(f.name.encode() + f.read_bytes() for f in sorted(root.iterdir()) if f.is_file())


def _check_space(field: str, got: Any, want: Any) -> None:
    if got.to_json()["params"] != want.to_json()["params"]:
        raise SpecError(
            f"{field} was fitted over another search space (parameters "
            f"{sorted(got.names)}) than this job's ({sorted(want.names)}, or the same names "
            "with other ranges); a prior and predictor transfer only within one space"
        )


def _load_histories(sources: list[str], space: Any, tracking_uri: str | None) -> Any:
    from autopipe.history.data import concat_histories
    from autopipe.history.sources import load_history

    histories = []
    for src in sources:
        try:
            h = load_history(src, tracking_uri)
        except DataError as e:
            raise SpecError(f"history: {e}") from e
        _check_space(f"history: {src}", h.space, space)
        histories.append(h)
    return concat_histories(histories)


__all__ = ["Transfer", "fit_predictor", "fit_transfer", "history_sources", "load_transfer"]
