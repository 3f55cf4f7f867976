"""Ctrl-C (SIGINT) ends a job cleanly: the process exits, and no MLflow run is left RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from autopipe import metrics as M
from tests.fixtures.jobs import REPO, autopipe_cmd, write_spec

pytestmark = pytest.mark.job(seconds=40)  # starts Ray (tests/conftest.py)


def _running_trial(c: MlflowClient, name: str) -> bool:
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return False
    for r in c.search_runs([exp.experiment_id]):
        if r.data.tags.get(M.TAG_ROLE) == "trial" and c.get_metric_history(
            r.info.run_id, M.TRAIN_LOSS
        ):
            return True
    return False


def test_sigint_leaves_no_running_run(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(
        tmp_path / "int.yaml",
        "interrupt",
        store,
        tmp_path / "ray",
        budget={"max_trials": 3, "max_concurrent": 1},
        space={
            "sft": {"lr": 3.0e-3, "steps": 2000, "batch_size": {"choices": [8, 16, 32]}},
            "rl": None,
        },
    )
    c = MlflowClient(store)
    c.search_experiments()  # create the store's tables before the job and this test share it
    proc = subprocess.Popen(
        autopipe_cmd("tune", str(spec), "--quiet"),
        cwd=REPO,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 240
        while not _running_trial(c, "interrupt"):
            assert proc.poll() is None, proc.stdout.read()[-3000:] if proc.stdout else ""
            assert time.time() < deadline, "no trial started reporting in time"
            time.sleep(2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-3000:]
    runs = c.search_runs([c.get_experiment_by_name("interrupt").experiment_id])
    assert runs and all(r.info.status != "RUNNING" for r in runs), [
        (r.info.run_name, r.info.status) for r in runs
    ]
    trials = [r for r in runs if r.data.tags.get(M.TAG_ROLE) == "trial"]
    assert any(r.data.tags.get(M.TAG_STATUS) == M.STATUS_KILLED for r in trials)
    parent = next(r for r in runs if r.data.tags.get(M.TAG_ROLE) == "job")
    assert parent.info.status == "KILLED"
