"""A real `ray start --head` on 127.0.0.1 (stopped by PID), shared by this module's jobs:
`autopipe submit` runs a job on it through the Job Submission API, and an embedded job with early
stopping and promotion runs beside it (a second Ray on the machine).

Beside another Ray: Ray Train's PlacementGroupCleaner finds its cluster by auto-detection; with a
second Ray on the machine it died ("Found multiple active Ray instances"), every early-stopped
trial leaked its placement group, and once they held all CPUs the next trial waited forever for
its worker.

Early stopping and promotion: every search trial stops at its early point with a resumable
checkpoint, and the job's final step resumes its shortlist (``budget.promote``) to full fidelity
(same step count as a straight run, prefix not recomputed); the best full result is the job's
answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from autopipe import metrics as M
from autopipe.tracking import Tracker
from autopipe.tracking.best import read_best
from tests.fixtures.jobs import job_runs, ray_head, run_cli, tiny_space, write_spec

pytestmark = pytest.mark.job(seconds=140)  # starts Ray (tests/conftest.py)

SFT_STEPS, RL_STEPS = 24, 2


@pytest.fixture(scope="module")
def head():
    with ray_head() as h:
        yield h


def test_submit_runs_the_job_on_the_cluster(head, tmp_path: Path) -> None:
    url, env = head
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(
        tmp_path / "sub.yaml",
        "submitted",
        store,
        tmp_path / "ray",
        budget={"max_trials": 1, "max_concurrent": 1},
    )
    r = run_cli(
        "submit", str(spec), "--address", url, "--wait", "--timeout", "500", env=env, timeout=600
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "submitted job 'submitted' as Ray job" in r.stdout
    assert "SUCCEEDED" in r.stdout
    _, trials = job_runs(store, "submitted")
    assert len(trials) == 1 and trials[0].data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED


def test_early_stop_and_promotion_beside_another_ray(head, tmp_path: Path) -> None:
    _, env = head
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # DPO and GRPO configurations: the promoted trials keep their own (conditional) parameters
    configs = [
        {"sft.batch_size": 8, "rl.algorithm": "dpo"},
        {"sft.batch_size": 16, "rl.algorithm": "grpo", "rl.temperature": 0.9},
        {"sft.batch_size": 32, "rl.algorithm": "dpo"},
    ]
    spec = write_spec(
        tmp_path / "p.yaml",
        "promo",
        store,
        tmp_path / "ray",
        # more early-stopped trials than the embedded Ray has CPUs (2 in CI)
        budget={"max_trials": 3, "max_concurrent": 2, "early_stop_fraction": 0.5, "promote": 2},
        space=tiny_space(
            SFT_STEPS,
            RL_STEPS,
            # rl.temperature is GRPO's only: a conditional parameter
            rl={
                "algorithm": {"choices": ["dpo", "grpo"]},
                "temperature": {"low": 0.7, "high": 1.0},
            },
        ),
        search={"algorithm": "design", "options": {"configs": configs}},
    )
    # a leaked placement group shows as a worker group that cannot start: fail in 60 s, not 300
    env = {**env, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60"}
    r = run_cli("tune", str(spec), "--quiet", env=env, timeout=540)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the job's workers never lost track of their own cluster
    assert "Found multiple active Ray instances" not in r.stdout + r.stderr
    assert "promoted 2 early-stopped trials to full fidelity" in r.stdout
    c = MlflowClient(store)
    _, trials = job_runs(store, "promo")
    early = [x for x in trials if x.data.tags[M.TAG_STATUS] == M.STATUS_EARLY_STOPPED]
    done = [x for x in trials if x.data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED]
    # every proposed trial ran to its early-stop point, the shortlist was resumed to the end
    assert len(early) == 3 and len(done) == 2 and len(trials) == 5
    total = SFT_STEPS + RL_STEPS
    stop = 13  # ceil(0.5 * (24 + 2))
    for x in early:
        assert float(x.data.tags[M.TAG_FIDELITY]) == stop / total
        assert M.PROXY in x.data.metrics  # the proxy the searcher saw
    # each promoted run resumed its own early-stopped trial, none twice
    sources = [x.data.tags[M.TAG_PROMOTED_FROM] for x in done]
    assert len(set(sources)) == 2 and set(sources) <= {x.data.tags[M.TAG_TRIAL_ID] for x in early}
    for promoted in done:
        # each promoted run keeps its own configuration: DPO has no sampling temperature
        grpo = promoted.data.params["rl.algorithm"] == "grpo"
        assert ("rl.temperature" in promoted.data.params) == grpo
        assert float(promoted.data.tags[M.TAG_COST_SAVED]) > 0
        steps = [m.step for m in c.get_metric_history(promoted.info.run_id, M.TRAIN_LOSS)]
        fr = c.get_metric_history(promoted.info.run_id, M.FRACTION)
        assert min(steps) > stop and max(fr, key=lambda m: m.step).step == total
    # the answer is the better of the two full results
    top = max(x.data.metrics[M.OBJECTIVE] for x in done)
    winners = {x.info.run_id: x for x in done if x.data.metrics[M.OBJECTIVE] == top}
    best = read_best(Tracker(store), job="promo")
    assert best["value"] == top and best["mlflow_run_id"] in winners
    assert best["promoted_from"] == winners[best["mlflow_run_id"]].data.tags[M.TAG_PROMOTED_FROM]
    assert best["cost_saved_s"] == pytest.approx(
        float(winners[best["mlflow_run_id"]].data.tags[M.TAG_COST_SAVED]), abs=0.01
    )  # the winner's own saved prefix, not the job's total
    assert best["config"]["sft.steps"] == SFT_STEPS  # the whole configuration, constants too
