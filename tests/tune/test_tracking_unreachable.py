"""A tracking server that cannot be reached fails the job fast with one line, before Ray starts
(a job against a real `mlflow server` is the reference job, tests/tune/test_reference_job.py)."""

from __future__ import annotations

import time
from pathlib import Path

from tests.fixtures.jobs import (
    free_port,
    run_cli,
    write_spec,
)


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
