"""MLflow tracking on the driver: one parent run per job, one child run per trial, every
reported metric as a step series. Workers never talk to MLflow; everything goes through here.

Reads are retried with exponential backoff (about 30 s) and then fail with ``TrackingError``. Writes
(run creation, params, metrics, tags, text artifacts, run ends) are tried briefly and, while the
server is unreachable, queued on the driver in the order they were made and flushed, still in that
order, by the next write once the server answers again and by ``close_open`` at the end of the job
(which waits up to ``flush_wait_s`` for the server). A run created during an outage gets a
placeholder id (``autopipe-pending-...``) that callers use as if it were real: queued writes map it
to the real id when the run is created, also inside tag values and text artifacts, and ``resolve``
gives the real id once known. For http(s) URIs MLflow's own HTTP retries (7 with backoff by
default: minutes per call) are set to one attempt with a 10 s timeout unless the user set them.
A server unreachable at job start fails fast (``check``). What is not
handled: an outage that lasts past the end of the job plus ``flush_wait_s`` loses the writes still
queued (an error says how many), and the queue lives in the driver's memory only.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from autopipe import metrics as M
from autopipe.errors import TrackingError
from autopipe.tracking.store import auth_refusal, first_line, open_client, resolve_uri

log = logging.getLogger(__name__)
T = TypeVar("T")

PENDING_PREFIX = "autopipe-pending-"
_PENDING_RE = re.compile(re.escape(PENDING_PREFIX) + r"[0-9a-f]{32}")

FLUSH_WAIT_ENV = "AUTOPIPE_TRACKING_FLUSH_S"


class _Unavailable(TrackingError):
    """The store did not answer (connection refused, timeout, server error); retrying may fix it."""


@dataclass
class _Write:
    what: str
    action: Callable[[], None]  # performs the write; resolves placeholder ids when it runs


class Tracker:
    """A thin wrapper over ``MlflowClient`` for the job's runs: reads retry, writes buffer.

    Not for concurrent use from several processes; calls from several threads are serialised.
    """

    def __init__(
        self,
        uri: str | None = None,
        retries: int = 6,
        backoff_s: float = 0.5,
        write_retries: int = 2,
        flush_wait_s: float | None = None,
        must_exist: bool = False,
    ) -> None:
        self.uri = resolve_uri(uri)
        self.retries = retries
        self.backoff_s = backoff_s
        self.write_retries = write_retries
        if flush_wait_s is None:
            flush_wait_s = _env_float(FLUSH_WAIT_ENV, 300.0)
        self.flush_wait_s = flush_wait_s
        self.client = open_client(self.uri, must_exist=must_exist)
        self.open_runs: set[str] = set()
        self.pending: deque[_Write] = deque()
        self.ids: dict[str, str] = {}  # placeholder -> real run id
        self.dropped = 0  # queued writes the store refused (logged one by one)
        self._retry_at = 0.0  # no flush attempt before this time (monotonic)
        self._cooldown = backoff_s
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        # Ray Tune pickles its callbacks (and this tracker with them) for experiment restore:
        # the lock and the queued writes (closures over the live client) stay with the driver.
        state = self.__dict__.copy()
        state.pop("_lock")
        state["pending"] = deque()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ plumbing
    def _call(self, what: str, fn: Callable[[], T], retries: int | None = None) -> T:
        from mlflow.exceptions import MlflowException

        retries = self.retries if retries is None else retries
        delay = self.backoff_s
        for attempt in range(retries + 1):
            try:
                return fn()
            except (MlflowException, OSError, ConnectionError) as e:
                msg = f"MLflow at {self.uri}: {what} failed: {first_line(e)}"
                refused = auth_refusal(e, self.uri)
                if refused:  # credentials do not get better by retrying
                    raise TrackingError(f"{refused} ({what})") from None
                if _is_client_error(e):
                    raise TrackingError(msg) from None
                if attempt == retries:
                    raise _Unavailable(msg) from None
                log.warning("MLflow %s failed (%s); retrying in %.1fs", what, first_line(e), delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    def _write(self, what: str, action: Callable[[], None]) -> None:
        """Write now if the store answers, else queue behind the writes already waiting."""
        with self._lock:
            if self.pending and time.monotonic() >= self._retry_at:
                self._flush_once()
            if self.pending:
                self.pending.append(_Write(what, action))
                return
            try:
                self._call(what, action, retries=self.write_retries)
            except _Unavailable as e:
                log.warning("%s; queued until the tracking server answers again", e)
                self.pending.append(_Write(what, action))
                self._back_off()

    def _back_off(self) -> None:
        self._retry_at = time.monotonic() + self._cooldown
        self._cooldown = min(self._cooldown * 2, 15.0)

    def _flush_once(self) -> bool:
        """Send queued writes in order, one attempt each; stop at the first that cannot reach the
        store. A write the store refuses (a client error) is logged and dropped. True if empty."""
        from mlflow.exceptions import MlflowException

        n = len(self.pending)
        while self.pending:
            w = self.pending[0]
            try:
                w.action()
            except (MlflowException, OSError, ConnectionError) as e:
                if not _is_client_error(e):
                    self._back_off()
                    return False
                log.error("MLflow at %s refused queued %s: %s", self.uri, w.what, first_line(e))
                self.dropped += 1
            except TrackingError as e:  # e.g. its run could not be created
                log.error("queued %s dropped: %s", w.what, e)
                self.dropped += 1
            self.pending.popleft()
        self._cooldown = self.backoff_s
        if n:
            log.warning("MLflow at %s answers again; wrote %d queued calls", self.uri, n)
        return True

    def flush(self, wait_s: float = 0.0) -> bool:
        """Write every queued call, waiting up to ``wait_s`` for the store. True if none is left."""
        deadline = time.monotonic() + wait_s
        with self._lock:
            if not self.pending or self._flush_once():
                return True
            while (now := time.monotonic()) < deadline:
                time.sleep(max(0.05, min(self._retry_at, deadline) - now))
                if time.monotonic() >= self._retry_at and self._flush_once():
                    return True
            return False

    def resolve(self, run_id: str) -> str:
        """The real run id of ``run_id`` (a placeholder until its run is created)."""
        return self.ids.get(run_id, run_id)

    def _real(self, run_id: str) -> str:
        if run_id.startswith(PENDING_PREFIX):
            real = self.ids.get(run_id)
            if real is None:
                raise TrackingError(f"run {run_id} was never created in MLflow at {self.uri}")
            return real
        return run_id

    def _sub(self, text: str) -> str:
        """Placeholder ids inside a value replaced by real ones (those known)."""
        if PENDING_PREFIX not in text:
            return text
        return _PENDING_RE.sub(lambda m: self.ids.get(m.group(0), m.group(0)), text)

    def check(self) -> None:
        """Fail fast when the store cannot be reached (no retries beyond one)."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.search_experiments(max_results=1)
        except (MlflowException, OSError, ConnectionError) as e:
            refused = auth_refusal(e, self.uri)
            raise TrackingError(
                refused or f"tracking.uri {self.uri!r} cannot be reached: {first_line(e)}"
            ) from None

    def experiment_id(self, name: str, create: bool = True) -> str:
        exp = self._call("get experiment", lambda: self.client.get_experiment_by_name(name))
        if exp is not None and create and exp.lifecycle_stage == "deleted":
            # MLflow finds deleted experiments by name but refuses runs in them
            raise TrackingError(
                f"MLflow experiment {name!r} at {self.uri} is deleted (id {exp.experiment_id}); "
                f"restore it (mlflow experiments restore --experiment-id {exp.experiment_id}) or "
                "set tracking.experiment to another name"
            )
        if exp is not None:
            return exp.experiment_id
        if not create:
            raise TrackingError(f"no MLflow experiment named {name!r} at {self.uri}")
        kwargs: dict[str, Any] = {}
        if self.uri.startswith("sqlite:///"):
            # Keep artifacts beside the local store, not in the current directory.
            db = Path(self.uri[len("sqlite:///") :])
            kwargs["artifact_location"] = (db.parent / "artifacts").resolve().as_uri()
        return self._call(
            "create experiment", lambda: self.client.create_experiment(name, **kwargs)
        )

    # ------------------------------------------------------------------ runs
    def start_run(
        self,
        experiment_id: str,
        name: str,
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
    ) -> str:
        """Create a run; during an outage return a placeholder id (see the module docstring)."""
        t = {k: str(v) for k, v in tags.items()}
        if parent_run_id:
            t["mlflow.parentRunId"] = parent_run_id
        placeholder = PENDING_PREFIX + uuid.uuid4().hex

        def create() -> None:
            real_tags = {k: self._sub(v) for k, v in t.items()}
            run = self.client.create_run(experiment_id, tags=real_tags, run_name=name)
            self.ids[placeholder] = run.info.run_id

        self._write("create run", create)
        run_id = self.ids.get(placeholder, placeholder)
        self.open_runs.add(run_id)
        return run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k), _param_str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            chunk = items[i : i + 100]
            self._write(
                "log params", lambda c=chunk: self.client.log_batch(self._real(run_id), params=c)
            )

    def log_metrics(self, run_id: str, values: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)  # when it was reported, not when a queue is flushed
        ms = [
            Metric(k, float(v), ts, int(step))
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        if ms:
            self._write(
                "log metrics", lambda: self.client.log_batch(self._real(run_id), metrics=ms)
            )

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [(k, str(v)[:5000]) for k, v in tags.items()]
        if items:
            self._write(
                "set tags",
                lambda: self.client.log_batch(
                    self._real(run_id), tags=[RunTag(k, self._sub(v)) for k, v in items]
                ),
            )

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._write(
            "log artifact",
            lambda: self.client.log_text(self._real(run_id), self._sub(text), artifact_file),
        )

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._write(
            "end run", lambda: self.client.set_terminated(self._real(run_id), status=status)
        )
        self.open_runs.discard(run_id)

    def reopen_run(self, run_id: str) -> None:
        """Mark an ended (or orphaned) run RUNNING again and track it as open (``--resume``)."""
        self._write(
            "reopen run", lambda: self.client.update_run(self._real(run_id), status="RUNNING")
        )
        self.open_runs.add(run_id)

    def delete_run(self, run_id: str) -> None:
        self._write("delete run", lambda: self.client.delete_run(self._real(run_id)))
        self.open_runs.discard(run_id)

    def metric_history(self, run_id: str, key: str) -> list[Any]:
        return self._call(
            "metric history", lambda: self.client.get_metric_history(self._real(run_id), key)
        )

    def close_open(
        self, status: str = "KILLED", tags: Mapping[str, str] | None = None
    ) -> list[str]:
        """End every run this tracker opened and did not end (Ctrl-C, crashes), then write every
        queued call, waiting up to ``flush_wait_s`` for an unreachable store."""
        closed = []
        for run_id in list(self.open_runs):
            try:
                if tags:
                    self.set_tags(run_id, tags)
                self.end_run(run_id, status)
                closed.append(run_id)
            except TrackingError as e:
                log.error("could not close MLflow run %s: %s", run_id, e)
        if self.pending:
            log.warning(
                "waiting up to %.0fs for MLflow at %s to write %d queued calls",
                self.flush_wait_s,
                self.uri,
                len(self.pending),
            )
        if not self.flush(self.flush_wait_s):
            log.error(
                "MLflow at %s did not answer for %.0fs; %d queued calls were not written",
                self.uri,
                self.flush_wait_s,
                len(self.pending),
            )
        return closed

    # ------------------------------------------------------------------ reading
    def find_job_runs(self, job: str) -> list[Any]:
        """Parent runs of job ``job``, newest first, in any experiment (``tracking.experiment``
        may differ from the job name, and one experiment may hold several jobs)."""
        if "'" in job:
            raise TrackingError(f"--job must not contain quotes, but got {job!r}")
        self.flush()  # reads see this tracker's queued writes when the store answers
        exps = self._call(
            "search experiments", lambda: self.client.search_experiments(max_results=1000)
        )
        if not exps:
            return []
        return self._call(
            "search runs",
            lambda: self.client.search_runs(
                [e.experiment_id for e in exps],
                filter_string=f"tags.`{M.TAG_ROLE}` = 'job' and tags.`{M.TAG_JOB}` = '{job}'",
                order_by=["attributes.start_time DESC"],
                max_results=1000,
            ),
        )

    def child_runs(self, parent_run_id: str, experiment_id: str) -> list[Any]:
        self.flush()
        parent = self.resolve(parent_run_id)
        return self._call(
            "search runs",
            lambda: self.client.search_runs(
                [experiment_id],
                filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
                max_results=50000,
            ),
        )

    def run_exists(self, run_id: str) -> bool:
        """Whether the store holds a run with this id (a malformed id counts as none); a store
        that does not answer is a :class:`TrackingError`, not a missing run."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(self.resolve(run_id))
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return False
            raise TrackingError(
                f"tracking URI {self.uri!r}: could not look up run {run_id}: {first_line(e)}"
            ) from None
        return True

    def read_text(self, run_id: str, artifact_file: str) -> str | None:
        import tempfile

        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory() as d:
            try:
                p = self.client.download_artifacts(self.resolve(run_id), artifact_file, d)
            except (MlflowException, OSError):
                return None
            return Path(p).read_text(encoding="utf-8")


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        raise TrackingError(f"{name} must be a number of seconds, but got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise TrackingError(f"{name} must be a number of seconds >= 0, but got {raw!r}")
    return value


def _param_str(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)[:6000]


def _is_client_error(e: BaseException) -> bool:
    """Errors that retrying cannot fix (bad request, not found)."""
    code = getattr(e, "error_code", "")
    return code in (
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "BAD_REQUEST",
        "INVALID_STATE",
    )


def metrics_of(result: Mapping[str, Any], names: Iterable[str]) -> dict[str, float]:
    return {k: result[k] for k in names if k in result}
