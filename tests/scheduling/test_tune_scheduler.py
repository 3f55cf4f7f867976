"""A real Ray Tune run over a replay trainable: trials stop at the configured fraction, their
proxies reach the searcher, a diverging trial is stopped as failed, the recommendation is
promoted to full fidelity, and MLflow shows early-stopped / failed / completed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ray
from mlflow.tracking import MlflowClient
from ray import tune

from autopipe import metrics as M
from autopipe.bench.tune_replay import make_replay_trainable
from autopipe.history.data import History
from autopipe.scheduling.budget import BudgetGate
from autopipe.scheduling.ledger import Ledger
from autopipe.scheduling.policy import StopRules
from autopipe.search.simple import GridCore
from autopipe.space import Param, Space
from autopipe.tracking import Tracker
from autopipe.tune.callbacks import RESUME_KEY, MLflowTrialCallback
from autopipe.tune.scheduler import AutoPipeScheduler
from autopipe.tune.searcher import JobSearcher

pytestmark = pytest.mark.job(seconds=15)  # starts Ray (tests/conftest.py)

LRS = [1e-4, 3e-4, 1e-3, 3e-3]
DIVERGING = 3e-3
EARLY = 0.9


def synthetic_history() -> History:
    space = Space([Param("sft.lr", "float", values=tuple(LRS), log=True)])
    runs, curves = [], []
    fr = np.round(np.arange(1, 21) * 0.05, 2)
    for i, lr in enumerate(LRS):
        rid = f"r{i}"
        quality = i / 3  # larger lr learns faster here (until it diverges)
        runs.append(
            {
                "run_id": rid,
                "task": "t",
                "seed": 0,
                "sft.lr": lr,
                "y": 0.3 + 0.5 * quality,
                "cost": 100.0,
                "status": "ok",
            }
        )
        for f in fr:
            row = {"run_id": rid, "fraction": float(f), M.TRAIN_LOSS: 2.0 - quality * f}
            if f > 0.5:  # the RL half
                k = int(round((f - 0.5) / 0.05))
                row[M.KL] = 0.01 * 1.3**k if lr == DIVERGING else 0.02
                row[M.REWARD_MEAN] = 0.5
            curves.append(row)
    tasks = pd.DataFrame({"task": ["t"], "group": ["t"]})
    return History(
        space, pd.DataFrame(runs), tasks, pd.DataFrame(curves), objective="acc", mode="max"
    )


@pytest.fixture(scope="module")
def ray_local():
    ray.init(
        # never attach to another Ray on this machine (or a stale ray_current_cluster file)
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level="ERROR",
        configure_logging=False,
    )
    yield
    ray.shutdown()


def test_scheduler_stops_scores_and_promotes(ray_local, tmp_path) -> None:
    hist = synthetic_history()
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(store)
    exp = tracker.experiment_id("replay")
    parent = tracker.start_run(exp, "job", {M.TAG_ROLE: "job"})
    ledger = Ledger()
    core = GridCore(hist.space, seed=0)
    searcher = JobSearcher(core, ledger, BudgetGate(ledger, None, EARLY))
    callback = MLflowTrialCallback(tracker, exp, parent, {M.TAG_DATASET: "t"}, {}, ledger)
    tune.Tuner(
        make_replay_trainable(hist, "t", early_stop_fraction=EARLY),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=AutoPipeScheduler(StopRules(EARLY), ledger),
            metric=M.OBJECTIVE,
            mode="max",
            num_samples=4,
            max_concurrent_trials=2,
        ),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "ray"), callbacks=[callback], verbose=0
        ),
    ).fit()

    status = {rec.config["sft.lr"]: rec.status for rec in ledger.trials.values()}
    assert status[DIVERGING] == M.STATUS_FAILED  # KL grew for 5 reports: killed as failed
    assert "KL grew" in next(
        r.reason for r in ledger.trials.values() if r.status == M.STATUS_FAILED
    )
    assert [status[lr] for lr in LRS[:3]] == [M.STATUS_EARLY_STOPPED] * 3
    for rec in ledger.trials.values():  # nothing past the early point was seen
        assert max(r[M.FRACTION] for r in rec.reports) <= EARLY + 1e-9
    # The proxies (not NaN objectives) reached the searcher; the failed trial observed as None.
    observed = {tid: v for tid, _, v, _ in core.observed}
    for tid, rec in ledger.trials.items():
        if rec.status == M.STATUS_EARLY_STOPPED:
            assert observed[tid] == pytest.approx(rec.proxy)
        else:
            assert observed[tid] is None
    best_cfg, _ = core.best()
    assert best_cfg["sft.lr"] == 1e-3  # lowest loss among the healthy ones

    # Promotion: the recommended configuration resumes after its early point.
    tune.Tuner(
        make_replay_trainable(hist, "t", early_stop_fraction=EARLY),
        param_space={**best_cfg, RESUME_KEY: "replay"},
        tune_config=tune.TuneConfig(num_samples=1, metric=M.OBJECTIVE, mode="max"),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "ray"), callbacks=[callback], verbose=0
        ),
    ).fit()
    tracker.end_run(parent)
    c = MlflowClient(store)
    tags = [r.data.tags for r in c.search_runs([exp]) if r.data.tags.get(M.TAG_ROLE) == "trial"]
    assert sorted(t[M.TAG_STATUS] for t in tags) == sorted(
        [M.STATUS_EARLY_STOPPED] * 3 + [M.STATUS_FAILED, M.STATUS_COMPLETED]
    )
    promoted = next(
        r for r in c.search_runs([exp]) if r.data.tags.get(M.TAG_STATUS) == M.STATUS_COMPLETED
    )
    assert promoted.data.metrics[M.OBJECTIVE] == pytest.approx(0.3 + 0.5 * 2 / 3)
    steps = [m.step for m in c.get_metric_history(promoted.info.run_id, M.FRACTION)]
    assert min(steps) > 18  # the promoted run did not replay the prefix (rows 1..18)
    early = [
        r for r in c.search_runs([exp]) if r.data.tags.get(M.TAG_STATUS) == M.STATUS_EARLY_STOPPED
    ]
    assert all(M.PROXY in r.data.metrics for r in early)  # proxy recorded in MLflow
