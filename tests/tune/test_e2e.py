"""End to end: `autopipe tune` runs a 3-trial job through Ray Tune + Ray Train + TRL + MLflow,
failed trials do not stop the job, and `autopipe best` returns a configuration that exists in
MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from autopipe import metrics as M
from autopipe.cli import main
from tests.tune.helpers import run_cli, write_spec


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("e2e")
    store = f"sqlite:///{d / 'mlflow.db'}"
    spec = write_spec(d / "e2e.yaml", "e2e", store, d / "ray")
    # One trial raises inside its worker, one diverges (NaN loss), one completes.
    r = run_cli(
        "tune",
        str(spec),
        "--quiet",
        env={"AUTOPIPE_FAULT": "raise:sft.batch_size=8;nan:sft.batch_size=16"},
    )
    return d, store, r


def test_job_runs_and_survives_failed_trials(job) -> None:
    _, _, r = job
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "3 trials" in r.stdout and "failed 2" in r.stdout and "completed 1" in r.stdout


def test_mlflow_has_every_trial_with_curves_and_status(job) -> None:
    _, store, _ = job
    c = MlflowClient(store)
    exp = c.get_experiment_by_name("e2e")
    runs = c.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get(M.TAG_ROLE) == "job"]
    trials = [r for r in runs if r.data.tags.get(M.TAG_ROLE) == "trial"]
    assert len(parents) == 1 and len(trials) == 3
    assert all(r.info.status != "RUNNING" for r in runs)  # nothing left open
    by_bs = {r.data.params["sft.batch_size"]: r for r in trials}
    assert by_bs["8"].data.tags[M.TAG_STATUS] == M.STATUS_FAILED
    assert "injected fault" in by_bs["8"].data.tags[M.TAG_FAILURE]
    assert by_bs["16"].data.tags[M.TAG_STATUS] == M.STATUS_FAILED
    assert "non-finite train loss" in by_bs["16"].data.tags[M.TAG_FAILURE]
    ok = by_bs["32"]
    assert ok.data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED
    assert float(ok.data.tags[M.TAG_FIDELITY]) == 1.0
    assert ok.data.tags[M.TAG_DATASET].startswith("sort-")
    assert any(k.startswith(M.TAG_META_PREFIX) for k in ok.data.tags)  # dataset meta-features
    assert ok.data.params["sft.lr"] == "0.003" and ok.data.params["rl.algorithm"] == "grpo"
    curve = c.get_metric_history(ok.info.run_id, M.TRAIN_LOSS)
    assert len(curve) >= 3 and len({m.step for m in curve}) == len(curve)  # a step series
    assert c.get_metric_history(ok.info.run_id, M.REWARD_MEAN)
    assert ok.data.metrics[M.COST_S] > 0 and 0 <= ok.data.metrics[M.OBJECTIVE] <= 1
    best = yaml.safe_load(
        Path(c.download_artifacts(parents[0].info.run_id, M.ARTIFACT_BEST)).read_text()
    )
    assert best["mlflow_run_id"] == ok.info.run_id


def test_best_prints_the_winning_config(job, capsys: pytest.CaptureFixture[str]) -> None:
    _, store, _ = job
    assert main(["best", "--job", "e2e", "--tracking-uri", store]) == 0
    out = capsys.readouterr().out
    cfg = yaml.safe_load(out)
    assert cfg["sft.batch_size"] == 32 and cfg["rl.algorithm"] == "grpo"
    c = MlflowClient(store)
    exp = c.get_experiment_by_name("e2e")
    matching = [
        r
        for r in c.search_runs([exp.experiment_id])
        if r.data.params.get("sft.batch_size") == str(cfg["sft.batch_size"])
    ]
    assert matching, "the best config is not a run in MLflow"
    assert main(["best", "--job", "no-such-job", "--tracking-uri", store]) == 2


def test_job_where_every_trial_fails_exits_1_and_keeps_the_trials(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(
        tmp_path / "allfail.yaml",
        "allfail",
        store,
        tmp_path / "ray",
        budget={"max_trials": 1, "max_concurrent": 1},
        space={
            "sft": {"lr": 3.0e-3, "steps": 8, "batch_size": {"choices": [8, 16]}},
            "rl": {"algorithm": "grpo", "lr": 5.0e-5, "num_generations": 4, "batch_size": 8,
                   "steps": 1},
        },
    )  # fmt: skip
    fault = {"AUTOPIPE_FAULT": "raise:sft.batch_size=8;raise:sft.batch_size=16"}
    r = run_cli("tune", str(spec), "--quiet", env=fault)
    # the job itself ran to its end (the summary is printed), but nothing it ran finished
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "failed 1" in r.stdout
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("autopipe: error: no trial finished: all 1 trials failed; see "), last
    # the failed trial is in MLflow with its status
    exp = MlflowClient(tracking_uri=store).get_experiment_by_name("allfail")
    runs = MlflowClient(tracking_uri=store).search_runs(
        [exp.experiment_id], filter_string=f"tags.`{M.TAG_ROLE}` = 'trial'"
    )
    assert [x.data.tags[M.TAG_STATUS] for x in runs] == [M.STATUS_FAILED]
