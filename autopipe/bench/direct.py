"""The direct engine of the replay benchmark: the Searcher/TrialScheduler objects the Tune engine
builds (:func:`~autopipe.bench.ray_runner.build_search`) driven in-process through their Ray Tune
interfaces, in the order Ray Tune 2.60's ``TuneController`` calls them for a
``max_concurrent_trials=1`` run of the Tune engine's trainables: a function that reports once and
returns (tables without curves) or a class trainable that reports a curve one point per step
(:func:`~autopipe.bench.ray_runner.curve_trainable`). It starts no Ray, no Tuner, no trial actor.
PAUSE is not emulated, so ``bohb`` on a table with curves (``HyperBandForBOHB`` pauses trials at
its rungs) runs on the Tune engine only.

What one trial does here, and where Tune does it (``ray/tune/execution/tune_controller.py``,
``ray/tune/tune.py``):

1. ``ConcurrencyLimiter(searcher, 1).suggest(trial_id)`` (``tune.py`` wraps a ``Searcher`` so when
   ``max_concurrent_trials`` is set; ``SearchGenerator`` stops after ``num_samples`` trials or on
   ``Searcher.FINISHED``). ``set_search_properties`` is not called: Tune calls it only with a
   non-empty ``param_space``, and these searchers get their space, metric and mode at construction;
   the scheduler's is called with the Tune metric (:func:`~.ray_runner.search_metric`), as in
   ``tune.py``.
2. ``scheduler.on_trial_add``, then ``scheduler.choose_trial_to_run`` must return the trial.
3. Each report, in order (``_process_trial_result``): ``scheduler.on_trial_result`` decides;
   unless it says STOP, ``searcher.on_trial_result`` gets the result; the result becomes the
   trial's last one (with ``done=True`` on STOP). STOP ends the trial at that report: the
   AutoPipe scheduler's decision at a trial's early point or divergence, ASHA's at a rung. PAUSE
   raises. On tables without curves ``HyperBandForBOHB(max_t=1)`` has brackets of one trial,
   which finish on their first result (STOP), and ``ASHAScheduler(max_t=1)`` stops every trial at
   ``max_t``; neither has anything to cut early. The consequence, the same under both engines:
   ``TuneBOHB`` only learns from results its scheduler did not STOP, so on tables without
   curves it never receives one and samples like hpbandster's random fallback.
4. A trial that was not stopped ends with a result with ``done=True``, so ``should_stop`` stops
   it without asking the scheduler or the searcher again: Tune's duplicate final result of a
   function that returns, or the curve trainable's last report repeated one iteration later.
5. ``scheduler.on_trial_complete`` then ``searcher.on_trial_complete`` with the last result (an
   error: ``scheduler.on_trial_error`` and ``searcher.on_trial_complete(error=True)``).

Trial ids are ``"{i:05d}"`` here and random hex under Tune; the searchers use ids as keys only,
and the replay's draw of a configuration's run does not depend on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from autopipe.bench.core import TaskContext, Trace
from autopipe.bench.methods import Method
from autopipe.bench.ray_runner import (
    build_search,
    decode_indexed,
    replay_arrays,
    replay_fraction,
    replay_lookup,
    replayed_recs,
    resolve_promotions,
    search_metric,
    to_eval,
)
from autopipe.bench.replay import CurveReplay

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

    def _replay(self, ctx: TaskContext, method: Method, seed: int) -> tuple[Any, Any]:
        """``(config -> reports, config -> replayed key or None)``: the reports the Tune engine's
        trainable makes for a configuration (raises ``ValueError`` for one never run)."""
        indexed = method.name == "bohb"
        hist = ctx.history
        if hist.curves is not None:
            replay = CurveReplay(hist, ctx.task, seed)
            early = replay_fraction(ctx, method)

            def reports(config: dict[str, Any]) -> list[dict[str, Any]]:
                cfg = {k: v for k, v in config.items() if k in hist.space.names}
                return replay.reports(decode_indexed(hist.space, cfg) if indexed else cfg, early)

            return reports, replay.key_of
        key = (id(hist), ctx.task)
        if key not in self._tables:  # one task's arrays at a time: tasks come one after another
            self._tables = {key: replay_arrays(hist, ctx.task)}
        lookup = replay_lookup(hist, ctx.task, seed, indexed, table=self._tables[key])
        return (lambda config: [lookup(config)]), None

    def __call__(
        self, ctx: TaskContext, method: Method, seed: int, n: int, budgets: Sequence[int]
    ) -> Trace:
        from ray.tune.experiment import Trial
        from ray.tune.schedulers import TrialScheduler
        from ray.tune.search import ConcurrencyLimiter, Searcher

        hist = ctx.history
        curves = hist.curves is not None
        replay, key_of = self._replay(ctx, method, seed)
        searcher, scheduler = build_search(ctx, method, seed, n, budgets)
        limiter = ConcurrencyLimiter(searcher, max_concurrent=1)
        ctrl = _Controller(limiter)
        metric = search_metric(ctx, method)
        if scheduler is not None and not scheduler.set_search_properties(metric, hist.mode):
            raise RuntimeError(f"{method.name}: the scheduler refused metric/mode")
        trace = Trace()

        def finish(trial: _Trial) -> None:
            # TuneController.stop_trial of a RUNNING trial, then the Record callback
            if scheduler is not None:
                scheduler.on_trial_complete(ctrl, trial, dict(trial.last_result))
            limiter.on_trial_complete(trial.trial_id, result=dict(trial.last_result))
            trial.status = Trial.TERMINATED
            trace.evals.append(to_eval(hist, method, trial.config, trial.last_result, key_of))

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
                reports = replay(trial.config)
            except ValueError:
                # The trainable raised: Tune records the trial as errored (max_failures=0).
                trial.status = Trial.ERROR
                if scheduler is not None:
                    scheduler.on_trial_error(ctrl, trial)
                limiter.on_trial_complete(tid, error=True)
                trace.evals.append(to_eval(hist, method, trial.config, trial.last_result, key_of))
                continue
            stopped = False
            for it, report in enumerate(reports, 1):
                result = {**report, TRAINING_ITERATION: it, "done": False, "trial_id": tid}
                decision = TrialScheduler.CONTINUE
                if scheduler is not None:
                    decision = scheduler.on_trial_result(ctrl, trial, dict(result))
                if decision == TrialScheduler.PAUSE:
                    ctrl._unsupported("a PAUSE decision")
                if decision == TrialScheduler.STOP:
                    result["done"] = True
                else:
                    limiter.on_trial_result(tid, dict(result))
                trial.last_result = result
                if decision == TrialScheduler.STOP:
                    stopped = True
                    break
            if not stopped:
                # The trainable is done: a result with ``done`` stops the trial without asking
                # the scheduler or the searcher again. The function trainable (tables without
                # curves) returns and Tune marks its last result done; the curve class
                # trainable reports its last result again, done, one iteration later.
                if curves:
                    last = {**trial.last_result, TRAINING_ITERATION: len(reports) + 1}
                    trial.last_result = {**last, "done": True}
                else:
                    trial.last_result["done"] = True
            finish(trial)
        full = CurveReplay(hist, ctx.task, seed) if curves else None
        return resolve_promotions(trace, replayed_recs(searcher, key_of), full)
