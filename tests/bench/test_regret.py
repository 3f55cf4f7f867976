"""Regret and cost of the replay benchmark on hand-made numbers (no Ray)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from autopipe.bench.core import Eval, TaskTruth, Trace, normalized_regret
from autopipe.bench.report import match_cost, per_task, render_markdown, summary


def test_normalized_regret_is_direction_aware() -> None:
    # max: best 1.0, median 0.6 -> choosing 0.8 is half-way: regret 0.5
    assert normalized_regret(0.8, [0.2, 0.6, 1.0], "max") == pytest.approx(0.5)
    # min (losses): best 1.0, median 3.0 -> choosing 2.0 is half-way; the best has regret 0
    assert normalized_regret(2.0, [1.0, 3.0, 5.0], "min") == pytest.approx(0.5)
    assert normalized_regret(1.0, [1.0, 3.0, 5.0], "min") == pytest.approx(0.0)
    # worse than the median: regret > 1
    assert normalized_regret(5.0, [1.0, 3.0, 5.0], "min") == pytest.approx(2.0)
    # NaN values (failed configurations) are ignored for best/median
    assert normalized_regret(0.8, [0.2, 0.6, 1.0, math.nan], "max") == pytest.approx(0.5)


def truth() -> TaskTruth:
    # y_max (larger is better) of four configurations; "d" always failed
    return TaskTruth.from_values(
        "t", [("a",), ("b",), ("c",), ("d",)], [1.0, 0.6, 0.2, math.nan], [2.0, 2.0, 2.0, 2.0]
    )


def test_truth_regret_and_failed_configuration() -> None:
    t = truth()
    assert (t.best, t.median, t.unit_cost) == (1.0, 0.6, 2.0)
    assert t.regret(("a",)) == pytest.approx(0.0)
    assert t.regret(("b",)) == pytest.approx(0.0 + 1.0)  # the median
    assert t.regret(("c",)) == pytest.approx(2.0)  # (1.0 - 0.2) / (1.0 - 0.6)
    # a configuration that always failed scores as the task's worst finite value
    assert t.regret(("d",)) == pytest.approx(t.regret(("c",)))
    assert t.regret(None) == pytest.approx(1.0)  # nothing chosen: the median


def test_trace_incumbent_cost_and_model_recommendation() -> None:
    t = truth()
    tr = Trace(
        evals=[
            Eval(("c",), 1.0, 2.0, 0.25),
            Eval(("b",), 1.0, 2.0, 0.9),  # a lucky seed: observed 0.9, true 0.6
            Eval(("a",), 0.5, 1.0, None),  # early-stopped: costs half, never the incumbent
        ]
    )
    # after 2 evaluations the incumbent by observed score is b, scored by its true value (0.6)
    regret, cost, used = tr.score(t, 2)
    assert regret == pytest.approx(1.0)
    # cost = 2 + 2 evaluated + one full run of the recommendation (2), in units of 2
    assert cost == pytest.approx(3.0) and used == 2
    regret, cost, used = tr.score(t, 3)
    assert cost == pytest.approx((2 + 2 + 1 + 2) / 2) and used == 3
    # a model recommendation at k overrides the incumbent
    tr.recs[3] = ("a",)
    assert tr.score(t, 3)[0] == pytest.approx(0.0)
    # budgets beyond the trace use all of it
    assert tr.score(t, 10)[2] == 3
    # offline methods: no evaluation, the recommendation's full run is the cost
    off = Trace(offline_rec=("a",))
    assert off.score(t, 15) == pytest.approx((0.0, 1.0, 0))


def rows() -> pd.DataFrame:
    r = []
    # two tasks, two seeds: autopipe regret 0.1/0.3 on t1, 0.0/0.0 on t2; random 0.5/0.7, 0.2/0.4
    for m, vals in {"autopipe": [0.1, 0.3, 0.0, 0.0], "random": [0.5, 0.7, 0.2, 0.4]}.items():
        for i, v in enumerate(vals):
            r.append(
                {
                    "bench": "b",
                    "method": m,
                    "group": f"t{i // 2}",
                    "task": f"t{i // 2}",
                    "seed": i % 2,
                    "budget": 5,
                    "evals": 5,
                    "regret": v,
                    "cost": 6.0,
                }
            )
    return pd.DataFrame(r)


def test_seed_averaging_and_summary() -> None:
    pt = per_task(rows()).set_index(["method", "task"])
    assert pt.loc[("autopipe", "t0"), "regret"] == pytest.approx(0.2)  # mean over seeds
    assert pt.loc[("random", "t1"), "regret"] == pytest.approx(0.3)
    s = summary(rows()).set_index("method")
    assert s.loc["random", "mean"] == pytest.approx(0.45)  # tasks 0.6 and 0.3
    assert s.loc["random", "worst"] == pytest.approx(0.6)
    assert s.loc["autopipe", "median"] == pytest.approx(0.1)
    # standard error over seeds of the task-mean: seeds give 0.35 and 0.55
    assert s.loc["random", "se"] == pytest.approx(0.1)
    mc = match_cost(summary(rows())).set_index("method")
    assert mc.loc["random", "ref_budget"] == 5
    md = render_markdown(rows(), "t")
    assert "| random | 5 | 5.0 | 0.450 |" in md
