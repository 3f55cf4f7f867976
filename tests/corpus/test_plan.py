"""The history generator's plan, without running it: a space-filling design shared by every
task, replicated points with more seeds, one-line errors for bad input, and the resume check
reading the store jobs write to."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autopipe import metrics as M
from autopipe.corpus import generate as G
from autopipe.spec import load_spec
from tests.fixtures.jobs import run_cli


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
