"""The replay benchmark's cost-aware AutoPipe (``autopipe-cost``): the prior fitted on the
training tasks brings a cost model, the method's ``cost_weight`` reaches the searcher, and the
replayed search spends less than cost-blind AutoPipe on a table whose costs vary."""

from __future__ import annotations

import dataclasses

from autopipe.bench.core import logo_benchmark
from autopipe.bench.direct import DirectReplayRunner
from autopipe.bench.methods import METHODS, get_methods
from autopipe.prior.ranker import RankerConfig
from tests.fixtures.histories import make_synthetic, with_costs


def test_cost_aware_method_spends_less_on_a_table_with_costs() -> None:
    assert METHODS["autopipe-cost"].cost_weight > 0  # the benchmark's row is cost-aware
    history = with_costs(make_synthetic(n_tasks=4))  # costs spread ~30x within a task
    blind, aware = get_methods(("autopipe", "autopipe-cost"))
    aware = dataclasses.replace(aware, cost_weight=1.0)  # a clear trade on this small case
    with DirectReplayRunner() as runner:
        rows = logo_benchmark(
            history,
            [blind, aware],
            runner,
            budgets=[3, 5],
            seeds=2,
            autopipe_budget=5,
            tasks=history.task_ids[:2],
            prior_config=RankerConfig(n_models=1),
        )
    at5 = rows.loc[rows["budget"] == 5].groupby("method")[["cost", "regret"]].mean()
    # 2 tasks x 2 seeds each; cost in mean full runs of the task, the recommendation included
    assert len(rows.loc[rows["method"] == "autopipe-cost"]) == 8
    assert at5.loc["autopipe-cost", "cost"] < 0.8 * at5.loc["autopipe", "cost"], at5
    # cheaper, and on this table (the best configurations are not the dearest) not worse
    assert at5.loc["autopipe-cost", "regret"] <= at5.loc["autopipe", "regret"] + 0.05, at5
