"""History generation end to end: `autopipe history generate` runs real SFT -> RL trials over a
design of built-in tasks through Ray Tune + MLflow, resumes from MLflow without duplicating runs,
and its export re-imports to the same runs and curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from autopipe import metrics as M
from autopipe.cli import main
from autopipe.history.mlflow_reader import read_mlflow_experiment
from autopipe.history.runtable import read_run_table
from tests.fixtures.jobs import run_cli, write_spec

pytestmark = pytest.mark.job(seconds=110)  # starts Ray (tests/conftest.py)

TINY_SPACE = {
    "sft": {"lr": {"low": 1e-3, "high": 5e-3, "log": True}, "steps": {"values": [8, 16]}},
    "rl": {
        "algorithm": {"choices": ["grpo", "dpo"]},
        "lr": {"low": 1e-5, "high": 1e-4, "log": True},
        "num_generations": 4,
        "batch_size": 8,
        "steps": 2,
    },
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("gen")
    store = f"sqlite:///{d / 'mlflow.db'}"
    tpl = write_spec(
        d / "tpl.yaml",
        "tpl",
        store,
        d / "ray",
        space=TINY_SPACE,
        dataset={"task": "sort", "n_train": 64, "n_rl": 16, "n_eval": 16, "min_eval": 16},
    )
    common = ["history", "generate", "--job", str(tpl), "--experiment", "gen", "--seed", "3"]
    common += ["--configs-per-task", "2", "--replicates", "0", "--n-train", "64"]
    # First one task (as if a longer generation had been interrupted after it), then both.
    first = run_cli(*common, "--tasks", "parity", "--max-concurrent", "2")
    second = run_cli(*common, "--tasks", "parity", "compare", "--max-concurrent", "2")
    return d, store, first, second


def test_generation_runs_real_trials_and_resumes_without_duplicates(
    generated, capsys: pytest.CaptureFixture[str]
) -> None:
    _, store, first, second = generated
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert "2 trials planned, 0 already" in first.stdout
    assert "4 trials planned, 2 already in mlflow:gen, 2 to run" in second.stdout  # resumed
    c = MlflowClient(store)
    exp = c.get_experiment_by_name("gen")
    trials = c.search_runs([exp.experiment_id], f"tags.`{M.TAG_ROLE}` = 'trial'")
    assert len(trials) == 4  # 2 tasks x 2 configurations, none run twice
    jobs = {r.data.tags[M.TAG_JOB] for r in trials}
    assert jobs == {"gen-parity-s3", "gen-compare-s3"}
    assert all(r.data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED for r in trials)
    assert all(r.data.params["seed"] == "3" for r in trials)  # the training seed is recorded
    # The same design point on both tasks (matched configurations across tasks).
    by_job: dict[str, set] = {}
    for r in trials:
        by_job.setdefault(r.data.tags[M.TAG_JOB], set()).add(r.data.params["sft.lr"])
    assert by_job["gen-parity-s3"] == by_job["gen-compare-s3"]
    # A third call finds nothing left to do (and so starts no Ray).
    d = generated[0]
    args = [
        "history", "generate", "--job", str(d / "tpl.yaml"), "--experiment", "gen", "--seed",
        "3", "--configs-per-task", "2", "--replicates", "0", "--tasks", "parity", "compare",
    ]  # fmt: skip
    assert main([*args, "--dry-run"]) == 0
    assert "0 to run" in capsys.readouterr().out


def test_export_reimports_to_the_same_runs_and_curves(generated, tmp_path: Path) -> None:
    d, store, _, _ = generated
    out = tmp_path / "corpus"
    args = ["history", "export", "--from", "mlflow:gen", "--tracking-uri", store, "--out", str(out)]
    assert main(args) == 0
    src = read_mlflow_experiment("gen", tracking_uri=store)
    back = read_run_table(out)
    assert sorted(back.runs["run_id"]) == sorted(src.runs["run_id"])
    a = src.runs.set_index("run_id").sort_index()
    b = back.runs.set_index("run_id").sort_index()
    np.testing.assert_allclose(a["y"].to_numpy(float), b["y"].to_numpy(float))
    assert (a["seed"] == b["seed"]).all() and (a["task"] == b["task"]).all()
    assert back.curves is not None and src.curves is not None
    key = ["run_id", "fraction"]
    ca = src.curves.sort_values(key).reset_index(drop=True)
    cb = back.curves.sort_values(key).reset_index(drop=True)
    assert len(cb) >= 4 * 3  # every run has a curve of several points
    pd.testing.assert_frame_equal(ca[cb.columns], cb, check_dtype=False)
    assert set(back.tasks["task"]) == set(src.tasks["task"])
    assert any(c.startswith("meta_") for c in back.tasks.columns)  # task meta-features
