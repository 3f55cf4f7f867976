"""A tracking URI that names no usable MLflow store is a one-line error naming the URI, from the
job tracker, the history reader and the CLI alike (not an MLflow or SQLAlchemy traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autopipe.errors import TrackingError
from autopipe.history.mlflow_reader import read_mlflow_experiment
from autopipe.tracking import Tracker, open_client
from tests.fixtures.jobs import run_cli


def test_unknown_scheme_and_non_database_file(tmp_path: Path) -> None:
    # an unknown scheme: MLflow's registry lookup error becomes one line naming the URI
    with pytest.raises(TrackingError, match=r"^tracking URI 'bogus://x': cannot open the MLflow"):
        open_client("bogus://x")
    garbage = tmp_path / "g.db"
    garbage.write_text("not a database\n")
    uri = f"sqlite:///{garbage}"
    # a file that is not SQLite: SQLAlchemy's DatabaseError, reworded, with what was expected
    with pytest.raises(TrackingError, match=r"file is not a database.*expected sqlite:///PATH"):
        Tracker(uri)
    # the history reader says which source it was reading
    with pytest.raises(TrackingError, match=r"^mlflow:job: tracking URI 'sqlite:///"):
        read_mlflow_experiment("job", tracking_uri=uri)


def test_plain_path_is_named(tmp_path: Path) -> None:
    # MLflow 3's folder store is deprecated: a folder path says what to write instead
    with pytest.raises(TrackingError, match=r"^tracking URI '.*' is a plain path; expected sqlite"):
        open_client(str(tmp_path / "mlruns"))


def test_readers_do_not_create_a_store(tmp_path: Path) -> None:
    db = tmp_path / "nowhere.db"
    # reading history from a store that does not exist says so, and leaves no empty database
    with pytest.raises(TrackingError, match=r"^mlflow:job: tracking URI .*: no MLflow store at "):
        read_mlflow_experiment("job", tracking_uri=f"sqlite:///{db}")
    assert not db.exists()
    from autopipe.cli import main

    # so does `autopipe best` (exit 2, one line from the CLI's error handler)
    assert main(["best", "--job", "demo", "--tracking-uri", f"sqlite:///{db}"]) == 2
    assert not db.exists()


def test_deleted_experiment_is_named_with_what_to_do(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    t = Tracker(uri)
    eid = t.experiment_id("job")
    t.client.delete_experiment(eid)
    # MLflow still finds it by name but refuses new runs in it: say so before the job starts
    with pytest.raises(
        TrackingError,
        match=rf"^MLflow experiment 'job' at .* is deleted \(id {eid}\); restore it .*"
        "or set tracking.experiment to another name$",
    ):
        t.experiment_id("job")
    assert t.experiment_id("job", create=False) == eid  # readers may still read it
    t.client.restore_experiment(eid)
    assert t.experiment_id("job") == eid


def test_cli_prints_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "g.db"
    garbage.write_text("not a database\n")
    r = run_cli("best", "--job", "demo", "--tracking-uri", f"sqlite:///{garbage}", timeout=120)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    # one line, no traceback, naming the URI
    assert len(err) == 1 and err[0].startswith("autopipe: error: tracking URI 'sqlite:///"), err


def test_history_reader_over_http(tmp_path: Path) -> None:
    from tests.fixtures.jobs import free_port, start_mlflow_server, stop_mlflow_server

    # nothing listening: the reader's probe fails at once instead of MLflow retrying for minutes
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError, match=r"^mlflow:job: tracking URI .* cannot be reached"):
        read_mlflow_experiment("job", tracking_uri=closed)
    port = free_port()
    proc = start_mlflow_server(port, tmp_path)
    try:
        # a live server passes the probe and answers through MLflow's client
        with pytest.raises(
            TrackingError, match=r"^mlflow:job: no MLflow experiment named 'job' at http://"
        ):
            read_mlflow_experiment("job", tracking_uri=f"http://127.0.0.1:{port}")
    finally:
        stop_mlflow_server(proc)


def test_best_by_run_id_names_what_is_missing(tmp_path: Path) -> None:
    from autopipe.tracking.best import read_best

    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}")
    exp = tracker.experiment_id("j")
    rid = tracker.resolve(tracker.start_run(exp, "job", {}))
    tracker.flush()
    # an id the store does not hold: "no such run", not a missing artifact
    with pytest.raises(TrackingError, match=r"^--run-id 0123abcd: no such run in the tracking"):
        read_best(tracker, run_id="0123abcd")
    # a run that exists but never wrote best_config.yaml: says that
    with pytest.raises(TrackingError, match=rf"^--run-id {rid}: the run has no best_config"):
        read_best(tracker, run_id=rid)
