"""The replay benchmark on a table with learning curves: AutoPipe's trials stop at the early-stop
fraction under the job's own scheduler, cost that fraction of a run, are scored by a predictor
fitted without the held-out task, and those proxies are what the searcher observes; ASHA stops
trials at its rungs. Direct engine only (no Ray); test_engines checks it against Ray Tune."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

from autopipe import metrics as M
from autopipe.bench import direct as direct_mod
from autopipe.bench.core import Eval, TaskContext, TaskTruth, Trace, logo_benchmark
from autopipe.bench.direct import DirectReplayRunner
from autopipe.bench.methods import Method, get_methods
from autopipe.bench.replay import RUNG_SCORE, CurveReplay
from autopipe.errors import DataError
from autopipe.history.data import History
from tests.fixtures.histories import FAST, FAST_RANKER, make_curve_history

F = 0.5


@pytest.fixture(scope="module")
def curve_history() -> History:
    # 3 tasks x 24 continuous configurations, curves at 0.1..1.0; final = the curve's slope
    return make_curve_history(n_configs=24, n_tasks=3, planted="slope")


def run(history: History, methods: Sequence[str], seen: dict, budgets=(3, 5)) -> Any:
    """logo_benchmark on the first task with the direct engine, keeping each (trace, context,
    searcher)."""
    build = direct_mod.build_search

    def spy(ctx: TaskContext, method: Method, *a: Any) -> Any:
        searcher, scheduler = build(ctx, method, *a)
        seen[(method.name, "searcher")] = searcher
        return searcher, scheduler

    def run_fn(ctx: TaskContext, m: Method, seed: int, n: int, bs: Sequence[int]) -> Trace:
        tr = runner(ctx, m, seed, n, bs)
        seen[m.name] = (tr, ctx)
        return tr

    direct_mod.build_search = spy
    try:
        with DirectReplayRunner() as runner:
            return logo_benchmark(
                history,
                get_methods(list(methods)),
                run_fn,
                budgets=list(budgets),
                seeds=1,
                autopipe_budget=max(budgets),
                tasks=history.task_ids[:1],
                prior_config=FAST_RANKER,
                predictor_config=FAST,
                early_fraction=F,
            )
    finally:
        direct_mod.build_search = build


@pytest.mark.timeout(300)
def test_autopipe_stops_early_and_observes_the_fold_predictor(curve_history: History) -> None:
    seen: dict = {}
    rows = run(curve_history, ["autopipe", "random"], seen)
    trace, ctx = seen["autopipe"]
    truth = TaskTruth.from_history(curve_history, ctx.task)
    # every AutoPipe evaluation stopped itself at f and cost f x its run's cost (cost 1 here)
    assert [e.fraction for e in trace.evals] == [F] * 5
    assert all(math.isclose(e.cost, F * 1.0) for e in trace.evals)
    # ... and none is a full-fidelity observation
    assert all(e.observed is None for e in trace.evals)
    # k evaluations cost k x f plus one full run of the recommendation
    regret, cost, used = trace.score(truth, 5)
    assert used == 5 and math.isclose(cost, 5 * F + 1.0)
    row = rows[(rows["method"] == "autopipe") & (rows["budget"] == 3)].iloc[0]
    assert math.isclose(row["cost"], 3 * F + 1.0)
    # the recommendation is a configuration the task ran (snapped), so its regret is defined
    assert trace.recs.keys() == {3, 5} and all(k in truth.y_max for k in trace.recs.values())
    # random search keeps full runs: it has no predictor
    rtrace, _ = seen["random"]
    assert [e.fraction for e in rtrace.evals] == [1.0] * 5

    # The predictor of this fold never saw the held-out task, and scores at f.
    pred = ctx.predictor
    assert pred is not None and ctx.task not in pred.training["tasks"]
    assert sorted(pred.training["tasks"]) == sorted(set(curve_history.task_ids) - {ctx.task})
    assert pred.fraction == F

    # The proxies the scheduler recorded in the ledger are what the searcher observed.
    searcher = seen[("autopipe", "searcher")]
    ledger = searcher.ledger
    assert [r.status for r in ledger.trials.values()] == [M.STATUS_EARLY_STOPPED] * 5
    observed = {tid: (v, var) for tid, _, v, var in searcher.core.observed}
    for tid, rec in ledger.trials.items():
        # the proxy is the fold predictor's, with its variance as the GP's noise
        assert rec.proxy is not None and rec.proxy_var is not None and rec.proxy_var > 0
        assert observed[tid] == (rec.proxy, rec.proxy_var), tid
    # the proxy function is the fold's: it reproduces the last trial's proxy from its reports
    # and its peers (when it stopped, every other trial had run)
    tid, rec = list(ledger.trials.items())[-1]
    peers = [r.reports for t, r in ledger.trials.items() if t != tid]
    assert math.isclose(ctx.proxy(rec.reports, rec.config, peers)[0], rec.proxy)


@pytest.mark.timeout(300)
def test_no_offline_uses_the_fallback_proxy_and_asha_cuts_at_rungs(
    curve_history: History,
) -> None:
    seen: dict = {}
    run(curve_history, ["no-offline", "asha"], seen, budgets=(6,))
    _, ctx = seen["no-offline"]
    # no method needs a prior: no predictor is fitted
    assert ctx.predictor is None and ctx.proxy is None
    searcher = seen[("no-offline", "searcher")]
    for rec in searcher.ledger.trials.values():
        # without offline models the proxy is the negated latest eval loss, no variance
        losses = [r[M.EVAL_LOSS] for r in rec.reports if M.EVAL_LOSS in r]
        assert rec.proxy == -losses[-1] and rec.proxy_var is None
    trace, _ = seen["asha"]
    # ASHA (grace period 1, reduction 3) stopped some trials at a rung below the full run;
    # such a trial costs the fraction it reached and is no observation
    cut = [e for e in trace.evals if e.fraction < 1.0]
    assert cut and all(e.observed is None and math.isclose(e.cost, e.fraction) for e in cut)


def test_curve_replay_reports_and_snapping(curve_history: History) -> None:
    task = curve_history.task_ids[0]
    replay = CurveReplay(curve_history, task, seed=0)
    runs = curve_history.runs[curve_history.runs["task"] == task]
    cfg = curve_history.records(runs.iloc[[0]])[0]
    full = replay.reports(cfg)
    # a full replay reports the 10 curve points, then the final result at fraction 1
    assert [r[M.FRACTION] for r in full] == [*(round(0.1 * k, 1) for k in range(1, 11)), 1.0]
    assert full[-1][M.OBJECTIVE] == pytest.approx(float(runs.iloc[0]["y"]))
    assert full[-1][RUNG_SCORE] == full[-1][M.OBJECTIVE]
    # before the end, the rung score is the negated latest eval loss (the objective is maximized)
    assert full[3][RUNG_SCORE] == -full[3][M.EVAL_LOSS]
    early = replay.reports(cfg, F)
    # an early replay stops itself at f with a flagged report that costs f x cost
    assert [r[M.FRACTION] for r in early] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.5]
    assert early[-1][M.EARLY_STOPPED] == 1.0 and early[-1][M.COST_S] == pytest.approx(F)
    # a configuration never run (continuous space) replays its nearest run configuration
    near = dict(cfg, lr=cfg["lr"] * 1.0001)
    assert replay.key_of(near) == curve_history.space.config_key(cfg)
    assert repr(replay.reports(near)) == repr(full)  # repr: NaN objectives compare equal


def test_bad_early_fraction_is_one_line(curve_history: History) -> None:
    with pytest.raises(DataError, match=r"--early-fraction must be in \(0, 1\], but got 0"):
        run_fn = DirectReplayRunner()
        logo_benchmark(curve_history, get_methods(["random"]), run_fn, [3], 1, 3, early_fraction=0)


def test_promotion_runs_the_shortlist_in_full_and_keeps_the_best(curve_history: History) -> None:
    from autopipe.bench.ray_runner import resolve_promotions

    task = curve_history.task_ids[0]
    replay = CurveReplay(curve_history, task, seed=0)
    runs = curve_history.runs[curve_history.runs["task"] == task]
    keys = [curve_history.space.config_key(c) for c in curve_history.records(runs.iloc[:3])]
    finals = [replay.final(k) for k in keys]
    # the replay's full run of a configuration: its objective (maximized) and cost
    assert finals[0] == (pytest.approx(float(runs.iloc[0]["y"])), pytest.approx(1.0))
    # 5 early-stopped evaluations that cost nothing, so the score's cost is the promotions'
    evals = [Eval(keys[i % 3], 0.5, 0.0, None) for i in range(5)]
    trace = resolve_promotions(Trace(evals=evals), {5: keys, 3: keys[0]}, replay)
    best = max(range(3), key=lambda i: finals[i][0])
    # three configurations run in full: the best full result is recommended ...
    assert trace.recs[5] == keys[best] and trace.promoted[5] == keys
    # ... and their three full runs replace the recommendation's one full run in the cost
    truth = TaskTruth.from_history(curve_history, task)
    one = sum(truth.cost[k] for k in keys[:1]) / truth.unit_cost
    three = sum(truth.cost[k] for k in keys) / truth.unit_cost
    assert trace.score(truth, 5)[1] == pytest.approx(three)
    # a single recommendation is kept as it is, charged one full run as before
    assert trace.recs[3] == keys[0] and 3 not in trace.promoted
    assert trace.score(truth, 3)[1] == pytest.approx(one)
    with pytest.raises(DataError, match="--promote must be >= 1, but got 0"):
        logo_benchmark(
            curve_history, get_methods(["random"]), DirectReplayRunner(), [3], 1, 3, promote=0
        )
