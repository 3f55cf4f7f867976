"""A trial whose worker process dies mid-trial is retried (budget.max_failures) from its last
checkpoint, the SFT model at the SFT/RL boundary, instead of starting over; without retries it is
recorded as failed and the job goes on."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from autopipe import metrics as M
from tests.tune.helpers import run_cli, write_spec


def _trials(store: str, name: str) -> dict[str, object]:
    c = MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name(name).experiment_id])
    return {
        r.data.params["sft.batch_size"]: r for r in runs if r.data.tags.get(M.TAG_ROLE) == "trial"
    }


def test_lost_worker_is_retried_from_its_checkpoint(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(
        tmp_path / "r.yaml",
        "retry",
        store,
        tmp_path / "ray",
        budget={"max_trials": 2, "max_concurrent": 1, "max_failures": 1},
        space={
            "sft": {"lr": 3.0e-3, "steps": 24, "batch_size": {"choices": [8, 16]}},
            "rl": {
                "algorithm": "grpo",
                "lr": 5.0e-5,
                "beta": 0.02,
                "num_generations": 4,
                "batch_size": 8,
                "steps": 2,
            },
        },
    )
    r = run_cli("tune", str(spec), "--quiet", env={"AUTOPIPE_FAULT": "crash:sft.batch_size=16"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trials = _trials(store, "retry")
    crashed = trials["16"]
    assert crashed.data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED  # the retry finished the trial
    c = MlflowClient(store)
    sft = [m.step for m in c.get_metric_history(crashed.info.run_id, M.TRAIN_LOSS) if m.step <= 24]
    assert len(sft) == len(set(sft))  # SFT was not run a second time
    assert [
        m for m in c.get_metric_history(crashed.info.run_id, M.REWARD_MEAN)
    ]  # RL ran after the retry
    assert trials["8"].data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED


def test_lost_worker_without_retries_fails_the_trial_only(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(
        tmp_path / "r0.yaml",
        "noretry",
        store,
        tmp_path / "ray",
        budget={"max_trials": 2, "max_concurrent": 1, "max_failures": 0},
        space={
            "sft": {"lr": 3.0e-3, "steps": 12, "batch_size": {"choices": [8, 16]}},
            "rl": {
                "algorithm": "grpo",
                "lr": 5.0e-5,
                "num_generations": 4,
                "batch_size": 8,
                "steps": 1,
            },
        },
    )
    r = run_cli("tune", str(spec), "--quiet", env={"AUTOPIPE_FAULT": "crash:sft.batch_size=16"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trials = _trials(store, "noretry")
    assert trials["16"].data.tags[M.TAG_STATUS] == M.STATUS_FAILED
    assert trials["8"].data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED
