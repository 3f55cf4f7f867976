"""The direct engine of the replay benchmark: the Searcher/TrialScheduler objects the Tune engine
builds (:func:`~autopipe.bench.ray_runner.build_search`) driven in-process through their Ray Tune
interfaces, in the order Ray Tune 2.60's ``TuneController`` calls them for a
``max_concurrent_trials=1`` run of a function trainable that reports once and returns. It starts
no Ray, no Tuner, no trial actor; it replays run tables without curves only (a curve-replaying
trial reports many times, which is left to the Tune engine).

What one trial does here, and where Tune does it (``ray/tune/execution/tune_controller.py``,
``ray/tune/tune.py``):

1. ``ConcurrencyLimiter(searcher, 1).suggest(trial_id)`` (``tune.py`` wraps a ``Searcher`` so when
   ``max_concurrent_trials`` is set; ``SearchGenerator`` stops after ``num_samples`` trials or on
   ``Searcher.FINISHED``). ``set_search_properties`` is not called: Tune calls it only with a
   non-empty ``param_space``, and these searchers get their space, metric and mode at construction;
   the scheduler's is called, as in ``tune.py``.
2. ``scheduler.on_trial_add``, then ``scheduler.choose_trial_to_run`` must return the trial.
3. The one report: ``scheduler.on_trial_result`` decides; unless it says STOP,
   ``searcher.on_trial_result`` gets the result. PAUSE is not emulated (raises): with one report
   per trial, ``HyperBandForBOHB(max_t=1)`` has brackets of one trial, which finish on their
   first result (STOP), and ``ASHAScheduler(max_t=1)`` stops every trial at ``max_t``; neither
   has anything to cut early on these tables. The consequence, the same under both engines:
   ``TuneBOHB`` only learns from results its scheduler did not STOP, so on tables without
   curves it never receives one and samples like hpbandster's random fallback.
4. The function returns: Tune's duplicate final result has ``done=True``, so ``should_stop`` stops
   the trial without asking the scheduler or the searcher again.
5. ``scheduler.on_trial_complete`` then ``searcher.on_trial_complete`` with the last result (an
   error: ``scheduler.on_trial_error`` and ``searcher.on_trial_complete(error=True)``).

Trial ids are ``"{i:05d}"`` here and random hex under Tune; the searchers use ids as keys only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autopipe import metrics as M
from autopipe.bench.core import TaskContext, Trace
from autopipe.bench.methods import Method
from autopipe.bench.ray_runner import build_search, replay_arrays, replay_lookup, to_eval
from autopipe.errors import DataError

TRAINING_ITERATION = "training_iteration"  # ray.tune.result.TRAINING_ITERATION


class _Trial:
    """What the schedulers read of a ``ray.tune.experiment.Trial``: id, config, status."""

    def __init__(self, trial_id: str, config: dict[str, Any]) -> None:
        from ray.tune.experiment import Trial

        self.trial_id = trial_id
        self.config = config
        self.status = Trial.PENDING
        self.last_result: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"_Trial({self.trial_id})"


class _Controller:
    """The ``TuneController`` methods the schedulers may call; the ones that would pause or
    resume trials are not emulated and raise."""

    def __init__(self, searcher: Any) -> None:
        from types import SimpleNamespace

        self.search_alg = SimpleNamespace(searcher=searcher)
        self.trials: list[_Trial] = []

    def get_trials(self) -> list[_Trial]:
        return self.trials

    def get_live_trials(self) -> list[_Trial]:
        from ray.tune.experiment import Trial

        return [t for t in self.trials if t.status not in (Trial.TERMINATED, Trial.ERROR)]

    def _unsupported(self, what: str) -> None:
        from autopipe.errors import AutoPipeError

        raise AutoPipeError(
            f"the direct engine does not emulate {what}; run this method with --engine tune"
        )

    def stop_trial(self, trial: _Trial) -> None:
        from ray.tune.experiment import Trial

        if trial.status in (Trial.TERMINATED, Trial.ERROR):
            return
        self._unsupported(f"stopping a {trial.status} trial from the scheduler")

    def pause_trial(self, trial: _Trial, **kw: Any) -> None:
        self._unsupported("pausing trials")


class DirectReplayRunner:
    """``run_fn`` for :func:`~autopipe.bench.core.logo_benchmark`: one (method, task, seed) as
    the Tune engine runs it, without Ray. ``with`` works as for the Tune engine's runner."""

    def __init__(self) -> None:
        self._tables: dict[tuple, Any] = {}

    def __enter__(self) -> DirectReplayRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._tables.clear()

    def _lookup(self, ctx: TaskContext, seed: int, indexed: bool) -> Any:
        if ctx.history.curves is not None:
            raise DataError(
                f"{ctx.history.where}: the direct engine replays run tables without curves "
                "only; use --engine tune"
            )
        key = (id(ctx.history), ctx.task)
        if key not in self._tables:  # one task's arrays at a time: tasks come one after another
            self._tables = {key: replay_arrays(ctx.history, ctx.task)}
        return replay_lookup(ctx.history, ctx.task, seed, indexed, table=self._tables[key])

    def __call__(
        self, ctx: TaskContext, method: Method, seed: int, n: int, budgets: Sequence[int]
    ) -> Trace:
        from ray.tune.experiment import Trial
        from ray.tune.schedulers import TrialScheduler
        from ray.tune.search import ConcurrencyLimiter, Searcher

        hist = ctx.history
        lookup = self._lookup(ctx, seed, indexed=method.name == "bohb")
        searcher, scheduler = build_search(ctx, method, seed, n, budgets)
        limiter = ConcurrencyLimiter(searcher, max_concurrent=1)
        ctrl = _Controller(limiter)
        if scheduler is not None and not scheduler.set_search_properties(M.OBJECTIVE, hist.mode):
            raise RuntimeError(f"{method.name}: the scheduler refused metric/mode")
        trace = Trace()
        for i in range(n):
            tid = f"{i:05d}"
            cfg = limiter.suggest(tid)
            if cfg is Searcher.FINISHED:
                break
            if cfg is None:
                # Tune would wait for a running trial; none is running here.
                raise RuntimeError(f"{method.name}: suggest returned None with no trial running")
            trial = _Trial(tid, dict(cfg))
            ctrl.trials.append(trial)
            if scheduler is not None:
                scheduler.on_trial_add(ctrl, trial)
                chosen = scheduler.choose_trial_to_run(ctrl)
                if chosen is not trial:
                    raise RuntimeError(f"{method.name}: the scheduler chose {chosen}, not {trial}")
            trial.status = Trial.RUNNING
            try:
                result = dict(lookup(trial.config))
            except ValueError:
                # The trainable raised: Tune records the trial as errored (max_failures=0).
                trial.status = Trial.ERROR
                if scheduler is not None:
                    scheduler.on_trial_error(ctrl, trial)
                limiter.on_trial_complete(tid, error=True)
                trace.evals.append(to_eval(hist, method, trial.config, trial.last_result))
                continue
            result.update({TRAINING_ITERATION: 1, "done": False, "trial_id": tid})
            decision = TrialScheduler.CONTINUE
            if scheduler is not None:
                decision = scheduler.on_trial_result(ctrl, trial, dict(result))
            if decision == TrialScheduler.PAUSE:
                ctrl._unsupported("a PAUSE decision")
            if decision != TrialScheduler.STOP:
                limiter.on_trial_result(tid, dict(result))
            result["done"] = True
            trial.last_result = result
            if scheduler is not None:
                scheduler.on_trial_complete(ctrl, trial, dict(result))
            limiter.on_trial_complete(tid, result=dict(result))
            trial.status = Trial.TERMINATED
            trace.evals.append(to_eval(hist, method, trial.config, trial.last_result))
        trace.recs = dict(getattr(searcher, "recs", {}))
        return trace
