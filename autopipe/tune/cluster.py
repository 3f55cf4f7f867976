"""Reaching Ray: the embedded local instance (127.0.0.1 only) or an existing cluster, the
environment every Ray worker gets, and the checks that fail fast before anything waits (an
address where nothing listens, a trial no node can host). It starts no trial."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autopipe.errors import ClusterError, one_line
from autopipe.spec import JobSpec
from autopipe.tracking import data_dir
from autopipe.tune import address as A

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


# Attempts to start the embedded Ray: a taken dashboard port or a node slower than Ray's 30 s to
# register (a loaded machine) is retried, each attempt with Ray's whole start-up wait again.
EMBEDDED_ATTEMPTS = 3


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
        kind = A.parse(address).kind
        if kind in ("gcs", "auto"):
            probe_gcs(address)  # then ray.init has a GCS that answers and accepts this client

        def connect() -> None:
            ray.init(
                address=address,
                runtime_env=runtime_env,
                log_to_driver=True,
                logging_level=logging.WARNING,
            )

        try:
            if kind == "client":
                # A Ray Client server that does not answer keeps ray.init retrying for
                # minutes: connect on a thread (whose "no SIGTERM handler" warning is moot for
                # a client driver) and give up after CONNECT_TIMEOUT_S.
                with _without(logging.getLogger("ray._private.worker"), "SIGTERM handler"):
                    what = f"--address {address}: cannot connect to a Ray cluster"
                    within(CONNECT_TIMEOUT_S, what, connect)
            else:
                connect()
        except ClusterError:
            raise
        except Exception as e:  # noqa: BLE001 - ray.init raises many kinds for one cause
            from ray.exceptions import AuthenticationError

            if isinstance(e, AuthenticationError):
                raise ClusterError(
                    f"--address {address}: authentication refused: {auth_hint()}"
                ) from None
            raise ClusterError(
                f"--address {address}: cannot connect to a Ray cluster ({one_line(e)})"
            ) from None
        return True
    # Embedded: everything on loopback (see local_ray_env), no token auth for a single-user
    # local instance.
    local_ray_env()
    clean_stale_sessions()
    # Ray Train's PlacementGroupCleaner (and any State API call in a worker) finds "its" cluster
    # by auto-detection, which fails when another Ray runs on this machine (e.g. a history
    # generation beside the demo): the cleaner then dies, every early-stopped trial leaks its
    # placement group, and once they hold all CPUs no trial can start. So the workers are told
    # this instance's API server, on a dashboard port chosen here.
    env_vars = runtime_env["env_vars"]
    for attempt in range(1, EMBEDDED_ATTEMPTS + 1):
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
            _record_session()
            return True
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception on a slow start-up
            if ray.is_initialized():
                ray.shutdown()
            text = str(e).lower()
            # Ray makes no retry on a given dashboard port (something took the free port we
            # picked before Ray bound it), and gives a node 30 s to register with its GCS (a
            # loaded machine can take longer): both are worth another attempt.
            retry = "port" in text or "timed out during startup" in text
            if not retry or attempt == EMBEDDED_ATTEMPTS:
                raise ClusterError(
                    f"could not start the embedded Ray after {attempt} attempt"
                    f"{'s' if attempt > 1 else ''} ({one_line(e)})"
                ) from None
            log.warning(
                "the embedded Ray did not start (%s); retrying (attempt %d of %d)",
                one_line(e),
                attempt + 1,
                EMBEDDED_ATTEMPTS,
            )
    return True  # not reached


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Seconds each step of connecting to an existing cluster (the GCS handshake, ray.init) may take
# before it is one line naming the cause, so that a command ends within about 10 s (ray.init
# itself retries a silent GCS or Ray Client server for minutes).
CONNECT_TIMEOUT_S = 7.0


def check_address(address: str | None) -> None:
    """What can be checked of ``autopipe tune --address`` before Ray is imported: its form, its
    kind (an ``http://`` address is the dashboard, which ``submit`` takes), that something
    listens there, and that it is not an HTTP server (the dashboard's port given for the GCS's).
    Each is a one-line :class:`ClusterError`; ``auto`` is checked once Ray can look it up."""
    if not address or address == "local":
        return
    a = A.parse(address)
    if a.kind == "http":
        raise ClusterError(
            f"--address {address}: that is the Ray dashboard's Job API, which `autopipe submit "
            "--address` takes; `autopipe tune --address` takes the GCS address HOST:PORT (6379 "
            "by default), auto, or ray://HOST:10001"
        )
    A.check_listening(a)
    if a.kind == "gcs" and A.speaks_http(a.host, a.port):
        raise ClusterError(
            f"--address {address}: an HTTP server answers there (the Ray dashboard?), not a Ray "
            "GCS; give the head's GCS port (6379 by default), or submit with `autopipe submit "
            f"--address http://{a.hostport}`"
        )


def within(seconds: float, what: str, fn: Any) -> Any:
    """``fn()`` on a daemon thread, its result or its exception; a :class:`ClusterError` naming
    ``what`` if it has not returned in ``seconds`` (Ray's connection calls retry for minutes)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, daemon=True, name="autopipe-connect")
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise ClusterError(f"{what} (no answer in {seconds:g} s)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


@contextlib.contextmanager
def native_stderr_to_devnull() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside (what C++ libraries write there too)."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def _without(logger: logging.Logger, text: str) -> Iterator[None]:
    """``logger`` drops the records whose message contains ``text`` inside."""

    def keep(record: logging.LogRecord) -> bool:
        return text not in record.getMessage()

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def auth_hint() -> str:
    """What to do about a cluster that refused this client's token (or its lack of one)."""
    source = A.token_source()
    if source:
        return f"the token in {source} is not the cluster's"
    missing = os.environ.get("RAY_AUTH_TOKEN_PATH")
    where = f" (RAY_AUTH_TOKEN_PATH names {missing}, which does not exist)" if missing else ""
    return (
        "the cluster requires a token: set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH to a file "
        f"holding it){where}"
    )


def probe_gcs(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Ray's own handshake with the GCS at ``address`` (``HOST:PORT`` or ``auto``): one line for
    authentication refused, a Ray version other than this client's, or a server that does not
    answer as a GCS."""
    import ray
    from ray.exceptions import AuthenticationError

    raw = address
    if address == "auto":
        found = A.auto_address()
        if not found:
            raise ClusterError(
                "--address auto: no Ray cluster runs on this machine (no RAY_ADDRESS and no "
                "`ray start` here); give the head's address, HOST:6379"
            )
        address = found

    def handshake() -> dict[str, Any] | None:
        import json

        from ray._common.usage.usage_constants import CLUSTER_METADATA_KEY
        from ray._private.ray_constants import KV_NAMESPACE_CLUSTER
        from ray._raylet import GcsClient

        # NOTE: private Ray API as of 2.60 (pinned); `ray healthcheck` makes the same calls
        client = GcsClient(address=address)
        raw_meta = client.internal_kv_get(CLUSTER_METADATA_KEY, namespace=KV_NAMESPACE_CLUSTER)
        return json.loads(raw_meta) if raw_meta else None

    what = f"--address {raw}: no Ray GCS answered at {address}"
    try:
        # Ray's C++ client logs every refused or unanswered attempt to stderr: this probe's
        # outcome is the one line the user gets
        with native_stderr_to_devnull():
            meta = within(timeout_s, what, handshake)
    except AuthenticationError:
        raise ClusterError(f"--address {raw}: authentication refused: {auth_hint()}") from None
    except ClusterError:
        raise
    except Exception as e:  # noqa: BLE001 - Ray's RPC errors have no common base class
        raise ClusterError(
            f"--address {raw}: cannot connect to a Ray cluster ({one_line(e)})"
        ) from None
    theirs = (meta or {}).get("ray_version")
    if theirs and theirs != ray.__version__:
        raise ClusterError(
            f"--address {raw}: version mismatch: the cluster runs Ray {theirs}, this client Ray "
            f"{ray.__version__}; install ray=={theirs} here (or run the job on the cluster "
            "with `autopipe submit`)"
        )


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

    started = init_ray(spec, address)
    try:
        check_resources(spec)
        yield
    finally:
        if started:
            shutdown_ray()


# ---------------------------------------------------------------- embedded Rays left behind
# An embedded Ray belongs to its driver; when the driver is SIGKILLed (or its machine session
# ends) Ray's agents outlive it for about a minute and hold their ports. Each driver records its
# Ray's session here; the next embedded start kills what a dead driver left.
def _sessions_dir() -> Path:
    return data_dir() / "ray_sessions"


def _proc_start(pid: int) -> str | None:
    """A process's start time (field 22 of /proc/PID/stat), to tell a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _record_session() -> None:
    import ray

    node = getattr(ray._private.worker, "_global_node", None)
    if node is None or not Path("/proc").is_dir():
        return
    me = os.getpid()
    record = {"pid": me, "start": _proc_start(me), "session_dir": node.get_session_dir_path()}
    try:
        _sessions_dir().mkdir(parents=True, exist_ok=True)
        (_sessions_dir() / f"{me}.json").write_text(json.dumps(record))
    except OSError as e:  # a read-only data dir: nothing to clean up after, nothing else lost
        log.debug("cannot record the embedded Ray's session: %s", e)


def shutdown_ray() -> None:
    """``ray.shutdown()`` of the embedded Ray this process started, and its session record."""
    import ray

    ray.shutdown()
    with contextlib.suppress(OSError):
        (_sessions_dir() / f"{os.getpid()}.json").unlink()


def clean_stale_sessions() -> int:
    """Kill the processes of embedded Rays whose driver is gone; returns how many were killed."""
    killed = 0
    for f in sorted(_sessions_dir().glob("*.json")) if _sessions_dir().is_dir() else []:
        try:
            record = json.loads(f.read_text())
            pid, start, session = int(record["pid"]), record["start"], str(record["session_dir"])
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                f.unlink()
            continue
        if pid == os.getpid() or (_proc_start(pid) is not None and _proc_start(pid) == start):
            continue  # its driver runs (another job on this machine)
        n = _kill_session(session)
        killed += n
        if n:
            log.warning(
                "killed %d Ray process%s left by a job whose driver died (pid %d, %s)",
                n,
                "es" * (n != 1),
                pid,
                session,
            )
        with contextlib.suppress(OSError):
            f.unlink()
    return killed


def session_processes(session_dir: str) -> set[int]:
    """The processes of a Ray session: those named after it on their command line, those with a
    file open in it (agents and workers rename themselves: ray::DashboardAgent), and their
    descendants; this process excluded."""
    name = os.path.basename(session_dir.rstrip("/"))
    if not name.startswith("session_") or not Path("/proc").is_dir():
        return set()
    parents: dict[int, int] = {}
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
                parents[pid] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if name.encode() in f.read():
                    found.add(pid)
                    continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(session_dir):
                        found.add(pid)
                        break
        except (OSError, ValueError, IndexError):
            continue
    grew = True
    while grew:  # and everything below them
        more = {p for p, pp in parents.items() if pp in found and p not in found}
        found |= more
        grew = bool(more)
    found.discard(os.getpid())
    return found


def _kill_session(session_dir: str) -> int:
    """SIGKILL every process of a Ray session; returns how many."""
    import signal

    n = 0
    for pid in session_processes(session_dir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            n += 1
    return n
