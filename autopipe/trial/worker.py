"""Ray Train worker entry point: runs :func:`autopipe.trial.pipeline.run_trial` on each
worker and forwards its reports to ``ray.train.report`` (checkpoints from rank 0).

Imported on workers only; it never imports BoTorch, XGBoost or MLflow.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from autopipe import metrics as M

# Keys of the worker config built by the driver (autopipe.tune.trainable).
KEY_PARAMS = "params"
KEY_SETTINGS = "settings"
KEY_DATASET = "dataset"
KEY_BASE_DIR = "base_dir"
KEY_RESUME = "resume_from"  # storage path of an early-stopped trial's checkpoint (promotion)


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    """Reports carry numbers only (plus the stage and failure reason strings)."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (int, float)):
            out[k] = float(v) if isinstance(v, float) else v
        elif k in (M.STAGE, M.FAILURE_REASON):
            out[k] = str(v)
    # Tune needs the tuned metric in every report; NaN until evaluated.
    out.setdefault(M.OBJECTIVE, float("nan"))
    return out


def train_fn(config: dict[str, Any]) -> None:
    import ray.train
    from ray.train import Checkpoint

    from autopipe.spec import DatasetSpec
    from autopipe.tasks import load_dataset
    from autopipe.trial.pipeline import TrialSettings, run_trial

    # Ray Train logs every report at INFO; the trial's progress is in Tune's table and MLflow.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    settings = TrialSettings(**config[KEY_SETTINGS])
    if settings.threads:
        os.environ["OMP_NUM_THREADS"] = str(settings.threads)
    if settings.device == "cpu":
        # A trial without GPUs on a GPU node: DeepSpeed would pick the CUDA accelerator.
        os.environ["DS_ACCELERATOR"] = "cpu"
    ds = DatasetSpec.model_validate(config[KEY_DATASET])
    data = load_dataset(ds, Path(config[KEY_BASE_DIR]))
    rank = ray.train.get_context().get_world_rank()

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        m = _clean(metrics)
        if checkpoint_dir is not None and rank == 0:
            ray.train.report(m, checkpoint=Checkpoint.from_directory(checkpoint_dir))
        else:
            ray.train.report(m)

    with tempfile.TemporaryDirectory(prefix="autopipe-trial-") as work:
        resume = config.get(KEY_RESUME)
        retry = ray.train.get_checkpoint()
        if retry is not None:
            # A retry after a lost worker (budget.max_failures): continue from the latest
            # checkpoint this trial reported (the SFT model at the SFT/RL boundary).
            resume = retry.path
        if resume:
            # The checkpoint may live on shared storage or in the cloud: fetch it locally.
            ckpt = retry if retry is not None else Checkpoint(resume)
            with ckpt.as_directory() as local:
                run_trial(
                    config[KEY_PARAMS], data, settings, report, work_dir=work, resume_from=local
                )
        else:
            run_trial(config[KEY_PARAMS], data, settings, report, work_dir=work)
