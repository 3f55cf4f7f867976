"""``autopipe submit``: send a job to a Ray cluster through the Job Submission SDK. The spec
(and a local dataset file it names) travel in the job's working directory; the entry point runs
``autopipe tune`` on the cluster against the running Ray instance."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from autopipe.errors import ClusterError
from autopipe.spec import JobSpec

STAGED_SPEC = "job.yaml"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def stage(spec: JobSpec, staging: Path) -> Path:
    """Write the spec (paths made relative to the working dir) and its data into ``staging``."""
    doc = spec.dump()
    if spec.dataset.path:
        src = spec.resolve(spec.dataset.path)
        if not src.is_file():
            raise ClusterError(
                f"dataset.path {str(src)!r} does not exist, so it cannot be uploaded"
            )
        data_dir = staging / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, data_dir / src.name)
        sibling = src.parent / "test_ground_truth.json"  # PubMedQA's official test split
        if (
            spec.dataset.format in (None, "pubmedqa")
            and src.suffix == ".json"
            and sibling.is_file()
        ):
            shutil.copy2(sibling, data_dir / sibling.name)
        doc["dataset"]["path"] = f"data/{src.name}"
    if spec.model.path:
        # Model directories are not uploaded (size): the path must exist on the cluster's nodes.
        doc["model"]["path"] = str(spec.resolve(spec.model.path))
    # The job's history travels with it (run tables and saved models are small: the shipped
    # post-training history is 0.2-2 MB), so the cluster needs no shared filesystem for it.
    hist = doc["history"]
    for i, rt in enumerate(hist.get("run_tables") or []):
        hist["run_tables"][i] = _upload(
            spec, rt, f"history.run_tables[{i}]", staging, f"history/{i}"
        )
    for key in ("prior", "predictor"):
        if hist.get(key):
            hist[key] = _upload(spec, hist[key], f"history.{key}", staging, f"history/{key}")
    if doc.get("storage") and "://" not in doc["storage"]:
        doc["storage"] = str(spec.resolve(doc["storage"]))
    out = staging / STAGED_SPEC
    out.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return out


def _upload(spec: JobSpec, path: str, field: str, staging: Path, dest: str) -> str:
    """Copy the folder ``path`` (relative to the spec) to ``staging/dest/<name>``; the staged
    spec's path for it."""
    src = spec.resolve(path)
    if not src.is_dir():
        raise ClusterError(f"{field} {str(src)!r} is not a folder, so it cannot be uploaded")
    rel = f"{dest}/{src.name}"
    shutil.copytree(src, staging / rel)
    return rel


# Seconds `submit` keeps retrying while the cluster says its job agent is not up yet.
AGENT_WAIT_S = 60.0


def entrypoint() -> str:
    return f"python -m autopipe tune {STAGED_SPEC} --address auto"


def submit(
    spec: JobSpec,
    spec_path: str,
    address: str,
    wait: bool = False,
    timeout_s: float = 3600.0,
    env: dict[str, str] | None = None,
) -> int:
    from ray.exceptions import RpcError
    from ray.job_submission import JobStatus, JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError, RpcError) as e:
        # RpcError: a HOST:PORT without a scheme is taken as a GCS address, and Ray gives up on
        # an unreachable one after its own timeout
        raise ClusterError(
            f"--address {address!r}: cannot reach the Ray Job API ({_first(e)})"
        ) from None
    from autopipe.tune.cluster import WORKER_ENV

    env_vars: dict[str, Any] = {**WORKER_ENV, **(env or {})}
    with tempfile.TemporaryDirectory(prefix="autopipe-submit-") as d:
        stage(spec, Path(d))
        give_up = time.time() + AGENT_WAIT_S
        while True:
            try:
                job_id = client.submit_job(
                    entrypoint=entrypoint(),
                    runtime_env={"working_dir": d, "env_vars": env_vars},
                    metadata={"autopipe.job": spec.name, "autopipe.spec": Path(spec_path).name},
                )
                break
            except (ConnectionError, RuntimeError, ValueError) as e:
                # A cluster that has just started answers 500 "No available agent to submit
                # job, please try again later" until its job agent is up: wait for it.
                if "try again later" in str(e) and time.time() < give_up:
                    time.sleep(2.0)
                    continue
                raise ClusterError(
                    f"submitting {spec_path} to {address} failed: {_first(e)}"
                ) from None
    print(f"submitted job {spec.name!r} as Ray job {job_id}")
    print(f"  follow:  ray job logs --follow --address {address} {job_id}")
    print(f"  status:  ray job status --address {address} {job_id}")
    print(f"  stop:    ray job stop --address {address} {job_id}")
    print(f"  dashboard: {address}/#/jobs/{job_id}")
    if not wait:
        return 0
    deadline = time.time() + timeout_s
    status = client.get_job_status(job_id)
    while status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        if time.time() > deadline:
            print(f"job {job_id} still {status} after {timeout_s:.0f} s; not waiting longer")
            return 1
        time.sleep(2.0)
        status = client.get_job_status(job_id)
    logs = client.get_job_logs(job_id)
    print("\n".join(logs.splitlines()[-40:]))
    print(f"job {job_id} {status}")
    return 0 if status == JobStatus.SUCCEEDED else 1


def _first(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__
