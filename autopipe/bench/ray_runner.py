"""The Ray side of the replay benchmark: each (method, task, seed) is one Ray Tune ``Tuner`` over a
replay trainable, with the Searcher/Scheduler classes users get (the project's ``CoreSearcher``
around its cores, Ray's ``OptunaSearch``, ``ASHAScheduler``, ``TuneBOHB`` +
``HyperBandForBOHB``). It records what each trial reported; the scoring lives in :mod:`.core`.

Run tables without curves are replayed by a compact trainable (one report per evaluation, the same
keys as :func:`autopipe.bench.tune_replay.make_replay_trainable`'s final report) because Ray Tune
unpickles the trainable for every trial and a closure over 150,000 runs made that the dominant
per-trial cost. Tables with curves are replayed report by report (:class:`.replay.CurveReplay`)
by a class trainable that checkpoints its position, so HyperBandForBOHB can PAUSE a trial at a
rung and resume it where it stopped. There, the ``early_stop`` methods (AutoPipe and its
ablations) run with the job's own scheduler and searcher (``AutoPipeScheduler``, ``JobSearcher``
and their ``Ledger`` with the fold's proxy), and ASHA and BOHB compare trials at their rungs by
:data:`.replay.RUNG_SCORE`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from autopipe import metrics as M
from autopipe.bench.core import Eval, TaskContext, Trace
from autopipe.bench.methods import Method
from autopipe.bench.replay import RUNG_SCORE, CurveReplay
from autopipe.history.data import COST, History, Y


def bench_ray_env() -> dict[str, str | None]:
    """Environment for an embedded, quiet Ray on 127.0.0.1; call before importing Ray.

    Returns the previous values: the runner restores them when it closes, so Tune settings that
    suit a replay (no per-trial result files, no experiment checkpoints) never reach the tuning
    jobs a process runs afterwards (or their subprocesses)."""
    previous: dict[str, str | None] = {}
    for k, v in {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TRAIN_V2_ENABLED": "1",
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no result.json/progress.csv per trial
        "TUNE_GLOBAL_CHECKPOINT_S": "100000",
        "RAY_AIR_NEW_OUTPUT": "0",
    }.items():
        previous[k] = os.environ.get(k)
        os.environ.setdefault(k, v)
    return previous


# --------------------------------------------------------------------------- replay
def replay_lookup(
    history: History, task: str, seed: int, indexed: bool = False, table: Any = None
) -> Any:
    """``task``'s runs (no curves) as a function ``config -> final result dict``: a configuration
    draws one of its seeds' runs (the same one for the same benchmark seed, so every method and
    both engines see the same draw) and reports its final objective and cost. ``indexed``:
    numeric grid parameters arrive as indices into their grid (how BOHB, which has no ordinal
    parameters, searches them). ``table``: :func:`replay_arrays` of the task, if already built.
    Raises ``ValueError`` for a configuration never run."""
    space = history.space
    uh, start, count, ys, cs, statuses = (
        table if table is not None else replay_arrays(history, task)
    )
    names = space.names

    def lookup(config: dict[str, Any]) -> dict[str, Any]:
        cfg = {k: config[k] for k in names if k in config}
        if indexed:
            cfg = decode_indexed(space, cfg)
        hk = _hkey(space, cfg)
        i = int(np.searchsorted(uh, hk))
        if i >= len(uh) or uh[i] != hk:
            raise ValueError(f"config {cfg} was never run on task {task!r}")
        pick = np.random.default_rng(zlib.crc32(repr((seed, hk)).encode())).integers(count[i])
        j = int(start[i] + pick)
        y, cost, status = float(ys[j]), float(cs[j]), statuses[j]
        final: dict[str, Any] = {
            M.FRACTION: 1.0,
            M.GLOBAL_STEP: 1,
            M.COST_S: cost,
            M.STAGE: "done",
            M.OBJECTIVE: y if math.isfinite(y) else float("nan"),
        }
        if not math.isfinite(y):
            final.update({M.FAILED: 1.0, M.FAILURE_REASON: f"recorded run failed ({status})"})
        return final

    return lookup


def replay_arrays(history: History, task: str) -> tuple:
    """``task``'s runs sorted by a 64-bit hash of the configuration key (a few MB to pickle, not
    18): ``(unique hashes, first index, count, objectives, costs, statuses)``."""
    space = history.space
    runs = history.runs.loc[history.runs["task"] == task]
    h = np.array([_hkey(space, c) for c in history.records(runs)], dtype=np.int64)
    order = np.argsort(h, kind="stable")
    h = h[order]
    ys = runs[Y].to_numpy(float)[order]
    cs = runs[COST].to_numpy(float)[order]
    statuses = runs["status"].astype(str).to_numpy()[order]
    uh, start, count = np.unique(h, return_index=True, return_counts=True)
    return uh, start, count, ys, cs, statuses


def compact_replay(history: History, task: str, seed: int, indexed: bool = False) -> Any:
    """A function trainable reporting :func:`replay_lookup`'s result once (tables without
    curves)."""
    lookup = replay_lookup(history, task, seed, indexed)

    def replay(config: dict[str, Any]) -> None:
        from ray import tune

        tune.report(lookup(config))

    return replay


def _hkey(space: Any, cfg: dict[str, Any]) -> int:
    d = hashlib.blake2b(repr(space.config_key(cfg)).encode(), digest_size=8).digest()
    return int.from_bytes(d, "little", signed=True)


# --------------------------------------------------------------------------- searchers
def _ray_space(history: History, kind: str) -> Any:
    """The task's finite grid as Ray Tune / Optuna choices, or a ConfigSpace for BOHB."""
    params = history.space.params
    if kind == "configspace":
        import ConfigSpace as CS

        cs = CS.ConfigurationSpace(seed=0)
        for p in params:
            if not p.is_finite:
                cs.add(CS.UniformFloatHyperparameter(p.name, p.low, p.high, log=p.log))
                continue
            grid = p.grid()
            if p.is_categorical:
                cs.add(CS.CategoricalHyperparameter(p.name, [str(v) for v in grid]))
            else:
                # hpbandster's BOHB has no ordinal parameters: search the grid index
                cs.add(CS.UniformIntegerHyperparameter(p.name, 0, len(grid) - 1))
        return cs
    from ray import tune

    return {
        p.name: (
            tune.choice(p.grid())
            if p.is_finite
            else (tune.loguniform if p.log else tune.uniform)(p.low, p.high)
        )
        for p in params
    }


def _random(ctx: TaskContext, method: Method, seed: int, n: int) -> Any:
    from autopipe.search.simple import RandomCore

    return RandomCore(ctx.history.space, seed, candidates=ctx.configs)


def _gp_ei(ctx: TaskContext, method: Method, seed: int, n: int) -> Any:
    from autopipe.search.gp_ei import GPEICore

    return GPEICore(ctx.history.space, seed, budget=n, candidates=ctx.configs)


def _autopipe(ctx: TaskContext, method: Method, seed: int, n: int) -> Any:
    from autopipe.search.autopipe import AutoPipeCore

    return AutoPipeCore(
        ctx.history.space,
        seed,
        prior=ctx.prior,
        meta=ctx.meta,
        budget=n,
        guard=method.guard,
        candidates=ctx.configs,
        cost_weight=method.cost_weight,
    )


def _no_residual(ctx: TaskContext, method: Method, seed: int, n: int) -> Any:
    return NoResidualCore(
        ctx.history.space, seed, prior=ctx.prior, meta=ctx.meta, budget=n, candidates=ctx.configs
    )


def _no_offline(ctx: TaskContext, method: Method, seed: int, n: int) -> Any:
    from autopipe.search.autopipe import AutoPipeCore

    return AutoPipeCore(ctx.history.space, seed, prior=None, budget=n, candidates=ctx.configs)


def _order(ctx: TaskContext, method: Method, seed: int, n: int) -> Any:
    """The method's fixed order of configurations (global-best order, the prior's top-k)."""
    from autopipe.search.base import ProposalCore

    class ListCore(ProposalCore):
        name = "list"

        def __init__(self) -> None:
            super().__init__(ctx.history.space, seed)
            self._todo = list(ctx.orders[method.name])

        def _propose(self) -> dict[str, Any] | None:
            return self._todo.pop(0) if self._todo else None

    return ListCore()


# Method.core -> builder of its Ray-free core over the task's configurations (a continuous space
# is replayed only at the configurations the task ran).
CORES: dict[str, Callable[[TaskContext, Method, int, int], Any]] = {
    "random": _random,
    "gp-ei": _gp_ei,
    "autopipe": _autopipe,
    "no-residual": _no_residual,
    "no-offline": _no_offline,
    "order": _order,
}


def make_core(ctx: TaskContext, method: Method, seed: int, n: int) -> Any:
    if method.core not in CORES:  # tpe / bohb use Ray's searchers
        raise ValueError(
            f"method {method.name!r} has no proposal core (core {method.core!r}; known: "
            f"{sorted(CORES)})"
        )
    return CORES[method.core](ctx, method, seed, n)


def _no_residual_cls() -> Any:
    from autopipe.search.autopipe import AutoPipeCore

    class NoResidual(AutoPipeCore):
        """Ablation: the GP models the standardized objective directly (prior weight 0 in the
        targets and the acquisition); the prior only picks the warm start among candidates."""

        def _prior_weight(self, z_ok: np.ndarray, s_ok: np.ndarray) -> float:
            self.tau = 1.0
            return 0.0

    return NoResidual


def NoResidualCore(*args: Any, **kw: Any) -> Any:  # noqa: N802 - a class factory
    return _no_residual_cls()(*args, **kw)


def _recording_searcher(
    core: Any, budgets: Sequence[int], mode: str, ledger: Any = None, promote: int = 1
) -> Any:
    """``ledger``: the job's searcher (``JobSearcher``, told proxies by the ledger) instead of the
    plain adapter; ``promote > 1``: record the core's shortlist of ``promote`` configurations
    (the ones a job promotes, :meth:`~autopipe.search.base.ProposalCore.shortlist`) instead of
    its recommendation."""
    from autopipe.tune.searcher import CoreSearcher

    base: Any = CoreSearcher
    if ledger is not None:
        from autopipe.tune.searcher import JobSearcher

        base = JobSearcher

    class RecordingSearcher(base):  # type: ignore[misc, valid-type]
        """The shipped adapter, plus: after the k-th observation (k in ``budgets``) it asks the
        core for its recommendation (posterior mean among evaluated configurations)."""

        def __init__(self) -> None:
            if ledger is not None:
                from autopipe.scheduling.budget import BudgetGate

                # No cost cap: the benchmark's budget is the number of evaluations.
                super().__init__(core, ledger, BudgetGate(ledger, None, 1.0), M.OBJECTIVE, mode)
            else:
                super().__init__(core, metric=M.OBJECTIVE, mode=mode)
            self.recs: dict[int, tuple] = {}
            self._at = set(budgets)

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            super().on_trial_complete(trial_id, result, error)
            n = len(self.core.observed)
            if n in self._at and hasattr(self.core, "recommend"):
                if promote > 1:
                    top = self.core.shortlist(promote)
                    if top:
                        self.recs[n] = [self.core.space.config_key(c) for c in top]
                    return
                rec = self.core.recommend()
                if rec is not None:
                    self.recs[n] = self.core.space.config_key(rec[0])

    return RecordingSearcher()


def search_metric(ctx: TaskContext, method: Method) -> str:
    """The metric Tune is given for ``method`` (``TuneConfig(metric=...)``): the rung score for
    the multi-fidelity methods on tables with curves, otherwise the objective."""
    if ctx.history.curves is not None and method.name in ("asha", "bohb"):
        return RUNG_SCORE
    return M.OBJECTIVE


def replay_fraction(ctx: TaskContext, method: Method) -> float:
    """The fraction at which ``method``'s trials stop themselves (1: full runs)."""
    if ctx.history.curves is not None and method.early_stop:
        return ctx.early_fraction
    return 1.0


def build_search(
    ctx: TaskContext, method: Method, seed: int, n: int, budgets: Sequence[int]
) -> tuple[Any, Any]:
    """The Ray Tune ``(Searcher, TrialScheduler or None)`` of ``method`` on ``ctx``'s task: the
    one factory both engines use (:class:`RayReplayRunner` hands them to a ``Tuner``,
    :mod:`autopipe.bench.direct` calls their Tune interfaces itself). Neither starts Ray.
    Schedulers get their metric and mode from Tune (:func:`search_metric`)."""
    from autopipe.tune.searcher import CoreSearcher

    hist = ctx.history
    mode = hist.mode
    scheduler = None
    searcher: Any
    # A full curve replay reports every point and then its final result.
    n_points = 1 if hist.curves is None else int(hist.curves.groupby("run_id").size().max()) + 1
    if method.name == "tpe":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        searcher = OptunaSearch(
            # Optuna distributions, converted as OptunaSearch would (without its warning)
            space=OptunaSearch.convert_search_space(_ray_space(hist, "tune")),
            metric=M.OBJECTIVE,
            mode=mode,
            sampler=optuna.samplers.TPESampler(multivariate=True, seed=seed),
        )
    elif method.name == "bohb":
        from ray.tune.schedulers import HyperBandForBOHB
        from ray.tune.search.bohb import TuneBOHB

        searcher = TuneBOHB(
            space=_ray_space(hist, "configspace"),
            metric=search_metric(ctx, method),
            mode=mode,
            seed=seed,
        )
        scheduler = HyperBandForBOHB(
            time_attr="training_iteration", max_t=max(n_points, 1), reduction_factor=3
        )
    else:
        core = make_core(ctx, method, seed, n)
        if hist.curves is not None and method.early_stop:
            # As `autopipe tune` runs a job: the stop policy's scheduler records every report
            # in the ledger and scores early-stopped trials by the proxy, which the job's
            # searcher reads from the same ledger. Methods without offline models keep the
            # ledger's fallback proxy.
            from autopipe.scheduling.ledger import Ledger
            from autopipe.scheduling.policy import StopRules
            from autopipe.tune.scheduler import AutoPipeScheduler

            ledger = Ledger(ctx.proxy if method.needs_prior else None)
            rules = StopRules(early_stop_fraction=replay_fraction(ctx, method))
            scheduler = AutoPipeScheduler(rules, ledger)
            # trials that ran to the end (fraction 1) have nothing to promote
            promote = ctx.promote if replay_fraction(ctx, method) < 1.0 else 1
            searcher = _recording_searcher(core, budgets, mode, ledger, promote)
        elif method.model_recommendation:
            searcher = _recording_searcher(core, budgets, mode)
        else:
            searcher = CoreSearcher(core, metric=M.OBJECTIVE, mode=mode)
        if method.name == "asha":
            from ray.tune.schedulers import ASHAScheduler

            scheduler = ASHAScheduler(
                time_attr="training_iteration",
                max_t=max(n_points, 1),
                grace_period=1,
                reduction_factor=3,
            )

    return searcher, scheduler


# --------------------------------------------------------------------------- runner
class RayReplayRunner:
    """Holds one local Ray for all Tuners of a benchmark (``with`` closes it)."""

    def __init__(self, num_cpus: int = 2) -> None:
        self._env = bench_ray_env()
        import ray

        self._started = False
        if not ray.is_initialized():
            ray.init(
                address="local",  # always its own instance, never another Ray on this machine
                num_cpus=num_cpus,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                logging_level="ERROR",
                configure_logging=False,
                log_to_driver=False,
            )
            self._started = True
        for name in ("ray.tune", "ray.train", "ray.air"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self._trainables: dict[tuple, Any] = {}
        self._tmp = tempfile.mkdtemp(prefix="autopipe-bench-")

    def close(self) -> None:
        import ray

        shutil.rmtree(self._tmp, ignore_errors=True)
        if self._started and ray.is_initialized():
            ray.shutdown()
        for k, v in self._env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def __enter__(self) -> RayReplayRunner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _trainable(
        self, ctx: TaskContext, seed: int, indexed: bool = False, early_fraction: float = 1.0
    ) -> Any:
        key = (id(ctx.history), ctx.task, seed, indexed, early_fraction)
        if key not in self._trainables:
            if ctx.history.curves is None:
                self._trainables = {key: compact_replay(ctx.history, ctx.task, seed, indexed)}
            else:
                replay = CurveReplay(ctx.history, ctx.task, seed)
                self._trainables = {key: curve_trainable(replay, indexed, early_fraction)}
        return self._trainables[key]

    def __call__(
        self, ctx: TaskContext, method: Method, seed: int, n: int, budgets: Sequence[int]
    ) -> Trace:
        from ray import tune
        from ray.tune import Callback

        hist = ctx.history
        mode = hist.mode
        searcher, scheduler = build_search(ctx, method, seed, n, budgets)
        evals: list[Eval] = []
        indexed = method.name == "bohb"
        early = replay_fraction(ctx, method)
        key_of = None if hist.curves is None else CurveReplay(hist, ctx.task, seed).key_of

        class Record(Callback):
            def _add(self, trial: Any) -> None:
                evals.append(to_eval(hist, method, trial.config, trial.last_result, key_of))

            def on_trial_complete(
                self, iteration: int, trials: list, trial: Any, **info: Any
            ) -> None:
                self._add(trial)

            def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
                self._add(trial)

        storage = tempfile.mkdtemp(dir=self._tmp)
        try:
            tune.Tuner(
                self._trainable(ctx, seed, indexed, early),
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=scheduler,
                    metric=search_metric(ctx, method),
                    mode=mode,
                    num_samples=n,
                    max_concurrent_trials=1,
                    reuse_actors=True,
                ),
                run_config=tune.RunConfig(
                    storage_path=storage,
                    callbacks=[Record()],
                    verbose=0,
                    log_to_file=False,
                    failure_config=tune.FailureConfig(max_failures=0),
                ),
            ).fit()
        finally:
            shutil.rmtree(storage, ignore_errors=True)
        replay = None if hist.curves is None else CurveReplay(hist, ctx.task, seed)
        return resolve_promotions(Trace(evals=evals), replayed_recs(searcher, key_of), replay)


def replayed_recs(searcher: Any, key_of: Any) -> dict[int, tuple | list[tuple]]:
    """The searcher's recommendations after k evaluations (a key, or a list of keys to promote),
    as the keys of the configurations that replay them (a model may recommend a candidate that
    is not a replayed one)."""
    recs = dict(getattr(searcher, "recs", {}))
    if key_of is None:
        return recs
    return {
        k: [key_of(dict(c)) for c in v] if isinstance(v, list) else key_of(dict(v))
        for k, v in recs.items()
    }


def resolve_promotions(trace: Trace, recs: dict[int, Any], replay: CurveReplay | None) -> Trace:
    """Fill ``trace.recs`` from ``recs``; a list of keys (several configurations promoted) runs
    each one's full run as the replay draws it and recommends the best full result (the first
    of the list when none is finite); ``trace.promoted`` keeps the keys, each charged a full
    run (as the single recommendation is: a job would pay only the rest of each run after its
    early point, so this overstates the cost of promotion by the prefixes)."""
    for k, v in recs.items():
        if not isinstance(v, list):
            trace.recs[k] = v
            continue
        if replay is None:
            raise ValueError("promoting several configurations needs a curve replay")
        keys = list(dict.fromkeys(v))  # distinct, in order
        best = None
        for key in keys:
            y, _ = replay.final(key)
            if y is not None and (best is None or y > best[0]):
                best = (y, key)
        trace.recs[k] = best[1] if best is not None else keys[0]
        trace.promoted[k] = keys
    return trace


def to_eval(
    history: History, method: Method, config: dict, result: dict | None, key_of: Any = None
) -> Eval:
    """What a finished trial (its config and last result) contributes to the trace; ``key_of``
    (a curve replay's :meth:`~.replay.CurveReplay.key_of`) names the configuration replayed."""
    space = history.space
    res = result or {}
    cfg = {k: v for k, v in config.items() if k in space.names}
    if method.name == "bohb":
        cfg = decode_indexed(space, cfg)
    if key_of is not None:
        try:
            cfg = dict(key_of(cfg))
        except ValueError:
            pass  # never run: the trial errored, and its key is the one proposed
    y = res.get(M.OBJECTIVE)
    frac = float(res.get(M.FRACTION, 0.0) or 0.0)
    ok = isinstance(y, (int, float)) and math.isfinite(y) and frac >= 1.0 - 1e-9
    sign = 1.0 if history.mode == "max" else -1.0
    rung = res.get(RUNG_SCORE)
    return Eval(
        key=space.config_key(cfg),
        fraction=frac,
        cost=float(res.get(M.COST_S, 0.0) or 0.0),
        observed=sign * float(y) if ok else None,
        rung=sign * float(rung) if isinstance(rung, (int, float)) and math.isfinite(rung) else None,
    )


def decode_indexed(space: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    """Grid indices (numeric parameters) and strings (categorical) -> the space's values."""
    out = {}
    for p in space.params:
        if p.name in cfg:
            v = cfg[p.name]
            if p.is_categorical:
                # ConfigSpace holds the choices as strings: back to the space's own values
                out[p.name] = next((c for c in p.grid() if str(c) == str(v)), str(v))
            elif p.is_finite:
                out[p.name] = p.grid()[int(v)]
            else:
                out[p.name] = float(v)
    return out


def curve_trainable(replay: CurveReplay, indexed: bool, early_fraction: float) -> Any:
    """A class trainable reporting ``replay``'s reports of its config one per step, then its
    last one again with ``done`` (as Tune's duplicate result of a function that returns). It
    checkpoints its position (a PAUSE by HyperBandForBOHB resumes there, at no extra cost)."""
    from ray import tune

    space = replay.space

    class CurveReplayTrainable(tune.Trainable):
        def setup(self, config: dict[str, Any]) -> None:
            self._start(config)

        def _start(self, config: dict[str, Any]) -> None:
            cfg = {k: v for k, v in config.items() if k in space.names}
            if indexed:
                cfg = decode_indexed(space, cfg)
            self._reports = replay.reports(cfg, early_fraction)
            self._i = 0

        def step(self) -> dict[str, Any]:
            if self._i < len(self._reports):
                self._i += 1
                return dict(self._reports[self._i - 1])
            return {**self._reports[-1], "done": True}

        def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any]:
            return {"i": self._i}

        def load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
            self._i = int(checkpoint["i"])

        def reset_config(self, new_config: dict[str, Any]) -> bool:
            self._start(new_config)
            return True

    return CurveReplayTrainable
