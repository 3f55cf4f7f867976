"""How `autopipe tune` starts or joins Ray, with `ray.init` recorded instead of run."""

from __future__ import annotations

import pytest
import ray

from autopipe.errors import ClusterError
from autopipe.spec import parse_spec
from autopipe.tune import cluster

SPEC = parse_spec({"name": "r", "dataset": {"task": "sort"}})


@pytest.fixture
def calls(monkeypatch):
    seen: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.append(kw))
    return seen


def test_embedded_ray_tells_workers_its_own_api_server(calls) -> None:
    assert cluster.init_ray(SPEC, None) is True
    (kw,) = calls
    env = kw["runtime_env"]["env_vars"]
    # a new local instance whose dashboard listens on the port the workers are told about, so
    # Train's placement-group cleaner never auto-detects another Ray on the same machine
    assert kw["address"] == "local" and kw["dashboard_host"] == "127.0.0.1"
    assert env["RAY_API_SERVER_ADDRESS"] == f"http://127.0.0.1:{kw['dashboard_port']}"


def test_a_taken_dashboard_port_is_retried_then_one_line(monkeypatch, calls) -> None:
    def taken(**kw):
        calls.append(kw)
        raise ValueError(f"Failed to bind to port {kw['dashboard_port']}: already occupied")

    monkeypatch.setattr(ray, "init", taken)
    with pytest.raises(
        ClusterError, match=r"^could not start the embedded Ray after 3 attempts \(Failed to bind"
    ):
        cluster.init_ray(SPEC, None)
    # three ports tried, each named to the workers as it was tried
    assert len(calls) == 3
    for kw in calls:
        port = kw["dashboard_port"]
        assert kw["runtime_env"]["env_vars"]["RAY_API_SERVER_ADDRESS"].endswith(f":{port}")


def test_a_slow_start_is_retried_and_anything_else_is_one_line(monkeypatch, calls) -> None:
    def slow_then_up(**kw):
        calls.append(kw)
        if len(calls) < 3:  # what Ray raises when a node takes over 30 s to register
            raise Exception(  # noqa: TRY002 - Ray's own bare Exception
                "The current node timed out during startup. This could happen because some of "
                "the raylet failed to startup or the GCS has become overloaded."
            )

    monkeypatch.setattr(ray, "init", slow_then_up)
    assert cluster.init_ray(SPEC, None) is True and len(calls) == 3

    def broken(**kw):
        calls.append(kw)
        raise OSError("No space left on device\nTraceback (most recent call last): ...")

    calls.clear()
    monkeypatch.setattr(ray, "init", broken)
    with pytest.raises(ClusterError) as e:
        cluster.init_ray(SPEC, None)
    assert str(e.value) == (
        "could not start the embedded Ray after 1 attempt (No space left on device)"
    )
    assert len(calls) == 1  # not a cause a retry fixes


def test_joining_a_cluster_leaves_its_api_server_alone(monkeypatch, calls) -> None:
    monkeypatch.setattr(cluster, "probe_gcs", lambda address: None)  # no GCS here
    cluster.init_ray(SPEC, "127.0.0.1:6379")
    (kw,) = calls
    # the cluster's own settings decide; nothing local is injected
    assert "RAY_API_SERVER_ADDRESS" not in kw["runtime_env"]["env_vars"]
    assert "dashboard_port" not in kw


def test_an_embedded_start_first_cleans_up_after_killed_drivers(monkeypatch, calls) -> None:
    cleaned: list[bool] = []
    monkeypatch.setattr(cluster, "clean_stale_sessions", lambda: cleaned.append(True) or 0)
    cluster.init_ray(SPEC, None)
    assert cleaned == [True] and len(calls) == 1  # before ray.init (tests/tune/test_stale_ray.py)


def test_a_cluster_of_another_ray_version_is_one_line(monkeypatch) -> None:
    import json

    import ray._raylet

    class OtherVersion:
        def __init__(self, address: str) -> None:
            self.address = address

        def internal_kv_get(self, key: bytes, namespace: bytes) -> bytes:
            return json.dumps({"ray_version": "2.59.0", "python_version": "3.11.7"}).encode()

    monkeypatch.setattr(ray._raylet, "GcsClient", OtherVersion)
    with pytest.raises(ClusterError) as e:
        cluster.probe_gcs("10.0.0.9:6379")
    assert str(e.value) == (
        f"--address 10.0.0.9:6379: version mismatch: the cluster runs Ray 2.59.0, this client "
        f"Ray {ray.__version__}; install ray==2.59.0 here (or run the job on the cluster with "
        "`autopipe submit`)"
    )


def test_auto_without_a_cluster_on_this_machine_is_one_line(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # no `ray start` recorded a cluster here
    with pytest.raises(ClusterError, match=r"^--address auto: no Ray cluster runs on this machine"):
        cluster.probe_gcs("auto")
