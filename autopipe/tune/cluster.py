"""Reaching Ray: the embedded local instance (127.0.0.1 only) or an existing cluster, the
environment every Ray worker gets, and the checks that fail fast before anything waits (an
address where nothing listens, a trial no node can host). It starts no trial."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from autopipe.errors import ClusterError
from autopipe.spec import JobSpec

log = logging.getLogger(__name__)

# Environment every Ray worker gets: quiet, offline, one thread pool per worker.
WORKER_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "PYTHONWARNINGS": "ignore",
    "RAY_TRAIN_V2_ENABLED": "1",
    # Ray Train's print patch ignores print(file=...), which makes Ray's own dis.dis(file=buf)
    # spill bytecode listings into the trial logs.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    # Train's controller polls its workers at this interval and every ray.train.report waits
    # for that poll: the 2 s default made reporting dominate tiny trials.
    # NOTE: 0.25 s was chosen by hand; benchmarks/overhead.py measures the per-trial overhead
    # that results (benchmarks/README.md).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    # Train's controller gives a worker group 60 s to start, then fails the attempt: on a loaded
    # 2-core machine (a demo beside another job) worker processes took longer and every attempt
    # timed out. A user's own setting in the driver's environment wins (worker_env).
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
}


def worker_env(spec: JobSpec) -> dict[str, str]:
    threads = spec.resources.threads_per_worker or max(1, int(spec.resources.cpus_per_worker))
    env = dict(WORKER_ENV)
    env["OMP_NUM_THREADS"] = str(threads)
    for key in ("TORCH_EXTENSIONS_DIR", "AUTOPIPE_FAULT", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def local_ray_env() -> None:
    """Environment for an embedded Ray that listens on 127.0.0.1 only.

    Ray reads these when it is imported, so the CLI calls this before importing Ray.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


def init_ray(spec: JobSpec, address: str | None) -> bool:
    """Connect to ``address`` or start an embedded local Ray bound to 127.0.0.1.

    Returns whether this call started Ray (and so should shut it down).
    """
    import ray

    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": worker_env(spec)}
    if address:
        # Under `autopipe submit` the job's runtime env already sets these variables: let the
        # driver's identical settings merge with it instead of failing on the overlap.
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        try:
            ray.init(
                address=address,
                runtime_env=runtime_env,
                log_to_driver=True,
                logging_level=logging.WARNING,
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(
                f"--address {address!r}: cannot connect to a Ray cluster ({e})"
            ) from None
        return True
    # Embedded: everything on loopback (see local_ray_env), no token auth for a single-user
    # local instance.
    local_ray_env()
    # Ray Train's PlacementGroupCleaner (and any State API call in a worker) finds "its" cluster
    # by auto-detection, which fails when another Ray runs on this machine (e.g. a history
    # generation beside the demo): the cleaner then dies, every early-stopped trial leaks its
    # placement group, and once they hold all CPUs no trial can start. So the workers are told
    # this instance's API server, on a dashboard port chosen here.
    env_vars = runtime_env["env_vars"]
    for attempt in range(3):
        dash_port = free_port()
        api = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dash_port}"}
        try:
            ray.init(
                # "local" always starts a new instance: never attach to another Ray here.
                address="local",
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                dashboard_port=dash_port,
                runtime_env={**runtime_env, "env_vars": {**env_vars, **api}},
                logging_level=logging.WARNING,
                log_to_driver=True,
                configure_logging=True,
                _node_ip_address="127.0.0.1",
            )
            break
        except (ValueError, RuntimeError, ConnectionError) as e:
            # Ray makes no retry on a given dashboard port: something took the free port we
            # picked before Ray bound it. Start over on another one.
            if ray.is_initialized():
                ray.shutdown()
            if "port" not in str(e).lower() or attempt == 2:
                raise ClusterError(f"could not start the embedded Ray ({e})") from None
            log.warning("the embedded Ray's dashboard port %d was taken; retrying", dash_port)
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Seconds `autopipe tune --address HOST:PORT` waits for a TCP connection before giving up
# (ray.init itself retries an unreachable GCS for minutes).
ADDRESS_PROBE_S = 5.0


def check_address(address: str | None, timeout_s: float = ADDRESS_PROBE_S) -> None:
    """Fail fast on ``--address HOST:PORT`` where nothing listens: one TCP connection attempt.

    ``auto``, ``local`` and URIs (``ray://HOST:PORT``) are left to ``ray.init``.
    """
    import socket

    if not address or address in ("auto", "local") or "://" in address:
        return
    if address.startswith("["):  # [IPv6]:PORT
        host, sep, port = address[1:].partition("]:")
        if not sep:
            return
    else:
        host, _, port = address.rpartition(":")
        if not host or ":" in host:
            return  # no port, or a bare IPv6 address: Ray says what is wrong
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(
            f"--address {address}: the port must be a number in 1..65535, but got {port!r}"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except socket.gaierror:
        raise ClusterError(
            f"--address {address}: no Ray cluster reachable (cannot resolve host {host!r})"
        ) from None
    except TimeoutError:
        raise ClusterError(
            f"--address {address}: no Ray cluster reachable (no answer in {timeout_s:g} s)"
        ) from None
    except ConnectionRefusedError:
        raise ClusterError(
            f"--address {address}: no Ray cluster reachable (connection refused)"
        ) from None
    except OSError as e:
        raise ClusterError(
            f"--address {address}: no Ray cluster reachable ({e.strerror or e})"
        ) from None


def check_resources(spec: JobSpec) -> None:
    """Reject trials that no node can host, before anything waits forever."""
    import ray

    need_cpu = spec.resources.cpus_per_worker
    need_gpu = spec.resources.gpus_per_worker
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    fits = [
        n
        for n in nodes
        if n["Resources"].get("CPU", 0) >= need_cpu and n["Resources"].get("GPU", 0) >= need_gpu
    ]
    total_cpu = sum(n["Resources"].get("CPU", 0) for n in nodes)
    total_gpu = sum(n["Resources"].get("GPU", 0) for n in nodes)
    w = spec.resources.workers_per_trial
    if len(nodes) > 1 and not spec.storage:
        raise ClusterError(
            "storage must name a path shared by every node (or a URI such as s3://...) on a "
            f"cluster of {len(nodes)} nodes, but got none (checkpoints would stay on one node)"
        )
    if not fits:
        raise ClusterError(
            f"resources: a worker needs {need_cpu:g} CPU and {need_gpu:g} GPU, but no node of the "
            f"cluster has that much (largest: "
            f"{max((n['Resources'].get('CPU', 0) for n in nodes), default=0):g} CPU, "
            f"{max((n['Resources'].get('GPU', 0) for n in nodes), default=0):g} GPU)"
        )
    if total_cpu < w * need_cpu or total_gpu < w * need_gpu:
        raise ClusterError(
            f"resources: a trial needs {w} workers x ({need_cpu:g} CPU, {need_gpu:g} GPU), but the "
            f"cluster has {total_cpu:g} CPU and {total_gpu:g} GPU in all"
        )


@contextlib.contextmanager
def ray_session(spec: JobSpec, address: str | None = None) -> Iterator[None]:
    """Ray for several jobs in a row (the history generator): connected or started once, the
    resources checked, and shut down at the end if this call started it (``run_job`` leaves a
    Ray it did not start running)."""
    import ray

    started = init_ray(spec, address)
    try:
        check_resources(spec)
        yield
    finally:
        if started:
            ray.shutdown()
