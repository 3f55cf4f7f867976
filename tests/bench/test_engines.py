"""The two engines of ``autopipe bench`` run the same system: the direct engine drives the
Searcher/Scheduler objects the Tune engine hands to a real ``Tuner``, and on a reduced case
(2 held-out tasks, 1 seed, budgets 3 and 5) both give the same evaluations, recommendations and
regrets. Bitwise equality holds because trials run one at a time (``max_concurrent_trials=1``),
every searcher owns its seeded generator and the replay draw depends only on (seed, config)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import pandas as pd
import pytest

from autopipe.bench.core import TaskContext, Trace, logo_benchmark
from autopipe.bench.direct import DirectReplayRunner
from autopipe.bench.methods import Method, get_methods
from autopipe.bench.ray_runner import RayReplayRunner
from autopipe.prior.ranker import RankerConfig
from tests.fixtures.histories import make_synthetic

pytestmark = pytest.mark.job(seconds=45)  # starts Ray (tests/conftest.py)

METHODS = ("random", "tpe", "gp-ei", "autopipe", "ranker-top1")
ENV_BEFORE = {
    v: os.environ.get(v) for v in ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "TUNE_GLOBAL_CHECKPOINT_S")
}


def run(engine: type, traces: dict) -> pd.DataFrame:
    h = make_synthetic(n_tasks=4)

    def recording(runner: object) -> object:
        def run_fn(ctx: TaskContext, m: Method, seed: int, n: int, budgets: Sequence[int]) -> Trace:
            tr = runner(ctx, m, seed, n, budgets)  # type: ignore[operator]
            traces[(m.name, ctx.task, seed)] = tr
            return tr

        return run_fn

    with engine() as runner:
        return logo_benchmark(
            h,
            get_methods(METHODS),
            recording(runner),
            budgets=[3, 5],
            seeds=1,
            autopipe_budget=5,
            tasks=h.task_ids[:2],
            prior_config=RankerConfig(n_models=1),
        )


@pytest.mark.timeout(600)
def test_direct_engine_matches_ray_tune() -> None:
    direct: dict = {}
    tune: dict = {}
    rows_direct = run(DirectReplayRunner, direct)
    rows_tune = run(RayReplayRunner, tune)
    # 4 online methods x 2 tasks x 1 seed went through both engines (ranker-top1 is offline)
    assert set(direct) == set(tune) and len(direct) == 8
    for key, a in direct.items():
        b = tune[key]
        # the same configurations in the same order, with the same replayed objective and cost
        assert [e.key for e in a.evals] == [e.key for e in b.evals], key
        assert [(e.observed, e.cost, e.fraction) for e in a.evals] == [
            (e.observed, e.cost, e.fraction) for e in b.evals
        ], key
        assert len(a.evals) == 5, key
        # model recommendations (the AutoPipe family) after 3 and 5 observations agree too
        assert a.recs == b.recs, key
    assert direct[("autopipe", "t0", 0)].recs.keys() == {3, 5}
    pd.testing.assert_frame_equal(rows_direct, rows_tune)
    # The replay's Tune settings (no result files, no experiment checkpoints) end with the
    # runner: tuning jobs this process starts later (and their subprocesses) get Tune's defaults.
    for var in ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "TUNE_GLOBAL_CHECKPOINT_S"):
        assert os.environ.get(var) == ENV_BEFORE[var], var


CURVE_METHODS = ("random", "tpe", "asha", "autopipe", "no-offline")


@pytest.mark.timeout(600)
def test_direct_engine_matches_ray_tune_on_curves() -> None:
    """On a small table with learning curves (continuous space, replayed by the nearest run
    configuration), trials report their curves point by point: ASHA stops some at its rungs,
    AutoPipe's trials stop themselves at f = 0.5 and its searcher observes the fold predictor's
    proxies. Both engines give the same evaluations, recommendations and regrets."""
    from tests.fixtures.histories import FAST, FAST_RANKER, make_curve_history

    h = make_curve_history(n_configs=24, n_tasks=3, planted="slope")
    out: dict[str, tuple[pd.DataFrame, dict]] = {}
    for name, engine in (("direct", DirectReplayRunner), ("tune", RayReplayRunner)):
        traces: dict = {}

        def run_fn(ctx: TaskContext, m: Method, seed: int, n: int, budgets: Sequence[int]) -> Trace:
            tr = runner(ctx, m, seed, n, budgets)  # noqa: B023 - called inside the with
            traces[(m.name, ctx.task, seed)] = tr  # noqa: B023
            return tr

        with engine() as runner:
            rows = logo_benchmark(
                h,
                get_methods(CURVE_METHODS),
                run_fn,
                budgets=[3, 5],
                seeds=1,
                autopipe_budget=5,
                tasks=h.task_ids[:1],
                prior_config=FAST_RANKER,
                predictor_config=FAST,
                early_fraction=0.5,
                promote=3,
            )
        out[name] = (rows, traces)
    (rows_direct, direct), (rows_tune, tune) = out["direct"], out["tune"]
    assert set(direct) == set(tune) and len(direct) == len(CURVE_METHODS)
    for key, a in direct.items():
        b = tune[key]
        # same configurations, fractions reached, costs, observations and rung scores
        assert [(e.key, e.fraction, e.cost, e.observed, e.rung) for e in a.evals] == [
            (e.key, e.fraction, e.cost, e.observed, e.rung) for e in b.evals
        ], key
        assert a.recs == b.recs and a.promoted == b.promoted, key
    # AutoPipe's end: 3 early-stopped configurations run in full, each charged a full run
    ap = direct[("autopipe", "t0", 0)]
    assert set(ap.promoted) == {3, 5} and all(len(v) == 3 for v in ap.promoted.values())
    assert all(ap.recs[k] in ap.promoted[k] for k in (3, 5))
    # AutoPipe stopped every trial at 0.5; ASHA cut some trials below a full run
    assert {e.fraction for e in direct[("autopipe", "t0", 0)].evals} == {0.5}
    assert min(e.fraction for e in direct[("asha", "t0", 0)].evals) < 1.0
    pd.testing.assert_frame_equal(rows_direct, rows_tune)


@pytest.mark.timeout(600)
def test_bohb_runs_on_curves_with_the_tune_engine() -> None:
    """BOHB on a table with curves (Tune engine only: HyperBandForBOHB pauses trials at its
    rungs, and the replay trainable resumes from its checkpointed position): trials stop at
    rungs below a full run, cost the fraction they reached, and some pass the first rung."""
    from tests.fixtures.histories import make_curve_history

    h = make_curve_history(n_configs=24, n_tasks=2, planted="slope")
    traces: dict = {}
    with RayReplayRunner() as runner:

        def run_fn(ctx: TaskContext, m: Method, seed: int, n: int, budgets: Sequence[int]) -> Trace:
            tr = runner(ctx, m, seed, n, budgets)
            traces[m.name] = tr
            return tr

        rows = logo_benchmark(h, get_methods(["bohb"]), run_fn, [9], 1, 9, tasks=h.task_ids[:1])
    evals = traces["bohb"].evals
    assert len(evals) == 9
    # every evaluation cost the fraction of its (unit-cost) run it reached, resumed or not
    assert all(e.cost == pytest.approx(e.fraction) for e in evals)
    fractions = sorted(e.fraction for e in evals)
    # HyperBand cut some trials at a rung and let others go further
    assert fractions[0] < 1.0 and fractions[-1] > fractions[0]
    # trials stopped below a full run carry the rung score they were ranked by
    assert all(e.rung is not None for e in evals if e.fraction < 1.0)
    assert rows["regret"].notna().all()
