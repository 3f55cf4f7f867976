"""A job whose trials all fail with the same error stops after its first three instead of
running its whole budget into the same wall, says so in one line and exits 1; the failed trials
are in MLflow with their reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopipe import metrics as M
from tests.fixtures.jobs import job_runs, run_cli, tiny_space, write_spec

pytestmark = pytest.mark.job(seconds=40)  # starts Ray (tests/conftest.py)


def test_the_same_error_three_times_stops_the_job(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lrs = [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 7e-3, 8e-3]
    spec = write_spec(
        tmp_path / "wall.yaml",
        "wall",
        store,
        tmp_path / "ray",
        budget={"max_trials": len(lrs), "max_concurrent": 2},
        space=tiny_space(sft={"lr": {"values": lrs}}),
    )
    # every configuration raises the same error in its worker (as a dataset no trial can read)
    r = run_cli("tune", str(spec), "--quiet", env={"AUTOPIPE_FAULT": "raise:rl.algorithm=grpo"})
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "stopped early: the first" in r.stdout
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("autopipe: error: no trial finished: the first "), last
    assert "trials all failed with the same error (RuntimeError: injected fault" in last
    _, trials = job_runs(store, "wall")
    failed = [t for t in trials if t.data.tags[M.TAG_STATUS] == M.STATUS_FAILED]
    assert 3 <= len(failed) <= 4 < len(lrs)  # stopped well before the budget
    assert all("injected fault" in t.data.tags[M.TAG_FAILURE] for t in failed)
    assert all(t.info.status != "RUNNING" for t in trials)
