"""MLflow outages: the Tracker queues writes on the driver while the tracking server is
unreachable and flushes them, in order, when it answers again. Unit-tested here against a fake
client and a closed port; a real `mlflow server` stopped for at least 30 s mid-job is the
reference job's (tests/tune/test_reference_job.py)."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from autopipe.tracking import PENDING_PREFIX, Tracker
from tests.fixtures.jobs import (
    free_port,
)

OUTAGE_S = 30.0


# ---------------------------------------------------------------------------------- unit: buffer
class FakeClient:
    """Records writes; raises a server error (as MLflow's HTTP layer does) while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.calls: list[tuple[Any, ...]] = []
        self.n = 0

    def _gate(self) -> None:
        if self.down:
            raise MlflowException("API request failed with exception Connection refused")

    def create_run(self, experiment_id: str, tags: dict[str, str], run_name: str) -> Any:
        self._gate()
        self.n += 1
        rid = f"run{self.n}"
        self.calls.append(("create", rid, dict(tags)))

        class _Run:
            class info:  # noqa: N801
                run_id = rid

        return _Run()

    def log_batch(self, run_id: str, metrics=(), params=(), tags=()) -> None:  # noqa: ANN001
        self._gate()
        for m in metrics:
            self.calls.append(("metric", run_id, m.key, m.step, m.value))
        for p in params:
            self.calls.append(("param", run_id, p.key, p.value))
        for t in tags:
            self.calls.append(("tag", run_id, t.key, t.value))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._gate()
        self.calls.append(("text", run_id, artifact_file, text))

    def set_terminated(self, run_id: str, status: str) -> None:
        self._gate()
        self.calls.append(("end", run_id, status))


@pytest.fixture
def http_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Tracker sets MLflow's HTTP retry variables for http URIs; undo it after each test."""
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)


def fake_tracker() -> tuple[Tracker, FakeClient]:
    # An http URI builds its client without touching a store; the fake replaces it anyway.
    tr = Tracker("http://127.0.0.1:9", backoff_s=0.001, write_retries=1, flush_wait_s=1.0)
    fake = FakeClient()
    tr.client = fake  # type: ignore[assignment]
    return tr, fake


def test_writes_during_an_outage_are_queued_and_flushed_in_order(http_env: None) -> None:
    tr, fake = fake_tracker()
    parent = tr.start_run("0", "job", {"role": "job"})
    assert parent == "run1"  # the store answers: a real id straight away
    fake.down = True
    child = tr.start_run("0", "trial", {"role": "trial"}, parent_run_id=parent)
    assert child.startswith(PENDING_PREFIX)  # created lazily once the store is back
    tr.log_params(child, {"sft.lr": 0.003})
    for step in range(3):
        tr.log_metrics(child, {"objective": step / 10}, step)
    tr.set_tags(parent, {"best_run": child})
    tr.log_text(parent, f"mlflow_run_id: {child}\n", "best.yaml")
    tr.end_run(child, "FINISHED")
    assert len(tr.pending) == 8 and len(fake.calls) == 1  # nothing written while down
    fake.down = False
    time.sleep(0.6)  # past the flush back-off (at most 0.001 s * 2**8 here)
    tr.log_metrics(parent, {"n_trials": 1}, 0)  # the next write flushes the queue first
    assert not tr.pending and tr.resolve(child) == "run2"
    assert fake.calls[1:] == [
        ("create", "run2", {"role": "trial", "mlflow.parentRunId": "run1"}),
        ("param", "run2", "sft.lr", "0.003"),
        ("metric", "run2", "objective", 0, 0.0),
        ("metric", "run2", "objective", 1, 0.1),
        ("metric", "run2", "objective", 2, 0.2),
        ("tag", "run1", "best_run", "run2"),  # placeholders inside values are mapped too
        ("text", "run1", "best.yaml", "mlflow_run_id: run2\n"),
        ("end", "run2", "FINISHED"),
        ("metric", "run1", "n_trials", 0, 1.0),
    ]


def test_close_waits_for_the_store_and_reports_what_it_could_not_write(
    caplog: pytest.LogCaptureFixture, http_env: None
) -> None:
    tr, fake = fake_tracker()
    run = tr.start_run("0", "job", {})
    fake.down = True
    tr.log_metrics(run, {"x": 1.0}, 0)
    # Still down at the end of the job: close waits flush_wait_s, then says what was not written.
    t = time.time()
    tr.close_open("FINISHED")
    assert 0.9 <= time.time() - t < 10
    assert len(tr.pending) == 2  # the metric and the run's end
    assert "2 queued calls were not written" in caplog.text
    # Back up: the next flush writes both, in order.
    fake.down = False
    assert tr.flush() and fake.calls[-2:] == [
        ("metric", "run1", "x", 0, 1.0),
        ("end", "run1", "FINISHED"),
    ]


def test_a_refused_queued_write_is_dropped_not_blocking(http_env: None) -> None:
    tr, fake = fake_tracker()
    run = tr.start_run("0", "job", {})
    fake.down = True
    tr.log_metrics(run, {"x": 1.0}, 0)
    tr.log_metrics(run, {"x": 2.0}, 1)
    fake.down = False
    original = fake.log_batch
    refused = {"done": False}

    def refuse_once(*a: Any, **k: Any) -> None:
        if not refused["done"]:
            refused["done"] = True
            raise MlflowException("bad value", error_code=INVALID_PARAMETER_VALUE)
        original(*a, **k)

    fake.log_batch = refuse_once  # type: ignore[method-assign]
    assert tr.flush()
    assert tr.dropped == 1 and fake.calls[-1] == ("metric", "run1", "x", 1, 2.0)


def test_a_closed_port_queues_quickly_instead_of_hanging(http_env: None) -> None:
    # MLflow's own HTTP retries (minutes by default) are bounded inside the Tracker for http URIs.
    tr = Tracker(f"http://127.0.0.1:{free_port()}", backoff_s=0.05, write_retries=1)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    t = time.time()
    run = tr.start_run("0", "job", {})
    for step in range(20):
        tr.log_metrics(run, {"x": float(step)}, step)
    tr.end_run(run)
    assert time.time() - t < 15  # with MLflow's defaults the first call alone takes minutes
    assert run.startswith(PENDING_PREFIX) and len(tr.pending) == 22


def test_a_tracker_pickles_without_its_lock_and_queue(http_env: None) -> None:
    # Ray Tune pickles its callbacks, and the tracker with them, for experiment restore.
    from ray import cloudpickle

    tr = Tracker("http://127.0.0.1:9", backoff_s=0.001, write_retries=0)
    tr.log_metrics("some-run", {"x": 1.0}, 0)  # port 9 refuses: queued
    assert len(tr.pending) == 1
    copy = cloudpickle.loads(cloudpickle.dumps(tr))
    assert copy.uri == tr.uri and not copy.pending  # the queue stays with the driver
    with copy._lock:  # a fresh lock
        pass
