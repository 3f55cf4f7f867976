"""An embedded job on a machine where another Ray runs: early-stopped trials release their CPUs.

Ray Train's PlacementGroupCleaner finds its cluster by auto-detection; with a second Ray on the
machine it died ("Found multiple active Ray instances"), every early-stopped trial leaked its
placement group, and once they held all CPUs the next trial waited forever for its worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from autopipe import metrics as M
from tests.tune.helpers import run_cli, write_spec
from tests.tune.test_submit import ray_head  # noqa: F401  (a second Ray: `ray start --head`)

pytestmark = pytest.mark.slow


def test_early_stopped_trials_release_cpus_beside_another_ray(
    ray_head,  # noqa: F811
    tmp_path: Path,
) -> None:
    _, env = ray_head
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(
        tmp_path / "two.yaml",
        "two-rays",
        store,
        tmp_path / "ray",
        # more early-stopped trials than the embedded Ray has CPUs (2 in CI), one at a time
        budget={"max_trials": 4, "max_concurrent": 1, "early_stop_fraction": 0.5},
        search={"algorithm": "random", "seed": 0},
        resources={"cpus_per_worker": 1},
    )
    # a leaked placement group shows as a worker group that cannot start: fail in 60 s, not 300
    env = {**env, "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60"}
    r = run_cli("tune", str(spec), env=env, timeout=540)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the job's workers never lost track of their own cluster
    assert "Found multiple active Ray instances" not in r.stdout + r.stderr
    c = MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name("two-rays").experiment_id])
    trials = [x for x in runs if x.data.tags.get(M.TAG_ROLE) == "trial"]
    statuses = sorted(x.data.tags.get(M.TAG_STATUS) for x in trials)
    # every proposed trial ran to its early-stop point, and the shortlisted ones were resumed to
    # the end
    assert statuses.count(M.STATUS_EARLY_STOPPED) + statuses.count(M.STATUS_COMPLETED) == len(
        statuses
    )
    assert len(trials) >= 4 and M.STATUS_COMPLETED in statuses
