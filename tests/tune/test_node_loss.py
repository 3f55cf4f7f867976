"""A trial whose two Ray Train workers run on two nodes of a multi-node cluster survives the loss
of one of those nodes: Ray Train restarts the workers on the remaining capacity (from the trial's
last checkpoint, if it reported one) and the job finishes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import ray
from mlflow.tracking import MlflowClient
from ray.cluster_utils import Cluster

from autopipe import metrics as M
from autopipe.spec import load_spec
from autopipe.tune.job import run_job
from tests.fixtures.jobs import write_spec

pytestmark = pytest.mark.job(seconds=70)  # starts Ray (tests/conftest.py)


def _trial_reported(c: MlflowClient, name: str) -> bool:
    exp = c.get_experiment_by_name(name)
    if exp is None:
        return False
    return any(
        r.data.tags.get(M.TAG_ROLE) == "trial" and M.TRAIN_LOSS in r.data.metrics
        for r in c.search_runs([exp.experiment_id])
    )


def _worker_nodes() -> set[str]:
    """Nodes holding the bundles of the trial's Train worker group (2 bundles of 1 CPU)."""
    nodes: set[str] = set()
    for pg in ray.util.placement_group_table().values():
        bundles = pg.get("bundles", {})
        if pg.get("state") == "CREATED" and len(bundles) == 2:
            if all(b.get("CPU", 0) >= 1 for b in bundles.values()):
                nodes.update(pg.get("bundles_to_node_id", {}).values())
    return nodes


def test_trial_survives_losing_a_worker_node(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec_path = write_spec(
        tmp_path / "n.yaml",
        "nodeloss",
        store,
        tmp_path / "shared",  # every node of this local cluster sees it
        budget={"max_trials": 1, "max_concurrent": 1, "max_failures": 1},
        resources={"workers_per_trial": 2, "cpus_per_worker": 1},
        space={
            "sft": {"lr": 3.0e-3, "steps": 40, "batch_size": {"choices": [8, 16]}},
            "rl": {
                "algorithm": "grpo",
                "lr": 5.0e-5,
                "num_generations": 4,
                "batch_size": 8,
                "steps": 4,
            },
        },
    )
    c = MlflowClient(store)
    c.search_experiments()  # create the store's tables before the job and this test share it
    # Head (1 CPU: the job's driver and trial drivers, and one Train worker) + two 1-CPU nodes:
    # after losing one, 2 CPUs are left for the 2 workers of the retry.
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    removed: list[str] = []
    errors: list[BaseException] = []
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        done = threading.Event()

        def remove_a_worker_node() -> None:
            try:
                deadline = time.time() + 300
                while not _trial_reported(c, "nodeloss"):
                    if done.is_set() or time.time() > deadline:
                        return
                    time.sleep(1)
                busy = _worker_nodes()
                victim = next(n for n in workers if n.node_id in busy)
                cluster.remove_node(victim, allow_graceful=False)
                removed.append(victim.node_id)
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        watcher = threading.Thread(target=remove_a_worker_node, daemon=True)
        watcher.start()
        try:
            res = run_job(load_spec(spec_path), address=cluster.address, verbose=0)
        finally:
            done.set()
            watcher.join(timeout=60)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    assert not errors, errors
    assert removed, "the trial finished before a node could be removed"
    assert list(res.statuses.values()) == [M.STATUS_COMPLETED], res.statuses
    assert not res.interrupted
    trial = next(
        r for r in c.search_runs([res.experiment_id]) if r.data.tags.get(M.TAG_ROLE) == "trial"
    )
    assert trial.info.status == "FINISHED"
    assert c.get_metric_history(trial.info.run_id, M.OBJECTIVE)  # evaluated after the retry
