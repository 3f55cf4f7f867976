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
from autopipe.corpus import generate as G
from autopipe.history.mlflow_reader import read_mlflow_experiment
from autopipe.history.runtable import read_run_table
from autopipe.spec import load_spec
from tests.tune.helpers import run_cli, write_spec

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


def test_design_is_space_filling_deterministic_and_partly_dpo() -> None:
    space = load_spec(Path(__file__).parents[2] / "jobs" / "demo.yaml").to_space()
    a, b = G.design(space, 48, seed=0), G.design(space, 48, seed=0)
    assert a == b  # the plan is deterministic
    assert len({space.config_key(c) for c in a}) == 48  # 48 different configurations
    algos = [c["rl.algorithm"] for c in a]
    assert algos.count("dpo") == 8  # one in six is DPO
    assert all("rl.temperature" not in c for c in a if c["rl.algorithm"] == "dpo")  # GRPO-only
    lrs = np.log([c["sft.lr"] for c in a])
    lo, hi = np.log(3e-4), np.log(5e-3)
    # Space filling: every quarter of the log-lr range holds between 6 and 18 of the 48 points.
    counts = np.histogram(lrs, bins=4, range=(lo, hi))[0]
    assert counts.min() >= 6 and counts.max() <= 18, counts


def test_plan_replicates_the_first_points_with_more_seeds() -> None:
    space = load_spec(Path(__file__).parents[2] / "jobs" / "demo.yaml").to_space()
    jobs = G.plan(space, ["parity", "ynm"], 48, n_replicates=8, n_seeds=3, seed=0)
    assert [(j.task, j.seed, len(j.configs)) for j in jobs] == [
        ("parity", 0, 48),
        ("ynm", 0, 48),
        ("parity", 1, 8),
        ("parity", 2, 8),
        ("ynm", 1, 8),
        ("ynm", 2, 8),
    ]
    assert jobs[2].configs == jobs[0].configs[:8]  # the same points, another seed


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
        dataset={"task": "sort", "n_train": 64, "n_rl": 16, "n_eval": 16},
    )
    common = ["history", "generate", "--job", str(tpl), "--experiment", "gen", "--seed", "3"]
    common += ["--configs-per-task", "2", "--replicates", "0", "--n-train", "64"]
    # First one task (as if a longer generation had been interrupted after it), then both.
    first = run_cli(*common, "--tasks", "parity", "--max-concurrent", "2")
    second = run_cli(*common, "--tasks", "parity", "compare", "--max-concurrent", "2")
    return d, store, first, second


def test_generation_runs_real_trials_and_resumes_without_duplicates(generated) -> None:
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
    # A third call finds nothing left to do.
    again = run_cli(*_args(generated), "--dry-run")
    assert "0 to run" in again.stdout


def _args(generated) -> list[str]:
    d = generated[0]
    return [
        "history", "generate", "--job", str(d / "tpl.yaml"), "--experiment", "gen", "--seed",
        "3", "--configs-per-task", "2", "--replicates", "0", "--tasks", "parity", "compare",
    ]  # fmt: skip


def test_export_reimports_to_the_same_runs_and_curves(generated, tmp_path: Path) -> None:
    d, store, _, _ = generated
    out = tmp_path / "corpus"
    r = run_cli(
        "history", "export", "--from", "mlflow:gen", "--tracking-uri", store, "--out", str(out)
    )
    assert r.returncode == 0, r.stderr[-2000:]
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


def test_bad_generate_input_is_one_line(tmp_path: Path) -> None:
    r = run_cli("history", "generate", "--tasks", "nope", "--dry-run")
    assert r.returncode == 2 and "--tasks must be built-in tasks" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = run_cli("history", "generate", "--replicates", "99", "--configs-per-task", "4", "--dry-run")
    assert r.returncode == 2 and "--replicates must be between 0 and" in r.stderr


def test_resume_reads_the_store_jobs_write_to_by_default(tmp_path: Path, monkeypatch) -> None:
    # No --tracking-uri: generation and its resume check both use AutoPipe's default store.
    from autopipe.tracking import Tracker

    monkeypatch.setenv("AUTOPIPE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # MLflow's own default would be ./mlflow.db here
    space = load_spec(Path(__file__).parents[2] / "jobs" / "demo.yaml").to_space()
    cfg = G.design(space, 1, seed=0)[0]
    t = Tracker(None)
    exp = t.experiment_id("gen")
    rid = t.start_run(exp, "trial", {M.TAG_JOB: "gen-parity-s0", M.TAG_ROLE: "trial"})
    t.log_params(rid, cfg)
    t.set_tags(rid, {M.TAG_STATUS: M.STATUS_COMPLETED})
    t.end_run(rid)
    done = G.ended_configs(None, "gen", "gen-parity-s0", space)
    assert done == {space.config_key(cfg)}
    assert not (tmp_path / "mlflow.db").exists()  # nothing written to MLflow's own default
