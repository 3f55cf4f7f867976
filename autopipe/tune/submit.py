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
from autopipe.tune import address as A

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
# Seconds `submit` (without --wait) watches a job that has started, so that a cluster whose
# Python cannot run AutoPipe is one line here, not a FAILED job found later.
START_WATCH_S = 8.0
START_GIVE_UP_S = 120.0  # ... and how long it waits for the job to start at all


def entrypoint() -> str:
    return f"python -m autopipe tune {STAGED_SPEC} --address auto"


def package_dir() -> str:
    """This AutoPipe's package folder: shipped with every job (``py_modules``), so a cluster
    whose Python has AutoPipe's dependencies but not AutoPipe itself runs it."""
    import autopipe

    return str(Path(autopipe.__file__).resolve().parent)


def job_api_url(address: str) -> str:
    """The dashboard URL ``submit --address`` means: ``http(s)://HOST:PORT`` as given, or
    ``HOST:PORT`` when an HTTP server answers there (anything else is a one-line error: a GCS
    or Ray Client address is `autopipe tune --address`'s)."""
    a = A.parse(address)
    if a.kind in ("auto", "client"):
        raise ClusterError(
            f"--address {address}: `autopipe submit` needs the dashboard's Job API address, "
            "http://HEAD:8265 (auto and ray:// addresses are for `autopipe tune --address`)"
        )
    A.check_listening(a)
    if a.kind == "http":
        return address.rstrip("/")
    if not A.speaks_http(a.host, a.port):
        raise ClusterError(
            f"--address {address}: no Ray dashboard (Job API) answers over HTTP at "
            f"{a.hostport}; `autopipe submit` needs the dashboard address, e.g. "
            "http://HEAD:8265 (HOST:6379 is the GCS, for `autopipe tune --address`)"
        )
    return f"http://{a.hostport}"


def submit(
    spec: JobSpec,
    spec_path: str,
    address: str,
    wait: bool = False,
    timeout_s: float = 3600.0,
    env: dict[str, str] | None = None,
) -> int:
    url = job_api_url(address)
    A.client_env(A.parse(url))  # before Ray is imported: a token, if the user gave one
    from ray.exceptions import AuthenticationError, RpcError
    from ray.job_submission import JobStatus, JobSubmissionClient

    from autopipe.tune.cluster import CONNECT_TIMEOUT_S, WORKER_ENV, auth_hint, within

    what = f"--address {address}: cannot reach the Ray Job API at {url}"
    try:
        client = within(CONNECT_TIMEOUT_S, what, lambda: JobSubmissionClient(url))
    except AuthenticationError:
        raise ClusterError(f"--address {address}: authentication refused: {auth_hint()}") from None
    except (ConnectionError, RuntimeError, ValueError, RpcError) as e:
        raise ClusterError(f"{what} ({_first(e)})") from None
    env_vars: dict[str, Any] = {**WORKER_ENV, **(env or {})}
    with tempfile.TemporaryDirectory(prefix="autopipe-submit-") as d:
        stage(spec, Path(d))
        give_up = time.time() + AGENT_WAIT_S
        while True:
            try:
                job_id = client.submit_job(
                    entrypoint=entrypoint(),
                    runtime_env={
                        "working_dir": d,
                        "py_modules": [package_dir()],
                        "env_vars": env_vars,
                    },
                    metadata={"autopipe.job": spec.name, "autopipe.spec": Path(spec_path).name},
                )
                break
            except (ConnectionError, RuntimeError, ValueError) as e:
                # A cluster that has just started answers 500 "No available agent to submit
                # job, please try again later" until its job agent is up: wait for it.
                if "try again later" in str(e) and time.time() < give_up:
                    time.sleep(2.0)
                    continue
                raise ClusterError(f"submitting {spec_path} to {url} failed: {_first(e)}") from None
    print(f"submitted job {spec.name!r} as Ray job {job_id}")
    print(f"  follow:  ray job logs --follow --address {url} {job_id}")
    print(f"  status:  ray job status --address {url} {job_id}")
    print(f"  stop:    ray job stop --address {url} {job_id}")
    print(f"  dashboard: {url}/#/jobs/{job_id}")
    if not wait:
        _watch_start(client, job_id, url)
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
    if status == JobStatus.FAILED:
        _raise_if_environment(logs, url)
    return 0 if status == JobStatus.SUCCEEDED else 1


def _watch_start(client: Any, job_id: str, url: str) -> None:
    """Watch a just-submitted job until it has run :data:`START_WATCH_S` (or ended): a job that
    fails at once because the cluster's Python lacks AutoPipe's dependencies is a one-line
    error naming what to install."""
    from ray.job_submission import JobStatus

    started = None
    give_up = time.time() + START_GIVE_UP_S
    while time.time() < give_up:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.STOPPED):
            return
        if status == JobStatus.FAILED:
            logs = client.get_job_logs(job_id)
            _raise_if_environment(logs, url)
            raise ClusterError(
                f"Ray job {job_id} failed at once: {_last_error(logs)} (ray job logs --address "
                f"{url} {job_id})"
            )
        if status == JobStatus.RUNNING:
            started = started or time.time()
            if time.time() - started >= START_WATCH_S:
                return
        time.sleep(1.0)


def _raise_if_environment(logs: str, url: str) -> None:
    """A job that died because the cluster's ``python`` cannot import what AutoPipe needs."""
    last = _last_error(logs)
    if "ModuleNotFoundError" in last or "No module named" in last:
        raise ClusterError(
            f"the cluster at {url} cannot run AutoPipe ({last}): start its Ray head and workers "
            "from a Python with AutoPipe's dependencies on PATH (pip install autopipe, or the "
            "image cluster/Dockerfile builds)"
        )


def _last_error(logs: str) -> str:
    lines = [x.strip() for x in logs.splitlines() if x.strip()]
    errors = [x for x in lines if "Error" in x or "error:" in x]
    return (errors or lines or ["no output"])[-1][:300]


def _first(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__
