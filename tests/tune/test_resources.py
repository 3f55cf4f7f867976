"""Trials that need more than any node (or the whole cluster) has are rejected up front."""

from __future__ import annotations

import pytest
import ray

from autopipe.errors import ClusterError
from autopipe.spec import parse_spec
from autopipe.tune.cluster import check_resources

NODES = [
    {"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}},
    {"Alive": True, "Resources": {"CPU": 2.0}},
    {"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}},
]  # a dead node does not count


def _spec(storage: str | None = "/mnt/shared/autopipe", **resources: object):
    return parse_spec(
        {
            "name": "r",
            "dataset": {"task": "sort"},
            "storage": storage,
            "space": {"sft": {"lr": {"low": 1e-4, "high": 1e-3}}},
            "resources": resources,
        }
    )


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"cpus_per_worker": 8}, "no node of the cluster has that much (largest: 4 CPU, 1 GPU)"),
        ({"gpus_per_worker": 2}, "no node of the cluster has that much"),
        ({"workers_per_trial": 2, "gpus_per_worker": 1}, "the cluster has 6 CPU and 1 GPU in all"),
        ({"workers_per_trial": 4, "cpus_per_worker": 2}, "needs 4 workers x (2 CPU, 0 GPU)"),
    ],
)
def test_rejected_up_front(monkeypatch: pytest.MonkeyPatch, resources: dict, message: str) -> None:
    monkeypatch.setattr(ray, "nodes", lambda: NODES)
    with pytest.raises(ClusterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_resources(_spec(**resources))


def test_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "nodes", lambda: NODES)
    check_resources(_spec(workers_per_trial=3, cpus_per_worker=2))  # 2 + 2 on node 1, 2 on node 2


def test_multi_node_needs_shared_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray, "nodes", lambda: NODES)
    with pytest.raises(ClusterError, match="storage must name a path shared by every node"):
        check_resources(_spec(storage=None))
    monkeypatch.setattr(ray, "nodes", lambda: NODES[:1])
    check_resources(_spec(storage=None))  # one node: local storage is fine


def test_worker_group_start_timeout_is_long_and_user_overridable(monkeypatch) -> None:
    from autopipe.tune.cluster import worker_env

    monkeypatch.delenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", raising=False)
    # Train's 60 s default failed every attempt on a loaded 2-core machine; ours is 300 s
    # (infeasible requests are rejected by check_resources before any trial starts)
    assert worker_env(_spec())["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] == "300"
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "45")
    # the user's own setting reaches the workers
    assert worker_env(_spec())["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] == "45"
