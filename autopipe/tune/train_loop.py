"""The Ray Train loop of one trial: runs :func:`autopipe.trial.worker.run_worker` on each worker
and forwards its reports to ``ray.train.report`` (checkpoints from rank 0), continuing from the
latest checkpoint after a lost worker or from an early-stopped trial's checkpoint on promotion.

Imported on Ray Train workers: it imports Ray and the trial package only (never BoTorch,
XGBoost or MLflow; tests/test_boundaries.py checks it).
"""

from __future__ import annotations

import logging
from typing import Any


def train_loop(config: dict[str, Any]) -> None:
    import ray.train
    from ray.train import Checkpoint

    from autopipe.trial.worker import KEY_RESUME, clean_report, run_worker

    # Ray Train logs every report at INFO; the trial's progress is in Tune's table and MLflow.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    rank = ray.train.get_context().get_world_rank()

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        m = clean_report(metrics)
        if checkpoint_dir is not None and rank == 0:
            ray.train.report(m, checkpoint=Checkpoint.from_directory(checkpoint_dir))
        else:
            ray.train.report(m)

    retry = ray.train.get_checkpoint()
    # A retry after a lost worker (budget.max_failures) continues from the latest checkpoint
    # this trial reported (the SFT model at the SFT/RL boundary); a promotion from the
    # early-stopped trial's checkpoint.
    resume = retry.path if retry is not None else config.get(KEY_RESUME)
    if not resume:
        run_worker(config, report)
        return
    # The checkpoint may live on shared storage or in the cloud: fetch it locally.
    ckpt = retry if retry is not None else Checkpoint(resume)
    with ckpt.as_directory() as local:
        run_worker(config, report, resume_dir=local)
