"""A real `ray start --head` on 127.0.0.1 (stopped by PID) with Ray's token authentication on,
run by an interpreter that has AutoPipe's dependencies but not AutoPipe, shared by this module:
`autopipe submit` runs a job on it through the Job Submission API (AutoPipe travels with the
job); every way of reaching it with or without the token connects or ends in one line within
10 s; and an embedded job with early stopping and promotion runs beside it (a second Ray on the
machine).

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

import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from autopipe import metrics as M
from autopipe.tracking import Tracker
from autopipe.tracking.best import read_best
from tests.fixtures.jobs import (
    assert_each_step_logged_once,
    job_runs,
    plain_python,
    ray_head,
    run_cli,
    tiny_space,
    write_spec,
)

pytestmark = pytest.mark.job(seconds=140)  # starts Ray (tests/conftest.py)

SFT_STEPS, RL_STEPS = 24, 2


TOKEN = "autopipe-test-token"
AUTH = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory):
    python = plain_python(tmp_path_factory.mktemp("plain"))
    with ray_head(token=TOKEN, python=python) as h:
        yield h


def test_submit_runs_the_job_on_the_cluster(head, tmp_path: Path) -> None:
    url, _, env = head
    # the client has only the token (Ray's own variable); AutoPipe turns token mode on for it
    env = {k: v for k, v in env.items() if k not in AUTH} | {"RAY_AUTH_TOKEN": TOKEN}
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(
        tmp_path / "sub.yaml",
        "submitted",
        store,
        tmp_path / "ray",
        budget={"max_trials": 1, "max_concurrent": 1},
    )
    r = run_cli(
        "submit",
        str(spec),
        "--address",
        url,
        "--wait",
        "--timeout",
        "500",
        env=env,
        unset=AUTH[::2],
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "submitted job 'submitted' as Ray job" in r.stdout
    assert "SUCCEEDED" in r.stdout
    parents, trials = job_runs(store, "submitted")
    assert len(trials) == 1 and trials[0].data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED
    assert assert_each_step_logged_once(store, [*parents, *trials]) > 10


def test_early_stop_and_promotion_beside_another_ray(head, tmp_path: Path) -> None:
    _, _, env = head
    env = {k: v for k, v in env.items() if k not in AUTH}  # the embedded Ray needs no token
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
    r = run_cli("tune", str(spec), "--quiet", env=env, unset=AUTH[1:], timeout=540)
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
    # each metric step of every run, promoted ones included, was logged once with one value
    parents, _ = job_runs(store, "promo")
    assert assert_each_step_logged_once(store, [*parents, *trials]) > 5 * 10


# ------------------------------------------------------------------ reaching the cluster
NO_TOKEN = "the cluster requires a token: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH to a file"


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A job to submit, and one whose trials need a GPU: `tune --address` with it stops at the
    resource check, which only a connected driver reaches."""
    d = tmp_path_factory.mktemp("reach")
    store = f"sqlite:///{d / 'mlflow.db'}"
    job = write_spec(d / "job.yaml", "reach", store, d / "ray")
    gpu = write_spec(d / "gpu.yaml", "reach", store, d / "ray", resources={"gpus_per_worker": 1})
    return job, gpu


CASES = [
    # (command, address (url / gcs / a free port), token, the one line it ends with)
    ("submit", "{url}", None, "authentication refused: " + NO_TOKEN),
    ("submit", "{dash}", None, "authentication refused: " + NO_TOKEN),  # no scheme: the dashboard
    ("submit", "{gcs}", TOKEN, "no Ray dashboard (Job API) answers over HTTP at 127.0.0.1:"),
    ("submit", "ray://{gcs}", TOKEN, "`autopipe submit` needs the dashboard's Job API address"),
    ("submit", "http://127.0.0.1:{free}", TOKEN, "no Ray cluster reachable (nothing listens on"),
    ("tune", "{gcs}", None, "authentication refused: " + NO_TOKEN),
    ("tune", "{gcs}", TOKEN, "resources: a worker needs 1 CPU and 1 GPU, but no node"),
    ("tune", "auto", TOKEN, "resources: a worker needs 1 CPU and 1 GPU, but no node"),
    ("tune", "{gcs}", "not-the-token", "authentication refused: the token in RAY_AUTH_TOKEN"),
    ("tune", "{url}", TOKEN, "that is the Ray dashboard's Job API, which `autopipe submit"),
    ("tune", "{dash}", TOKEN, "an HTTP server answers there (the Ray dashboard?), not a Ray GCS"),
    ("tune", "ray://{gcs}", TOKEN, "cannot connect to a Ray cluster (no answer in 7 s)"),
    ("tune", "127.0.0.1:{free}", TOKEN, "no Ray cluster reachable (nothing listens on"),
]


@pytest.mark.parametrize(("command", "address", "token", "line"), CASES)
def test_every_way_of_reaching_the_cluster_connects_or_ends_in_one_line(
    head, specs, command: str, address: str, token: str | None, line: str
) -> None:
    url, gcs, env = head
    from tests.fixtures.jobs import free_port

    where = address.format(url=url, dash=url.removeprefix("http://"), gcs=gcs, free=free_port())
    env = {k: v for k, v in env.items() if k not in AUTH}
    if token:
        env["RAY_AUTH_TOKEN"] = token
    if where == "auto":
        env["RAY_ADDRESS"] = gcs  # what `ray start` on this machine would have recorded
    spec = specs[0] if command == "submit" else specs[1]
    t0 = time.time()
    r = run_cli(command, str(spec), "--address", where, env=env, unset=AUTH[::2], timeout=120)
    took = time.time() - t0
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autopipe: error: ") and line in err[0], err
    # within 10 s of the command's own start-up (importing the stack takes a few seconds)
    assert took < 25, took


def test_failed_connections_leave_no_mlflow_run(specs) -> None:
    # every `tune --address` above ended before its job's MLflow run would have been created
    store = f"sqlite:///{specs[0].parent / 'mlflow.db'}"
    assert MlflowClient(store).get_experiment_by_name("reach") is None
