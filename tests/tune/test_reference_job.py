"""The reference job: one real `autopipe tune` (embedded Ray, Ray Tune trials that are Ray Train
runs of TRL trainers) against a real `mlflow server` on 127.0.0.1, whose five configurations meet
every failure a job must survive at once, and whose tracking server is down for at least 30 s
mid-job. The tests below read its console and its MLflow record; each names what it shows.

- ``sft.lr`` 0.001: the trial raises in its worker -> failed, the job goes on
- 0.002: its train loss turns NaN -> failed by the divergence check
- 0.003: its worker process dies mid-RL -> retried from its SFT checkpoint (budget.max_failures
  1) -> completed, SFT not run twice
- 0.004: its worker dies on every attempt -> failed once the retry is spent, the job goes on
- 0.005: a plain trial -> completed

The MLflow server runs MLflow's basic-auth app (as cluster/mlflow.yaml deploys it): the job
logs with the credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, and a job
without them, or with wrong ones, ends in one line before anything starts. The server is
SIGKILLed at the first trial report and restarted on the same port and store at least 30 s
later, once Ray Tune has recorded a result since: nothing reported may be missing from MLflow
afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from autopipe import metrics as M
from autopipe.cli import main
from tests.fixtures.jobs import (
    free_port,
    job_runs,
    run_cli,
    start_mlflow_server,
    stop_mlflow_server,
    tiny_space,
    write_spec,
)

pytestmark = pytest.mark.job(seconds=110)  # starts Ray (tests/conftest.py)

NAME = "reference"
RAISE, NAN, CRASH, CRASH_ALWAYS, OK = 0.001, 0.002, 0.003, 0.004, 0.005
FAULTS = (
    f"raise:sft.lr={RAISE};nan:sft.lr={NAN};crash:sft.lr={CRASH};crash-always:sft.lr={CRASH_ALWAYS}"
)
SFT_STEPS = 24
OUTAGE_S = 30.0
MAX_OUTAGE_S = 240.0
ADMIN = ("autopipe-admin", "not-a-real-password-1")
CREDENTIALS = {"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]}


def reported_rows(storage: Path) -> int:
    """How many results Ray Tune has written so far (its result.json files, written live)."""
    n = 0
    for f in storage.rglob("result.json"):
        try:
            n += f.read_bytes().count(b"\n")
        except OSError:  # a trial directory moved or not yet flushed: counted on the next poll
            pass
    return n


class Outage(threading.Thread):
    """Stops the server once the first trial has reported, restarts it after OUTAGE_S, or later,
    once Tune has recorded a result since the stop (a trial's start and its first report can be a
    minute apart on 2 loaded cores: a fixed window could miss every report)."""

    def __init__(self, port: int, d: Path, proc: subprocess.Popen, storage: Path) -> None:
        super().__init__(daemon=True)
        self.port, self.d, self.proc, self.storage = port, d, proc, storage
        self.down_at = self.up_at = 0.0
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while reported_rows(self.storage) == 0:
                if self.stop.wait(0.5):
                    return
            stop_mlflow_server(self.proc, signal.SIGKILL)  # no clean shutdown
            self.down_at = time.time()
            time.sleep(1.0)
            before = reported_rows(self.storage)  # what the tracker may have logged before the stop
            while time.time() < self.down_at + MAX_OUTAGE_S and not self.stop.is_set():
                if time.time() >= self.down_at + OUTAGE_S and reported_rows(self.storage) > before:
                    break
                time.sleep(0.5)
            time.sleep(2.0)  # the tracker logs a result in the same callback round as Tune
            self.proc = start_mlflow_server(self.port, self.d, ADMIN)
            self.up_at = time.time()
        except BaseException as e:  # reported by the test
            self.error = e


class Reference:
    """What the reference job left: its console, the outage's window, the MLflow record."""

    def __init__(self, d: Path, uri: str, r: subprocess.CompletedProcess, outage: Outage) -> None:
        self.d, self.uri, self.r, self.outage = d, uri, r, outage
        self.client = MlflowClient(uri)
        self.parents, self.trials = job_runs(uri, NAME)
        self.by_lr = {float(t.data.params["sft.lr"]): t for t in self.trials}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("reference")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    proc = start_mlflow_server(port, d, ADMIN)
    mp = pytest.MonkeyPatch()  # this module's readers use the credentials too
    for k, v in CREDENTIALS.items():
        mp.setenv(k, v)
    outage = Outage(port, d, proc, d / "ray")
    configs = [
        {"sft.lr": RAISE, "sft.batch_size": 8},
        {"sft.lr": NAN, "sft.batch_size": 16},
        {"sft.lr": CRASH, "sft.batch_size": 16},
        {"sft.lr": CRASH_ALWAYS, "sft.batch_size": 8},
        {"sft.lr": OK, "sft.batch_size": 32},
    ]
    spec = write_spec(
        d / "reference.yaml",
        NAME,
        uri,
        d / "ray",
        budget={"max_trials": len(configs), "max_concurrent": 2, "max_failures": 1},
        space=tiny_space(SFT_STEPS, sft={"lr": {"values": [RAISE, NAN, CRASH, CRASH_ALWAYS, OK]}}),
        search={"algorithm": "design", "options": {"configs": configs}},
    )
    try:
        outage.start()
        no_credentials = run_cli("tune", str(spec), "--quiet", unset=tuple(CREDENTIALS))
        wrong = run_cli(
            "tune", str(spec), "--quiet", env={**CREDENTIALS, "MLFLOW_TRACKING_PASSWORD": "x"}
        )
        r = run_cli(
            "tune", str(spec), "--quiet", env={"AUTOPIPE_FAULT": FAULTS, **CREDENTIALS}, timeout=900
        )
        outage.stop.set()
        outage.join(timeout=MAX_OUTAGE_S + 150)
        assert outage.error is None, repr(outage.error)
        ref = Reference(d, uri, r, outage)
        ref.refused = (no_credentials, wrong)
        yield ref
    finally:
        outage.stop.set()
        outage.join(timeout=MAX_OUTAGE_S + 150)
        stop_mlflow_server(outage.proc, signal.SIGKILL)
        mp.undo()


def test_the_job_survives_its_failed_trials(reference: Reference) -> None:
    r = reference.r
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # three trials failed (raised, NaN loss, a worker that kept dying), two completed
    assert "5 trials" in r.stdout and "completed 2" in r.stdout and "failed 3" in r.stdout


def test_mlflow_has_every_trial_with_curves_and_status(reference: Reference) -> None:
    parents, trials, c = reference.parents, reference.trials, reference.client
    assert len(parents) == 1 and len(trials) == 5
    assert parents[0].info.status == "FINISHED"
    assert all(t.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for t in trials)
    assert all(t.info.status != "RUNNING" for t in trials)  # nothing left open
    by_lr = reference.by_lr
    assert by_lr[RAISE].data.tags[M.TAG_STATUS] == M.STATUS_FAILED
    assert "injected fault" in by_lr[RAISE].data.tags[M.TAG_FAILURE]
    assert by_lr[NAN].data.tags[M.TAG_STATUS] == M.STATUS_FAILED
    assert "non-finite train loss" in by_lr[NAN].data.tags[M.TAG_FAILURE]
    ok = by_lr[OK]
    assert ok.data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED
    assert float(ok.data.tags[M.TAG_FIDELITY]) == 1.0
    assert ok.data.tags[M.TAG_DATASET].startswith("sort-")
    assert any(k.startswith(M.TAG_META_PREFIX) for k in ok.data.tags)  # dataset meta-features
    assert ok.data.params["sft.batch_size"] == "32" and ok.data.params["rl.algorithm"] == "grpo"
    curve = c.get_metric_history(ok.info.run_id, M.TRAIN_LOSS)
    assert len(curve) >= 3 and len({m.step for m in curve}) == len(curve)  # a step series
    assert c.get_metric_history(ok.info.run_id, M.REWARD_MEAN)
    assert ok.data.metrics[M.COST_S] > 0 and 0 <= ok.data.metrics[M.OBJECTIVE] <= 1
    best = yaml.safe_load(
        Path(c.download_artifacts(parents[0].info.run_id, M.ARTIFACT_BEST)).read_text()
    )
    completed = {t.info.run_id for t in trials if t.data.tags[M.TAG_STATUS] == "completed"}
    assert best["mlflow_run_id"] in completed


def test_a_lost_worker_is_retried_from_its_checkpoint(reference: Reference) -> None:
    crashed, c = reference.by_lr[CRASH], reference.client
    assert crashed.data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED  # the retry finished the trial
    sft = [m.step for m in c.get_metric_history(crashed.info.run_id, M.TRAIN_LOSS)]
    sft = [s for s in sft if s <= SFT_STEPS]
    assert sft and len(sft) == len(set(sft))  # SFT was not run a second time
    assert c.get_metric_history(crashed.info.run_id, M.REWARD_MEAN)  # RL ran after the retry


def test_a_worker_that_keeps_dying_fails_its_trial_only(reference: Reference) -> None:
    dead = reference.by_lr[CRASH_ALWAYS]
    assert dead.data.tags[M.TAG_STATUS] == M.STATUS_FAILED  # budget.max_failures spent
    assert dead.info.status == "FAILED"
    assert reference.by_lr[OK].data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED


def test_best_reads_the_winner_from_the_server(
    reference: Reference, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["best", "--job", NAME, "--tracking-uri", reference.uri]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    winners = [t for t in reference.trials if t.data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED]
    assert cfg["sft.lr"] in {float(t.data.params["sft.lr"]) for t in winners}
    assert cfg["rl.algorithm"] == "grpo" and cfg["sft.steps"] == SFT_STEPS  # constants too
    assert main(["best", "--job", NAME, "--tracking-uri", reference.uri, "--full"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["status"] == M.STATUS_COMPLETED and 0.0 <= doc["value"] <= 1.0
    assert main(["best", "--job", "no-such-job", "--tracking-uri", reference.uri]) == 2


def test_a_30s_server_outage_mid_job_loses_nothing(reference: Reference) -> None:
    outage, c = reference.outage, reference.client
    assert outage.down_at > 0 and outage.up_at > 0, "the outage did not happen mid-job"
    assert reference.parents[0].data.metrics["n_trials"] == 5
    # What each trial reported, from Ray Tune's own record of its results.
    reported: dict[str, list[dict[str, Any]]] = {}
    for f in (reference.d / "ray").rglob("result.json"):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if rows:
            reported.setdefault(rows[0]["trial_id"], []).extend(rows)
    assert len(reported) >= 4  # every trial but the one that raised before its first report
    during = 0
    for t in reference.trials:
        assert RunStatus.from_string(t.info.status) != RunStatus.RUNNING
        assert t.data.tags[M.TAG_STATUS] in (M.STATUS_COMPLETED, M.STATUS_FAILED)
        assert "sft.batch_size" in t.data.params and t.data.params["rl.algorithm"] == "grpo"
        rows = reported.get(t.data.tags[M.TAG_TRIAL_ID])
        if rows is None:
            assert t.data.tags[M.TAG_FAILURE], t.data.tags  # raised before its first report
            continue
        for name in (M.FRACTION, M.OBJECTIVE):
            want = {
                int(row.get(M.GLOBAL_STEP, row["training_iteration"]))
                for row in rows
                if isinstance(row.get(name), (int, float)) and row[name] == row[name]
            }
            got = c.get_metric_history(t.info.run_id, name)
            # Every reported step is in MLflow (a step may be logged twice if a write was cut
            # mid-request and retried; never less).
            assert {m.step for m in got} == want, (t.data.tags[M.TAG_TRIAL_ID], name)
            during += sum(outage.down_at <= m.timestamp / 1000 <= outage.up_at for m in got)
    assert during > 0, "no metric was reported during the outage: nothing was buffered"


def test_a_server_behind_authentication_refuses_a_job_without_its_credentials(
    reference: Reference,
) -> None:
    no_credentials, wrong = reference.refused
    uri = reference.uri
    for r, line in (
        (no_credentials, f"tracking.uri {uri!r} requires credentials (HTTP 401): set "),
        (wrong, f"tracking.uri {uri!r} refused the credentials (HTTP 401): check "),
    ):
        assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"autopipe: error: {line}"), err
    # the job with the credentials logged everything (the tests above), and only that one ran
    assert len(reference.parents) == 1
