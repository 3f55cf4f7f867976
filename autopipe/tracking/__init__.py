"""MLflow tracking on the driver: where the store is (:mod:`.store`), the client that records jobs
and trials and survives outages (:mod:`.client`), and reading a job's answer back (:mod:`.best`).
Trial workers never import this package."""

from __future__ import annotations

from autopipe.tracking.client import PENDING_PREFIX, Tracker, metrics_of
from autopipe.tracking.store import data_dir, default_tracking_uri, open_client, resolve_uri

__all__ = [
    "PENDING_PREFIX",
    "Tracker",
    "data_dir",
    "default_tracking_uri",
    "metrics_of",
    "open_client",
    "resolve_uri",
]
