"""`autopipe submit` against a real `ray start --head` on 127.0.0.1: the job runs on the cluster
through the Job Submission API, and the cluster is stopped by PID afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from autopipe import metrics as M
from tests.tune.helpers import free_port, run_cli, wait_http, write_spec


@pytest.fixture
def ray_head(tmp_path: Path):
    port, dash = free_port(), free_port()
    temp = tempfile.mkdtemp(
        prefix="rt", dir="/tmp"
    )  # short: Ray's unix socket paths have a length limit
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    cmd = [
        str(Path(bindir) / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dash),
        "--include-dashboard",
        "true",
        "--num-cpus",
        "2",
        # every other port free too: another Ray on this machine (a job, the corpus generation)
        # holds the defaults, and a head whose job agent cannot bind answers every submission
        # with 500 "No available agent to submit job"
        "--dashboard-agent-listen-port",
        str(free_port()),
        "--dashboard-agent-grpc-port",
        str(free_port()),
        "--runtime-env-agent-port",
        str(free_port()),
        "--metrics-export-port",
        str(free_port()),
        "--disable-usage-stats",
        "--temp-dir",
        temp,
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        wait_http(url + "/api/version", proc, "the Ray head (ray start --head)")
        yield url, env
    finally:
        # Stop the cluster by PID: `ray start --block` shuts its processes down on SIGTERM; then
        # make sure nothing of its process group is left.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def test_submit_runs_the_job_on_the_cluster(ray_head, tmp_path: Path) -> None:
    url, env = ray_head
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(
        tmp_path / "sub.yaml",
        "submitted",
        store,
        tmp_path / "ray",
        budget={"max_trials": 1, "max_concurrent": 1},
    )
    r = run_cli(
        "submit", str(spec), "--address", url, "--wait", "--timeout", "500", env=env, timeout=600
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "submitted job 'submitted' as Ray job" in r.stdout
    assert "SUCCEEDED" in r.stdout
    c = MlflowClient(store)
    runs = c.search_runs([c.get_experiment_by_name("submitted").experiment_id])
    trials = [x for x in runs if x.data.tags.get(M.TAG_ROLE) == "trial"]
    assert len(trials) == 1 and trials[0].data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED


def test_submit_unreachable_address_is_one_line(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", "x", f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "ray")
    r = run_cli("submit", str(spec), "--address", f"http://127.0.0.1:{free_port()}", timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().startswith("autopipe: error: --address") and "Traceback" not in r.stderr


def test_submit_unreachable_gcs_address_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray.job_submission
    from ray.exceptions import RpcError

    from autopipe.cli import main

    # HOST:PORT without a scheme is a GCS address to Ray, which gives up on an unreachable one
    # with RpcError after ~35 s (checked by hand on 127.0.0.1:1); here the client raises it at once
    def unreachable(address: str, *a: object, **kw: object) -> None:
        raise RpcError("Timed out while waiting for GCS to become available.")

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", unreachable)
    spec = write_spec(tmp_path / "s.yaml", "x", f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "ray")
    assert main(["submit", str(spec), "--address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "autopipe: error: --address '127.0.0.1:1': cannot reach the Ray Job API "
        "(Timed out while waiting for GCS to become available.)"
    )


@pytest.mark.parametrize("timeout", ["-5", "0", "nan"])
def test_submit_bad_timeout_is_one_line_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    from autopipe.cli import main

    spec = write_spec(tmp_path / "s.yaml", "x", f"sqlite:///{tmp_path / 'm.db'}", tmp_path / "ray")
    # the address is unreachable: the timeout is checked first, so its error is the one shown
    args = ["submit", str(spec), "--address", "http://127.0.0.1:1", "--wait", "--timeout", timeout]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autopipe: error: --timeout must be a number of seconds > 0"), err


def test_stage_uploads_the_jobs_history(tmp_path: Path) -> None:
    from autopipe.errors import ClusterError
    from autopipe.history.transfer import load_transfer
    from autopipe.spec import load_spec, parse_spec
    from autopipe.tune.submit import STAGED_SPEC, stage

    demo = Path(__file__).parents[2] / "jobs" / "demo.yaml"
    spec = load_spec(demo)
    staging = tmp_path / "staging"
    staging.mkdir()
    staged = load_spec(stage(spec, staging))
    # the run table is copied into the working dir and named relative to the staged spec
    assert staged.history.run_tables == ["history/0/tinypost"]
    assert (staging / "history/0/tinypost/runs.parquet").is_file()
    assert staging / STAGED_SPEC == staged.base_dir / STAGED_SPEC
    # what the cluster's driver does with it: fit the prior from the uploaded copy
    assert load_transfer(staged, staged.to_space()).prior is not None
    data = spec.dump()
    data["history"] = {"prior": "no/such/prior"}
    bad = parse_spec(data, base_dir=demo.parent)
    with pytest.raises(ClusterError, match=r"^history.prior '.*no/such/prior' is not a folder"):
        stage(bad, tmp_path)
