"""DeepSpeed ZeRO trials on CPU (gloo, one process): the code path GPU jobs take with
``resources.deepspeed``. ZeRO-3 partitions the weight matrices, so a trained model must be
gathered before it is evaluated or saved."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from autopipe import metrics as M
from autopipe.trial import training as P
from autopipe.trial.run import run_trial
from autopipe.trial.settings import TrialSettings, early_stop_step, plan_steps
from autopipe.trial.tasks import make_builtin
from tests.fixtures.trials import BASE, SETTINGS, CopyingRecorder, Recorder


def _reset_process_state() -> None:
    """Forget the process-wide state that accelerate, DeepSpeed and transformers keep about the
    process group and the ZeRO config, so trainers before and after these tests (in the same
    pytest process) start clean. A real trial has a worker process of its own."""
    import deepspeed.comm.comm as ds_comm
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    AcceleratorState._reset_state(reset_partial_state=True)
    ds_comm.cdb = None
    unset_hf_deepspeed_config()
    os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)  # accelerate sets it for good


@pytest.fixture(scope="module")
def gloo():
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": "0",
            "LOCAL_RANK": "0",
            "WORLD_SIZE": "1",
            "LOCAL_WORLD_SIZE": "1",
        }.items():
            mp.setenv(k, v)
        # gloo on CPU; on a GPU machine the trial moves to CUDA and needs NCCL
        _reset_process_state()
        dist.init_process_group(
            "nccl" if torch.cuda.is_available() else "gloo", rank=0, world_size=1
        )
        try:
            yield
        finally:
            dist.destroy_process_group()
            _reset_process_state()


@pytest.fixture(scope="module")
def sort_data():
    return make_builtin("sort", 400, 64, 48, seed=0)


def _settings(**kw: Any) -> TrialSettings:
    return TrialSettings(**{**SETTINGS.__dict__, **kw})


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)


class Partitioned:
    """Wraps ``trained_model`` to count, per trainer, the parameters ZeRO-3 had partitioned
    (an empty tensor) and how many the returned model still has."""

    def __init__(self) -> None:
        self.zero3: list[int] = []  # parameters under ZeRO-3's management (a ds_id)
        self.before: list[int] = []
        self.after: list[int] = []
        self.orig = P.trained_model

    def __call__(self, trainer: Any) -> Any:
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        self.zero3.append(sum(hasattr(p, "ds_id") for p in unwrapped.parameters()))
        self.before.append(sum(p.numel() == 0 for p in unwrapped.parameters()))
        model = self.orig(trainer)
        self.after.append(sum(p.numel() == 0 for p in model.parameters()))
        return model


def test_zero3_trial_gathers_whole_weights_and_matches_a_plain_run(
    gloo, sort_data, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = Partitioned()
    monkeypatch.setattr(P, "trained_model", probe)
    plain = CopyingRecorder(tmp_path / "plain")
    (tmp_path / "plain").mkdir()
    out_plain = run_trial(dict(BASE), sort_data, SETTINGS, plain)
    zero3 = CopyingRecorder(tmp_path / "zero3")
    (tmp_path / "zero3").mkdir()
    out = run_trial(dict(BASE), sort_data, _settings(deepspeed=3), zero3)
    assert out_plain.status == out.status == M.STATUS_COMPLETED
    # GRPO loads its model under ZeRO-3's construction hook: the weight matrices are partitioned
    # in the trainer (the plain run's trainers have none) ...
    assert probe.zero3[:2] == [0, 0] and min(probe.zero3[2:]) > 0  # both ZeRO-3 trainers
    assert probe.before[:2] == [0, 0] and probe.before[-1] > 0
    # ... and every model the pipeline goes on with is whole again.
    assert probe.after == [0, 0, 0, 0]
    # The saved checkpoints (SFT model, final model) hold every tensor at its full shape,
    # and ZeRO-3 trained the same model as the plain run (same data order, same optimizer).
    for i in (0, 1):
        w_plain, w_zero = _weights(plain.paths[i]), _weights(zero3.paths[i])
        assert w_plain.keys() == w_zero.keys()
        for k in w_plain:
            assert w_zero[k].shape == w_plain[k].shape, k
            rel = (w_zero[k] - w_plain[k]).norm() / max(w_plain[k].norm(), 1e-12)
            assert rel < 1e-2, (k, float(rel))
    assert abs(out.objective - out_plain.objective) <= 0.1
    assert out.metrics[M.SFT_S] > 0 and out.metrics[M.RL_S] > 0  # stage wall times reported


def test_zero2_early_stop_then_resume(gloo, sort_data, tmp_path: Path) -> None:
    total = sum(plan_steps(BASE, 400))
    stop = early_stop_step(*plan_steps(BASE, 400), 0.5)
    rec = CopyingRecorder(tmp_path)
    out = run_trial(dict(BASE), sort_data, _settings(deepspeed=2, early_stop_fraction=0.5), rec)
    assert out.status == M.STATUS_EARLY_STOPPED
    assert rec.reports[-1][M.GLOBAL_STEP] == stop
    # DeepSpeed writes its own resumable state (global_step*/ with the partitioned optimizer)
    assert any(name.startswith("global_step") for name in rec.checkpoints[-1][1])
    resumed = Recorder()
    full = run_trial(
        dict(BASE), sort_data, _settings(deepspeed=2), resumed, resume_from=str(rec.paths[-1])
    )
    assert full.status == M.STATUS_COMPLETED and math.isfinite(full.objective)
    sft_steps = [
        r[M.GLOBAL_STEP] for r in resumed.reports if r[M.STAGE] == "sft" and M.TRAIN_LOSS in r
    ]
    assert sft_steps and min(sft_steps) > stop  # the prefix is not recomputed
    assert resumed.reports[-1][M.GLOBAL_STEP] == total


def test_zero3_dpo(gloo, sort_data, tmp_path: Path) -> None:
    cfg = {**BASE, "rl.algorithm": "dpo", "rl.lr": 1e-4, "rl.beta": 0.1}
    rec = CopyingRecorder(tmp_path)
    out = run_trial(cfg, sort_data, _settings(deepspeed=3), rec)
    assert out.status == M.STATUS_COMPLETED and math.isfinite(out.objective)
    final = _weights(rec.paths[-1])
    assert all(t.numel() > 0 for t in final.values())


def test_deepspeed_config_by_stage() -> None:
    for stage in (1, 2, 3):
        cfg = P.deepspeed_config(stage)
        assert cfg["zero_optimization"]["stage"] == stage
    z3 = P.deepspeed_config(3)["zero_optimization"]
    assert z3["stage3_gather_16bit_weights_on_model_save"] is True
    assert z3["stage3_param_persistence_threshold"] == "auto"
    assert "stage3_param_persistence_threshold" not in P.deepspeed_config(2)["zero_optimization"]


def test_no_deepspeed_without_a_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    # accelerate leaves this behind after a DeepSpeed trainer in the same process
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    args = P.common_args(SETTINGS, os.devnull, 10, 1e-3, 4, 0)
    assert "deepspeed" not in args
    assert "ACCELERATE_USE_DEEPSPEED" not in os.environ
    args = P.common_args(_settings(deepspeed=2), os.devnull, 10, 1e-3, 4, 0)
    assert args["deepspeed"]["zero_optimization"]["stage"] == 2


def test_trial_device_follows_the_trials_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial without GPUs stays on the CPU even where CUDA is visible (its gloo process group
    cannot reduce CUDA tensors); one given GPUs fails clearly where its worker sees none."""
    from autopipe.errors import TrialError
    from autopipe.spec import JobSpec
    from autopipe.trial.training import use_cuda
    from autopipe.tune.trainable import trial_settings

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cpu = _settings(device="cpu", dtype="bfloat16")
    assert not use_cuda(cpu)
    args = P.common_args(cpu, os.devnull, 10, 1e-3, 4, 0)
    assert args["use_cpu"] is True and args["bf16"] is False
    gpu = _settings(device="cuda", dtype="bfloat16")
    assert use_cuda(gpu) and use_cuda(_settings(device="auto"))
    args = P.common_args(gpu, os.devnull, 10, 1e-3, 4, 0)
    assert args["use_cpu"] is False and args["bf16"] is True
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrialError, match="gpus_per_worker"):
        use_cuda(gpu)
    # in a trial that is a failed trial with its reason, not a crash
    rec = Recorder()
    out = run_trial(dict(BASE), make_builtin("sort", 40, 8, 8, seed=0), gpu, rec)
    assert out.status == M.STATUS_FAILED and "gpus_per_worker" in (out.failure or "")
    assert rec.reports[-1][M.FAILED] == 1.0
    assert not use_cuda(_settings(device="auto"))
    # the job decides: gpus_per_worker > 0 -> "cuda", else "cpu"
    base = {"name": "t", "dataset": {"task": "sort"}}
    assert trial_settings(JobSpec.model_validate(base))["device"] == "cpu"
    on_gpu = {**base, "resources": {"gpus_per_worker": 0.5}}
    assert trial_settings(JobSpec.model_validate(on_gpu))["device"] == "cuda"


def test_several_deepspeed_workers_stop_at_the_sft_rl_boundary() -> None:
    # inside SFT a DeepSpeed checkpoint is one ZeRO shard per rank: not resumable from rank 0's
    assert early_stop_step(60, 4, 0.5) == 32
    assert early_stop_step(60, 4, 0.5, at_boundary=True) == 60
    assert early_stop_step(60, 4, 1.0, at_boundary=True) is None
