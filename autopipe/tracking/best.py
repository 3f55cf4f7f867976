"""A job's answer read back from MLflow: the ``best_config.yaml`` its parent run recorded."""

from __future__ import annotations

from typing import Any

import yaml

from autopipe import metrics as M
from autopipe.errors import TrackingError
from autopipe.tracking.client import Tracker


def read_best(
    tracker: Tracker, job: str | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """The best configuration of a job (its latest run with one) or of a parent run id."""

    if run_id:
        text = tracker.read_text(run_id, M.ARTIFACT_BEST)
        if text is None and not tracker.run_exists(run_id):
            raise TrackingError(
                f"--run-id {run_id}: no such run in the tracking store at {tracker.uri}"
            )
        if text is None:
            raise TrackingError(
                f"--run-id {run_id}: the run has no {M.ARTIFACT_BEST} (unfinished or not a job run)"
            )
        return yaml.safe_load(text)
    assert job is not None
    runs = tracker.find_job_runs(job)
    if not runs:
        raise TrackingError(
            f"--job {job!r}: no run of this job in the tracking store at {tracker.uri}"
        )
    for r in runs:
        text = tracker.read_text(r.info.run_id, M.ARTIFACT_BEST)
        if text is not None:
            doc = yaml.safe_load(text)
            doc.setdefault("parent_run_id", r.info.run_id)
            return doc
    raise TrackingError(f"--job {job!r}: no run of this job has finished a trial yet")
