"""What each Ray Train worker of a trial runs, without Ray: the driver's worker config turned
into the trial's settings and dataset, then :func:`autopipe.trial.run.run_trial` with a report
callable. The Ray side (``ray.train.report``, checkpoints, retries) is
:mod:`autopipe.tune.train_loop`.

It never imports BoTorch, XGBoost, MLflow or Ray.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from autopipe import metrics as M
from autopipe.trial.settings import Reporter

# Keys of the worker config built by the driver (autopipe.tune.trainable).
KEY_PARAMS = "params"
KEY_SETTINGS = "settings"
KEY_DATASET = "dataset"
KEY_BASE_DIR = "base_dir"
KEY_RESUME = "resume_from"  # storage path of an early-stopped trial's checkpoint (promotion)


def clean_report(metrics: dict[str, Any]) -> dict[str, Any]:
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


def run_worker(config: dict[str, Any], report: Reporter, resume_dir: str | None = None) -> None:
    """Run the trial ``config`` describes on this worker, reporting through ``report``.

    ``resume_dir``: a local copy of the checkpoint to continue from (a promotion's early-stopped
    checkpoint, or this trial's latest one after Ray Train restarted a lost worker)."""
    from autopipe.spec import DatasetSpec
    from autopipe.trial.run import run_trial
    from autopipe.trial.settings import TrialSettings
    from autopipe.trial.tasks import load_dataset

    settings = TrialSettings(**config[KEY_SETTINGS])
    if settings.threads:
        os.environ["OMP_NUM_THREADS"] = str(settings.threads)
    if settings.device == "cpu":
        # A trial without GPUs on a GPU node: DeepSpeed would pick the CUDA accelerator.
        os.environ["DS_ACCELERATOR"] = "cpu"
    ds = DatasetSpec.model_validate(config[KEY_DATASET])
    data = load_dataset(ds, Path(config[KEY_BASE_DIR]))
    with tempfile.TemporaryDirectory(prefix="autopipe-trial-") as work:
        run_trial(config[KEY_PARAMS], data, settings, report, work_dir=work, resume_from=resume_dir)
