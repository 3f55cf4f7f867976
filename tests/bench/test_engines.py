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
from tests.prior.conftest import make_synthetic

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
