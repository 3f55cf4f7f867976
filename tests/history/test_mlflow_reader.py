"""Reading an MLflow experiment written with ``autopipe tune``'s conventions (into a real sqlite
store), and exporting it as a run table with the CLI."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from autopipe import metrics as M  # noqa: E402
from autopipe.cli.history import register  # noqa: E402
from autopipe.errors import DataError, TrackingError  # noqa: E402
from autopipe.history.mlflow_reader import read_mlflow_experiment  # noqa: E402
from autopipe.history.runtable import read_run_table  # noqa: E402
from autopipe.space import Condition, Param, Space  # noqa: E402

SPACE = Space(
    [
        Param("sft.lr", "float", low=1e-6, high=1e-3, log=True),
        Param("sft.epochs", "int", low=1, high=3),
        Param("rl.algorithm", "categorical", choices=("grpo", "dpo")),
        Param(
            "rl.beta",
            "float",
            low=0.01,
            high=1.0,
            log=True,
            condition=Condition("rl.algorithm", ("dpo",)),
        ),
    ]
)

# (dataset, status, params, objective, failure reason)
TRIALS = [
    (
        "gsm8k",
        M.STATUS_COMPLETED,
        {"sft.lr": "1e-05", "sft.epochs": "2", "rl.algorithm": "grpo", "seed": "1"},
        0.41,
        "",
    ),
    (
        "gsm8k",
        M.STATUS_COMPLETED,
        {"sft.lr": "0.0001", "sft.epochs": "1", "rl.algorithm": "dpo", "rl.beta": "0.1"},
        0.35,
        "",
    ),
    (
        "gsm8k",
        M.STATUS_FAILED,
        {"sft.lr": "0.001", "sft.epochs": "3", "rl.algorithm": "grpo"},
        None,
        "non-finite loss at step 7",
    ),
    (
        "gsm8k",
        M.STATUS_EARLY_STOPPED,
        {"sft.lr": "3e-06", "sft.epochs": "1", "rl.algorithm": "grpo"},
        None,
        "",
    ),
    (
        "pubmedqa",
        M.STATUS_COMPLETED,
        {"sft.lr": "1e-05", "sft.epochs": "2", "rl.algorithm": "grpo"},
        0.62,
        "",
    ),
    (
        "pubmedqa",
        M.STATUS_FAILED,
        {"sft.lr": "2e-05", "sft.epochs": "2", "rl.algorithm": "dpo", "rl.beta": "0.5"},
        None,
        "CUDA out of memory",
    ),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("job1", artifact_location=str(root / "artifacts"))
    parents = {}
    for ds, n in (("gsm8k", 7473.0), ("pubmedqa", 450.0)):
        p = client.create_run(exp, tags={M.TAG_ROLE: "job", M.TAG_DATASET: ds, M.TAG_JOB: "job1"})
        client.log_dict(p.info.run_id, SPACE.to_json(), M.ARTIFACT_SPACE)
        client.log_dict(p.info.run_id, {"n_train": n, "label_entropy": 1.5}, M.ARTIFACT_META)
        client.set_terminated(p.info.run_id)
        parents[ds] = p.info.run_id
    for i, (ds, status, params, obj, reason) in enumerate(TRIALS):
        tags = {
            "mlflow.parentRunId": parents[ds],
            M.TAG_ROLE: "trial",
            M.TAG_DATASET: ds,
            M.TAG_STATUS: status,
            M.TAG_FIDELITY: "1.0",
            M.TAG_META_PREFIX + "prompt_tokens_mean": "42.5",
        }
        if reason:
            tags[M.TAG_FAILURE] = reason
        r = client.create_run(exp, tags=tags)
        rid = r.info.run_id
        for k, v in params.items():
            client.log_param(rid, k, v)
        for step in (10, 20, 40):
            client.log_metric(rid, M.FRACTION, step / 40, step=step)
            client.log_metric(rid, M.TRAIN_LOSS, 2.0 / step, step=step)
        client.log_metric(rid, M.EVAL_LOSS, 1.5, step=20)  # only at one step
        client.log_metric(rid, M.COST_S, 100.0 + i, step=40)
        if obj is not None:
            client.log_metric(rid, M.OBJECTIVE, obj, step=40)
        client.set_terminated(rid)
    return uri


def test_read_experiment(store: str) -> None:
    h = read_mlflow_experiment("job1", tracking_uri=store)
    assert h.mode == "max" and h.objective == M.OBJECTIVE and h.cost_unit == "seconds"
    assert len(h.runs) == 5  # the early-stopped trial has no final objective
    assert sorted(h.task_ids) == ["gsm8k", "pubmedqa"]
    assert h.meta_features("gsm8k") == {
        "n_train": 7473.0,
        "label_entropy": 1.5,
        "prompt_tokens_mean": 42.5,
    }
    r = h.runs.set_index(h.runs["sft.lr"].round(9))
    assert r.loc[1e-5].shape[0] == 2  # one per dataset
    grpo = h.runs.loc[(h.runs.task == "gsm8k") & (h.runs["sft.lr"] == 1e-5)].iloc[0]
    assert grpo["seed"] == 1 and grpo["sft.epochs"] == 2 and grpo["y"] == pytest.approx(0.41)
    assert math.isnan(grpo["rl.beta"])  # inactive DPO-only knob
    dpo = h.runs.loc[h.runs["rl.algorithm"] == "dpo"].set_index("task")
    assert dpo.loc["gsm8k", "rl.beta"] == pytest.approx(0.1)
    status = dict(zip(h.runs["sft.lr"].round(9), h.runs["status"], strict=True))
    assert status[1e-3] == "diverged" and status[2e-5] == "failed"
    assert h.runs.loc[h.runs.status != "ok", "y"].isna().all()
    # curves: fraction joined with signals on step; eval_loss only where logged
    assert h.curves is not None and len(h.curves) == 3 * 5
    one = h.curves.loc[h.curves.run_id == grpo["run_id"]]
    assert one["fraction"].tolist() == [0.25, 0.5, 1.0]
    assert one["train_loss"].tolist() == pytest.approx([0.2, 0.1, 0.05])
    assert one["eval_loss"].isna().tolist() == [True, False, True]


def test_export_with_cli_round_trips(store: str, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "table"
    args = parser.parse_args(
        ["history", "export", "--from", "mlflow:job1", "--out", str(out), "--tracking-uri", store]
    )
    assert args.func(args) == 0
    table = read_run_table(out)
    h = read_mlflow_experiment("job1", tracking_uri=store)
    assert len(table.runs) == len(h.runs) and table.space.to_json() == SPACE.to_json()
    assert sorted(table.meta_columns) == [
        "meta_label_entropy",
        "meta_n_train",
        "meta_prompt_tokens_mean",
    ]
    assert table.curve_signals == h.curve_signals
    args = parser.parse_args(["history", "show", "mlflow:job1", "--tracking-uri", store])
    assert args.func(args) == 0


def test_unknown_experiment(store: str) -> None:
    with pytest.raises(TrackingError, match="no MLflow experiment named 'nope'"):
        read_mlflow_experiment("nope", tracking_uri=store)


def test_experiment_without_job_run(store: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    exp = client.create_experiment(
        "bare", artifact_location=str(Path(store[len("sqlite:///") :]).parent / "bare")
    )
    client.create_run(exp, tags={M.TAG_ROLE: "trial"})
    with pytest.raises(DataError, match="no parent run"):
        read_mlflow_experiment("bare", tracking_uri=store)


def test_default_store_reads_artifacts_from_that_store(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No --tracking-uri and no $MLFLOW_TRACKING_URI: AutoPipe's default store (where
    # `autopipe tune` writes), for the job runs' artifacts too, not MLflow's ./mlflow.db default.
    import autopipe.tracking.store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(autopipe.tracking.store, "default_tracking_uri", lambda: store)
    monkeypatch.chdir(tmp_path)
    h = read_mlflow_experiment("job1")
    assert len(h.runs) == 5 and h.space.to_json() == SPACE.to_json()
    assert not (tmp_path / "mlflow.db").exists()  # reading created no store here


def test_promoted_run_gets_its_source_prefix(store: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    root = Path(store[len("sqlite:///") :]).parent
    exp = client.create_experiment("job2", artifact_location=str(root / "job2"))
    p = client.create_run(exp, tags={M.TAG_ROLE: "job", M.TAG_DATASET: "gsm8k"})
    client.log_dict(p.info.run_id, SPACE.to_json(), M.ARTIFACT_SPACE)
    params = {"sft.lr": "1e-05", "sft.epochs": "2", "rl.algorithm": "grpo"}

    def trial(tid: str, status: str, steps: dict[int, float], cost: float, **tags: str) -> str:
        base = {"mlflow.parentRunId": p.info.run_id, M.TAG_ROLE: "trial", M.TAG_TRIAL_ID: tid}
        rid = client.create_run(exp, tags={**base, M.TAG_STATUS: status, **tags}).info.run_id
        for k, v in params.items():
            client.log_param(rid, k, v)
        for step, frac in steps.items():
            client.log_metric(rid, M.FRACTION, frac, step=step)
            client.log_metric(rid, M.TRAIN_LOSS, 1.0 / step, step=step)
        client.log_metric(rid, M.COST_S, cost, step=max(steps))
        return rid

    trial("t1", M.STATUS_EARLY_STOPPED, {1: 0.25, 2: 0.5}, 50.0)
    rid = trial(
        "t2",
        M.STATUS_COMPLETED,
        {3: 0.75, 4: 1.0},
        60.0,
        **{M.TAG_PROMOTED_FROM: "t1", M.TAG_COST_SAVED: "50.00"},
    )
    client.log_metric(rid, M.OBJECTIVE, 0.5, step=4)
    # an unrelated trial whose source is unknown keeps its own curve and cost
    lone = trial("t3", M.STATUS_COMPLETED, {3: 0.75, 4: 1.0}, 70.0, **{M.TAG_PROMOTED_FROM: "x"})
    client.log_metric(lone, M.OBJECTIVE, 0.4, step=4)

    h = read_mlflow_experiment("job2", tracking_uri=store)
    runs = h.runs.set_index("run_id")
    assert sorted(runs.index) == sorted([rid, lone])  # the early-stopped source is no run
    assert runs.loc[rid, "cost"] == pytest.approx(110.0)  # its own 60 s + the source's 50 s
    assert runs.loc[lone, "cost"] == pytest.approx(70.0)
    assert h.curves is not None
    curve = h.curves.loc[h.curves.run_id == rid]
    assert curve["fraction"].tolist() == [0.25, 0.5, 0.75, 1.0]  # the source's prefix first
    assert curve["train_loss"].tolist() == pytest.approx([1.0, 0.5, 1 / 3, 0.25])
    assert h.curves.loc[h.curves.run_id == lone, "fraction"].tolist() == [0.75, 1.0]
