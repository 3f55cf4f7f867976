"""Tracking against a real `mlflow server` on 127.0.0.1 (stopped by PID): a job with two Ray
Train workers per trial logs to it and `autopipe best` reads the winner back from it; an
unreachable server fails the job fast with one line."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from autopipe import metrics as M
from tests.tune.helpers import (
    free_port,
    run_cli,
    start_mlflow_server,
    stop_mlflow_server,
    write_spec,
)


@pytest.fixture
def mlflow_server(tmp_path: Path):
    port = free_port()
    proc = start_mlflow_server(port, tmp_path)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_mlflow_server(proc)  # the server and its workers, by PID


def test_job_and_best_against_a_tracking_server(mlflow_server: str, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "srv.yaml",
        "served",
        mlflow_server,
        tmp_path / "ray",
        budget={"max_trials": 1, "max_concurrent": 1},
        resources={"workers_per_trial": 2, "cpus_per_worker": 1},
    )
    r = run_cli("tune", str(spec), "--quiet")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "completed 1" in r.stdout
    b = run_cli("best", "--job", "served", "--tracking-uri", mlflow_server, "--full")
    assert b.returncode == 0, b.stderr
    doc = yaml.safe_load(b.stdout)
    assert doc["status"] == M.STATUS_COMPLETED and 0.0 <= doc["value"] <= 1.0
    assert doc["config"]["sft.batch_size"] in (8, 16, 32)


def test_unreachable_server_fails_fast(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "down.yaml", "down", f"http://127.0.0.1:{free_port()}", tmp_path / "ray"
    )
    t = time.time()
    r = run_cli(
        "tune",
        str(spec),
        "--quiet",
        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"},
    )
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert (
        r.stderr.strip().startswith("autopipe: error: tracking.uri") and "Traceback" not in r.stderr
    )
    assert time.time() - t < 60
