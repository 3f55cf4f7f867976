"""A real job whose trials run under DeepSpeed ZeRO-3 across two Ray Train workers (gloo on CPU,
the same code GPU jobs run over NCCL): the weights are partitioned between the ranks during
training and gathered for evaluation and the checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open

from autopipe import metrics as M
from tests.fixtures.jobs import job_runs, run_cli, write_spec

pytestmark = pytest.mark.job(seconds=45)  # starts Ray (tests/conftest.py)


def test_zero3_job_over_two_workers(tmp_path: Path, tmp_store: str) -> None:
    spec = write_spec(
        tmp_path / "zero3.yaml",
        "zero3",
        tmp_store,
        tmp_path / "ray",
        budget={"max_trials": 1, "max_concurrent": 1},
        resources={"workers_per_trial": 2, "cpus_per_worker": 1, "deepspeed": 3},
    )
    r = run_cli("tune", str(spec), "--quiet", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "completed 1" in r.stdout
    _, (trial,) = job_runs(tmp_store, "zero3")
    assert trial.data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED
    m = trial.data.metrics
    assert 0.0 <= m[M.ACCURACY] <= 1.0 and m[M.SFT_S] > 0 and m[M.RL_S] > 0
    assert M.GPU_MEM_PEAK_MB not in m  # a CPU trial reports no GPU memory
    # The final checkpoint Ray Train kept holds every weight at its full shape.
    ckpts = sorted((tmp_path / "ray").rglob("checkpoint_*/model.safetensors"))
    assert ckpts, "no model checkpoint in the Ray results"
    with safe_open(str(ckpts[-1]), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    assert shapes and all(0 not in s and len(s) >= 1 for s in shapes.values())
    assert any(len(s) == 2 and min(s) >= 16 for s in shapes.values())  # the weight matrices
