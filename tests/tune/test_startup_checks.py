"""What `autopipe tune` checks before Ray or MLflow start, and what `autopipe validate` checks
with it: files the spec names, the storage folder, the searcher, the Ray address. Each bad input
is one line and exit code 2, with no Ray started; a job whose every trial failed exits 1."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from autopipe import metrics as M
from autopipe import spec as spec_checks
from autopipe.cli import main
from autopipe.errors import ClusterError, SpaceError, SpecError
from autopipe.spec import load_spec
from autopipe.tune import cluster, job, summary
from tests.fixtures.jobs import free_port, run_cli, write_spec

BASE = {
    "name": "s",
    "dataset": {"task": "sort"},
    "space": {"sft": {"lr": {"low": 1.0e-4, "high": 1.0e-3}, "steps": 20}},
}


def _write(d: Path, **sections: object) -> Path:
    doc = {**BASE, **sections}
    p = d / "job.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def _cases(d: Path) -> list[tuple[dict, str]]:
    """(spec sections, the exact one-line message) of inputs tune used to reject only after
    Ray started (or not at all); paths resolve against the spec's folder ``d``."""
    (d / "a_dir").mkdir(exist_ok=True)
    (d / "a_file").write_text("x")
    return [
        ({"dataset": {"path": "nope.jsonl"}}, f"dataset.path '{d}/nope.jsonl' does not exist"),
        (
            {"dataset": {"path": "a_dir"}},
            f"dataset.path '{d}/a_dir' must be a file (JSONL, parquet or PubMedQA JSON), but it "
            "is a directory",
        ),
        (
            {"model": {"name": "path", "path": "no/model"}},
            f"model.path '{d}/no/model' does not exist",
        ),
        (
            {"history": {"run_tables": ["no/table"]}},
            f"history.run_tables[0] '{d}/no/table' does not exist",
        ),
        ({"history": {"prior": "no/prior"}}, f"history.prior '{d}/no/prior' does not exist"),
        (
            {"history": {"predictor": "a_file"}},
            f"history.predictor '{d}/a_file' must be a folder, but it is a file",
        ),
        # a folder that is not what the key names (an empty one, a mistyped level)
        (
            {"history": {"run_tables": ["a_dir"]}},
            f"history.run_tables[0] '{d}/a_dir' must be a run table (autopipe history export), "
            "but it has no runs.parquet",
        ),
        (
            {"history": {"prior": "a_dir"}},
            f"history.prior '{d}/a_dir' must be a fitted prior (autopipe prior fit), but it has "
            "no prior.json",
        ),
        (
            {"storage": "a_file"},
            f"storage '{d}/a_file' must be a folder (or a URI such as s3://...), but it is a file",
        ),
        (
            {"storage": "a_file/ray"},
            f"storage '{d}/a_file/ray' cannot be created: '{d}/a_file' is a file",
        ),
        (
            {"search": {"algorithm": "random", "options": {"warm": 1}}},
            "search.options of 'random' must be among ['candidates'], but got unknown ['warm']",
        ),
        (
            {"search": {"algorithm": "autopipe", "options": {"betta": 1}}},
            "search.options of 'autopipe' must be among",
        ),
        (
            {"search": {"algorithm": "grid"}},
            "search.algorithm 'grid' needs a finite space (values/choices only), but the space "
            "has a continuous range",
        ),
        (
            {"search": {"algorithm": "design"}},
            "search.options.configs must be a non-empty list of configurations for "
            "search.algorithm 'design', but got None",
        ),
    ]


N_CASES = 14


def test_history_key_files_are_the_loaders() -> None:
    # spec.py names the files without importing the loaders; they must agree
    from autopipe.history.runtable import RUNS_FILE
    from autopipe.predictor.early import SIDECAR as PREDICTOR_SIDECAR
    from autopipe.prior.ranker import SIDECAR as PRIOR_SIDECAR
    from autopipe.spec import HISTORY_KEY_FILES

    assert HISTORY_KEY_FILES == {
        "history.run_tables": RUNS_FILE,
        "history.prior": PRIOR_SIDECAR,
        "history.predictor": PREDICTOR_SIDECAR,
    }


@pytest.mark.parametrize("i", range(N_CASES))
def test_validate_rejects_what_tune_rejects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], i: int
) -> None:
    d = tmp_path.resolve()
    sections, expected = _cases(d)[i]
    p = _write(d, **sections)
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert err.startswith(f"autopipe: error: {expected}"), err


def test_tune_rejects_them_before_ray_and_mlflow(tmp_path: Path) -> None:
    """The same specs under `autopipe tune`: exit 2 and the same line, Ray never imported, no
    MLflow store created."""
    d = tmp_path.resolve()
    assert len(_cases(d)) == N_CASES
    specs = []
    for i in range(N_CASES):
        sub = d / f"c{i}"
        sub.mkdir()
        sections, expected = _cases(sub)[i]
        p = _write(sub, **sections, tracking={"uri": f"sqlite:///{sub / 'mlflow.db'}"})
        specs.append((str(p), expected))
    code = (
        "import io, sys, json, contextlib\nfrom autopipe.cli import main\nout = []\n"
        "for p in json.loads(sys.argv[1]):\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stderr(buf):\n"
        "        rc = main(['tune', p])\n"
        "    out.append([rc, buf.getvalue()])\n"
        "assert 'ray' not in sys.modules, 'Ray was imported'\n"
        "print(json.dumps(out))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, json.dumps([p for p, _ in specs])],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    for (p, expected), (rc, err) in zip(specs, results, strict=True):
        assert rc == 2, (p, err)
        assert err.count("\n") == 1 and err.startswith(f"autopipe: error: {expected}"), err
        assert not (Path(p).parent / "mlflow.db").exists()


def test_a_good_spec_still_validates_without_side_effects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = "".join(f'{{"prompt": "{i}+1=", "answer": "{i + 1}"}}\n' for i in range(300))
    (tmp_path / "data.jsonl").write_text(rows)
    p = _write(
        tmp_path,
        dataset={"path": "data.jsonl", "n_train": 100, "n_rl": 20, "n_eval": 50},
        storage="not/yet/ray",
        search={"algorithm": "random", "options": {"candidates": [{"sft.lr": 1e-4}]}},
        space={"sft": {"lr": {"values": [1e-4, 1e-3]}, "steps": 20}, "rl": None},
    )
    assert main(["validate", str(p)]) == 0, capsys.readouterr().err
    assert not (tmp_path / "not").exists()  # validate creates no storage folder


def test_cluster_jobs_leave_model_and_storage_paths_to_the_nodes(tmp_path: Path) -> None:
    from autopipe.spec import check_paths

    (tmp_path / "a_file").write_text("x")
    p = _write(
        tmp_path, model={"name": "path", "path": "/models/only-on-workers"}, storage="a_file"
    )
    spec = load_spec(p)
    # embedded Ray: both are this machine's paths
    with pytest.raises(SpecError, match=r"^model.path '/models/only-on-workers' does not exist"):
        check_paths(spec)
    # --address (Ray Client, a submitted job): the cluster's nodes read them, not this driver
    check_paths(spec, local=False)
    spec_checks.preflight(spec, address="ray://head:10001")


def test_a_path_the_os_cannot_look_up_is_one_line(tmp_path: Path) -> None:
    p = _write(tmp_path, dataset={"path": "x" * 300 + ".jsonl"})
    # ENAMETOOLONG from the OS, not a traceback
    with pytest.raises(SpecError, match=r"^a path the spec names cannot be looked up: File name"):
        spec_checks.preflight(load_spec(p))


def test_search_checks_run_before_ray_starts(tmp_path: Path, monkeypatch) -> None:
    """run_job itself: a bad searcher is an error before init_ray and before any MLflow run."""

    def no_ray(*a, **k):
        raise AssertionError("init_ray was called")

    monkeypatch.setattr(job, "init_ray", no_ray)
    store = tmp_path / "mlflow.db"
    p = _write(tmp_path, search={"algorithm": "grid"}, tracking={"uri": f"sqlite:///{store}"})
    with pytest.raises(SpaceError, match=r"^search.algorithm .grid. needs a finite space"):
        job.run_job(load_spec(p))
    assert not store.exists()


# ----------------------------------------------------------------------------------- --address
def test_unreachable_address_fails_fast_in_one_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    p = _write(tmp_path, tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    code = (
        "import sys\nfrom autopipe.cli import main\n"
        "rc = main(['tune', sys.argv[1], '--address', sys.argv[2]])\n"
        "assert 'ray' not in sys.modules, 'Ray was imported'\nsys.exit(rc)\n"
    )
    t0 = time.time()
    r = subprocess.run(
        [sys.executable, "-c", code, str(p), f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip() == (
        f"autopipe: error: --address 127.0.0.1:{port}: no Ray cluster reachable "
        f"(nothing listens on 127.0.0.1:{port})"
    )
    assert time.time() - t0 < 60
    assert not (tmp_path / "mlflow.db").exists()


def test_address_forms_and_kinds_before_any_probe(monkeypatch) -> None:
    import socket

    probed: list[tuple] = []

    def no_connect(addr, *a, **k):
        probed.append(addr)
        raise ConnectionRefusedError

    monkeypatch.setattr(socket, "create_connection", no_connect)
    for addr in (None, "", "local", "auto"):
        cluster.check_address(addr)  # embedded, or looked up once Ray can
    assert probed == []
    with pytest.raises(ClusterError, match=r"^--address http://h:8265: that is the Ray dashboard"):
        cluster.check_address("http://h:8265")  # submit's kind of address, named as such
    with pytest.raises(ClusterError, match=r"^--address 'ftp://h:1': the scheme must be ray://"):
        cluster.check_address("ftp://h:1")
    with pytest.raises(
        ClusterError,
        match=re.escape("--address 127.0.0.1:abc: the port must be a number in 1..65535"),
    ):
        cluster.check_address("127.0.0.1:abc")
    assert probed == []
    with pytest.raises(ClusterError, match=r"nothing listens on 127\.0\.0\.1:10001\)$"):
        cluster.check_address("ray://127.0.0.1:10001")  # a Ray Client address is probed too
    assert probed == [("127.0.0.1", 10001)]


def test_http_servers_are_told_from_grpc_ones() -> None:
    import http.server
    import socket
    import threading

    from autopipe.tune import address as A

    srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=srv.handle_request, daemon=True).start()
    assert A.speaks_http("127.0.0.1", srv.server_address[1])  # answers 501: HTTP all the same
    srv.server_close()
    with socket.socket() as grpc_like:  # accepts, then closes without an HTTP status line
        grpc_like.bind(("127.0.0.1", 0))
        grpc_like.listen(1)

        def hang_up() -> None:
            conn, _ = grpc_like.accept()
            conn.recv(64)
            conn.close()

        threading.Thread(target=hang_up, daemon=True).start()
        assert not A.speaks_http("127.0.0.1", grpc_like.getsockname()[1])


def test_address_probe_timeout_is_one_line(monkeypatch) -> None:
    import socket

    def slow(*a, **k):
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", slow)
    with pytest.raises(
        ClusterError,
        match=r"^--address 10.0.0.9:6379: no Ray cluster reachable \(no answer in 5 s\)$",
    ):
        cluster.check_address("10.0.0.9:6379")


def test_reachable_address_passes(monkeypatch) -> None:
    import socket

    from autopipe.tune import address as A

    monkeypatch.setattr(A, "speaks_http", lambda host, port: False)  # a GCS speaks gRPC
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        cluster.check_address(f"127.0.0.1:{srv.getsockname()[1]}")


# ------------------------------------------------------------------------- no trial finished
def _result(
    statuses: dict[str, str], best: dict | None, interrupted: bool = False
) -> summary.JobResult:
    return summary.JobResult(
        "s",
        "1",
        "abc123",
        "sqlite:///m.db",
        best,
        None if best is None else 0.5,
        None if best is None else "a",
        statuses=statuses,
        interrupted=interrupted,
        experiment_path="/tmp/ray/s-1",
    )


FAILED, DONE, EARLY = M.STATUS_FAILED, M.STATUS_COMPLETED, M.STATUS_EARLY_STOPPED
SEE = (
    "see the autopipe.failure tag of each trial run under MLflow run abc123 (sqlite:///m.db) "
    "and the trials' error.txt in the Ray results folder /tmp/ray/s-1"
)


@pytest.mark.parametrize(
    ("statuses", "best", "interrupted", "rc", "what"),
    [
        ({"a": FAILED, "b": FAILED}, None, False, 1, "all 2 trials failed"),
        ({}, None, False, 1, "no trial ran"),
        ({"a": FAILED, "b": DONE}, {"x": 1}, False, 0, None),
        # early-stopped trials, and the promoted full run of the best of them failed: no result
        (
            {"a": EARLY, "b": EARLY, "c": FAILED},
            None,
            False,
            1,
            "none at full fidelity with a score (early-stopped 2, failed 1)",
        ),
        ({"a": EARLY, "b": DONE}, {"x": 1}, False, 0, None),
        ({"a": FAILED, "b": M.STATUS_KILLED}, None, True, 130, None),
    ],
)
def test_a_job_without_a_result_exits_1(
    tmp_path: Path,
    monkeypatch,
    capsys: pytest.CaptureFixture[str],
    statuses: dict[str, str],
    best: dict | None,
    interrupted: bool,
    rc: int,
    what: str | None,
) -> None:
    monkeypatch.setattr(job, "run_job", lambda *a, **k: _result(statuses, best, interrupted))
    p = _write(tmp_path)
    assert main(["tune", str(p), "--quiet"]) == rc
    err = capsys.readouterr().err.strip()
    if what is None:
        assert "no trial finished" not in err
        return
    assert err == f"autopipe: error: no trial finished: {what}; {SEE}"


@pytest.mark.parametrize("state", ["none", "finished"])
def test_resume_with_nothing_to_resume_is_one_line(tmp_path: Path, state: str) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(tmp_path / "n.yaml", "nothing", store, tmp_path / "ray")
    MlflowClient(store).search_experiments()  # create the tables: no MLflow log lines below
    if state == "finished":
        from autopipe.tracking import Tracker

        t = Tracker(store)
        run = t.start_run(
            t.experiment_id("nothing"), "x", {M.TAG_ROLE: "job", M.TAG_JOB: "nothing"}
        )
        t.set_tags(run, {M.TAG_TUNE_PATH: str(tmp_path / "ray" / "x")})
        t.end_run(run, "FINISHED")
    r = run_cli("tune", str(spec), "--quiet", "--resume", timeout=120)
    assert r.returncode == 2
    if state == "none":  # nothing to resume: nothing created either
        assert MlflowClient(store).get_experiment_by_name("nothing") is None
    assert r.stderr.strip().splitlines() == [
        f"autopipe: error: --resume: job 'nothing' has no unfinished run with a restorable Ray "
        f"Tune experiment in the tracking store at {store}"
    ]
