"""Test environment: Ray and MLflow stay on 127.0.0.1, nothing writes to $HOME, nothing is
downloaded. These variables must be set before Ray is imported."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

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

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AUTOPIPE_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data directory {SHARED} is missing")
    return SHARED


@pytest.fixture
def tmp_store(tmp_path: Path) -> str:
    """A fresh local MLflow store (sqlite) URI."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
