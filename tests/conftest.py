"""Test environment: Ray and MLflow stay on 127.0.0.1, nothing writes to $HOME, nothing is
downloaded. These variables must be set before Ray is imported."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.fixtures.shared import require_shared

_HOME = Path(tempfile.mkdtemp(prefix="autopipe-test-home-"))
ENV = {
    "AUTOPIPE_HOME": str(_HOME / "autopipe"),
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_AUTH_TOKEN_PATH": str(_HOME / "ray_auth_token"),
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}
os.environ.update(ENV)
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture
def shared_dir() -> Path:
    return require_shared()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``job`` start Ray (a real job, a cluster, a Tuner) and take most of the
    suite's time. They run first, the longest first (``job(seconds=...)``: about how long the
    module takes on 2 cores), so that under pytest-xdist (``make test``: ``-n 2 --dist loadscope
    --no-loadscope-reorder``, one module per work unit) the unit tests fill the gaps at the end.
    Stable: the tests of a module stay together and in order."""

    def key(item: pytest.Item) -> tuple[bool, float]:
        mark = item.get_closest_marker("job")
        return mark is None, -float(mark.kwargs.get("seconds", 0)) if mark else 0.0

    items.sort(key=key)


@pytest.fixture
def tmp_store(tmp_path: Path) -> str:
    """A fresh local MLflow store (sqlite) URI."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
