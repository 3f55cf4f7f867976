"""Where the MLflow store is: the default local store, URI resolution, and opening a client
with one-line errors (a plain path, a missing SQLite file, an unreachable server). It holds no
run bookkeeping (that is :mod:`autopipe.tracking.client`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from autopipe.errors import TrackingError

# MLflow's own HTTP layer retries 7 times with backoff factor 2 by default (minutes per call);
# the Tracker retries and buffers itself, so each HTTP call is one bounded attempt.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def data_dir() -> Path:
    """Per-user data directory of AutoPipe (the default MLflow store lives here)."""
    root = os.environ.get("AUTOPIPE_HOME")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "autopipe"


def default_tracking_uri() -> str:
    d = data_dir()
    d.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{d / 'mlflow.db'}"


def resolve_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def open_client(uri: str | None, must_exist: bool = False, fail_fast: bool = True) -> Any:
    """An ``MlflowClient`` for ``uri`` (resolved as :func:`resolve_uri`), with the fail-fast HTTP
    defaults for a remote store (a user's own MLFLOW_HTTP_* settings win). A store that cannot be
    opened (an unknown scheme, a file that is not a database, a plain folder) is a one-line
    :class:`TrackingError` naming the URI. With ``must_exist`` (readers), a local SQLite store
    must already exist: MLflow would otherwise create an empty database there.

    ``fail_fast=False`` (readers, which have no retry of their own): MLflow keeps its own HTTP
    retries, and a remote store is probed once (``/health``, 10 s) so that an unreachable one is
    still a quick error rather than minutes of retries."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = resolve_uri(uri)
    if ":" not in uri:  # MLflow 3's folder store is deprecated and errors out half-quoted
        raise TrackingError(
            f"tracking URI {uri!r} is a plain path; expected sqlite:///PATH.db or "
            "http(s)://HOST:PORT"
        )
    if must_exist and uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if not db.is_file():
            raise TrackingError(
                f"tracking URI {uri!r}: no MLflow store at {db}; expected the database a job "
                "wrote (autopipe tune prints its tracking URI)"
            )
    if uri.startswith(("http://", "https://")):
        if fail_fast:
            for key, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
        else:
            _probe_http(uri)
    from mlflow.tracking import MlflowClient

    # A new local store logs its schema set-up (a dozen INFO lines of MLflow and alembic):
    # nothing a user acts on.
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)

    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as e:  # noqa: BLE001 - MLflow, SQLAlchemy and OS errors all mean the same here
        raise TrackingError(
            f"tracking URI {uri!r}: cannot open the MLflow store ({first_line(e)[:160]}); "
            "expected sqlite:///PATH.db or http(s)://HOST:PORT"
        ) from None


def _probe_http(uri: str, timeout_s: float = 10.0) -> None:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # something answers (a proxy, an auth wall): MLflow's own calls will say more
    except (OSError, ValueError) as e:
        raise TrackingError(
            f"tracking URI {uri!r} cannot be reached: {getattr(e, 'reason', None) or e}"
        ) from None


def first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else type(e).__name__


def auth_refusal(e: BaseException, uri: str) -> str | None:
    """The one line for a tracking server that refused this client (HTTP 401 or 403), naming
    what to set; ``None`` for any other error."""
    text = str(e)
    code = next((c for c in ("401", "403") if f"error code {c}" in text), None)
    if code is None:
        return None
    has = os.environ.get("MLFLOW_TRACKING_USERNAME") or os.environ.get("MLFLOW_TRACKING_TOKEN")
    if code == "403":
        return (
            f"tracking.uri {uri!r} refused this client (HTTP 403): the user in "
            "MLFLOW_TRACKING_USERNAME may not write there; give it EDIT permission on the "
            "experiment, or use another user"
        )
    if has:
        return (
            f"tracking.uri {uri!r} refused the credentials (HTTP 401): check "
            "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
        )
    return (
        f"tracking.uri {uri!r} requires credentials (HTTP 401): set MLFLOW_TRACKING_USERNAME "
        "and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
    )
