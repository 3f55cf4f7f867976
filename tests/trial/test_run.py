"""The trial pipeline with real TRL trainers on a tiny random-init model, without Ray."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from autopipe import metrics as M
from autopipe.trial.faults import injected_fault
from autopipe.trial.run import run_trial
from autopipe.trial.settings import TrialSettings, early_stop_step, plan_steps
from autopipe.trial.tasks import make_builtin
from tests.fixtures.trials import BASE, SETTINGS, CopyingRecorder, Recorder


@pytest.fixture(scope="module")
def sort_data():
    return make_builtin("sort", 400, 64, 48, seed=0)


@pytest.fixture(scope="module")
def grpo_run(sort_data):
    rec = Recorder()
    out = run_trial(dict(BASE), sort_data, SETTINGS, rec)
    return out, rec


def test_sft_lowers_loss_and_grpo_sees_reward(grpo_run) -> None:
    out, rec = grpo_run
    assert out.status == M.STATUS_COMPLETED
    sft = [r[M.TRAIN_LOSS] for r in rec.reports if r[M.STAGE] == "sft" and M.TRAIN_LOSS in r]
    assert len(sft) >= 3
    assert sft[-1] < 0.7 * sft[0]  # SFT lowers the loss substantially
    rl = [r for r in rec.reports if r[M.STAGE] == "rl"]
    assert rl, "GRPO reported nothing"
    assert max(r.get(M.REWARD_MEAN, 0.0) for r in rl) > 0.0  # GRPO sees non-zero reward
    assert all(M.KL in r for r in rl if M.TRAIN_LOSS in r)  # beta > 0 logs KL


def test_reports_are_complete_and_monotone(grpo_run) -> None:
    out, rec = grpo_run
    steps = [r[M.GLOBAL_STEP] for r in rec.reports]
    fracs = [r[M.FRACTION] for r in rec.reports]
    assert steps == sorted(steps) and fracs == sorted(fracs)
    assert fracs[-1] == 1.0 and steps[-1] == sum(plan_steps(BASE, 400))
    assert all(M.OBJECTIVE in r and M.ELAPSED_S in r for r in rec.reports)
    last = rec.reports[-1]
    assert 0.0 <= last[M.ACCURACY] <= 1.0 and last[M.OBJECTIVE] == out.objective
    assert {M.ACCURACY_GREEDY, M.PASS_AT_K, M.ACCURACY_AFTER_SFT} <= set(last)
    # checkpoints at the SFT/RL boundary and at the end, each a loadable HF model dir
    assert [s for s, _ in rec.checkpoints] == ["sft", "done"]
    for _, files in rec.checkpoints:
        assert "config.json" in files and "model.safetensors" in files


def test_dpo_and_lora(sort_data) -> None:
    cfg = dict(BASE, **{"rl.algorithm": "dpo", "rl.beta": 0.1, "sft.lora_rank": 4, "sft.steps": 20})
    rec = Recorder()
    out = run_trial(cfg, sort_data, SETTINGS, rec)
    assert out.status == M.STATUS_COMPLETED
    assert any(r[M.STAGE] == "rl" and M.TRAIN_LOSS in r for r in rec.reports)
    assert math.isfinite(out.objective)


def test_early_stop_then_resume_matches_a_straight_run(sort_data, tmp_path: Path) -> None:
    total = sum(plan_steps(BASE, 400))
    settings = TrialSettings(**{**SETTINGS.__dict__, "early_stop_fraction": 0.5})
    rec = CopyingRecorder(tmp_path)
    out = run_trial(dict(BASE), sort_data, settings, rec)
    stop = early_stop_step(*plan_steps(BASE, 400), 0.5)
    assert out.status == M.STATUS_EARLY_STOPPED
    assert stop == math.ceil(0.5 * total) and stop < BASE["sft.steps"]  # inside SFT
    last = rec.reports[-1]
    assert last[M.EARLY_STOPPED] == 1.0 and last[M.GLOBAL_STEP] == stop
    assert all(r[M.STAGE] == "sft" and r[M.GLOBAL_STEP] <= stop for r in rec.reports)
    assert "optimizer.pt" in rec.checkpoints[-1][1]  # a resumable Trainer checkpoint
    # Promotion: resume the stopped trial; the SFT prefix is not recomputed.
    resumed = Recorder()
    full = run_trial(dict(BASE), sort_data, SETTINGS, resumed, resume_from=str(rec.paths[-1]))
    assert full.status == M.STATUS_COMPLETED
    sft_steps = [
        r[M.GLOBAL_STEP] for r in resumed.reports if r[M.STAGE] == "sft" and M.TRAIN_LOSS in r
    ]
    assert sft_steps and min(sft_steps) > stop  # no step at or before the early point is redone
    assert resumed.reports[-1][M.GLOBAL_STEP] == total  # same step count as a straight run
    assert resumed.reports[-1][M.FRACTION] == 1.0


def test_early_point_past_sft_stops_at_the_boundary(sort_data, tmp_path: Path) -> None:
    settings = TrialSettings(**{**SETTINGS.__dict__, "early_stop_fraction": 0.99})
    rec = CopyingRecorder(tmp_path)
    out = run_trial(dict(BASE), sort_data, settings, rec)
    assert out.status == M.STATUS_EARLY_STOPPED and math.isfinite(out.objective)
    assert rec.reports[-1][M.GLOBAL_STEP] == BASE["sft.steps"]
    resumed = Recorder()
    full = run_trial(dict(BASE), sort_data, SETTINGS, resumed, resume_from=str(rec.paths[-1]))
    assert full.status == M.STATUS_COMPLETED
    assert not [r for r in resumed.reports if r[M.STAGE] == "sft" and M.TRAIN_LOSS in r]
    assert resumed.reports[-1][M.GLOBAL_STEP] == sum(plan_steps(BASE, 400))


def test_nan_loss_fails_the_trial(sort_data, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOPIPE_FAULT", "nan:sft.batch_size=16")
    rec = Recorder()
    out = run_trial(dict(BASE), sort_data, SETTINGS, rec)
    assert out.status == M.STATUS_FAILED
    assert "non-finite train loss" in (out.failure or "")
    assert rec.reports[-1][M.FAILED] == 1.0


def test_fault_spec_matching() -> None:
    assert injected_fault({"a": 1}, "raise:a=1") == "raise"
    assert injected_fault({"a": 2}, "raise:a=1;nan:a=2") == "nan"
    assert injected_fault({"a": 3}, "raise:a=1") is None
    assert injected_fault({"a": 1}, "") is None
