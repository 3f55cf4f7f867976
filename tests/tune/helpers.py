"""Shared helpers for tests that run real jobs in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def write_spec(path: Path, name: str, store: str, storage: Path, **overrides: object) -> Path:
    spec: dict = {
        "name": name,
        "dataset": {"task": "sort", "n_train": 200, "n_rl": 32, "n_eval": 24},
        "model": {"name": "tiny-llama", "max_length": 24, "max_completion_length": 8},
        "space": {
            "sft": {"lr": 3.0e-3, "steps": 24, "batch_size": {"choices": [8, 16, 32]}},
            "rl": {
                "algorithm": "grpo",
                "lr": 5.0e-5,
                "beta": 0.02,
                "num_generations": 4,
                "batch_size": 8,
                "steps": 2,
            },
        },
        "budget": {"max_trials": 3, "max_concurrent": 2},
        "search": {"algorithm": "grid"},
        "eval": {"samples": 2},
        "tracking": {"uri": store},
        "storage": str(storage),
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            spec[section][field] = value
        else:
            spec[section] = value
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def autopipe_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "autopipe", *args]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        autopipe_cmd(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    """Poll ``url`` until it answers; fail if ``proc`` exits or ``timeout`` passes."""
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert proc.poll() is None, f"{what} exited"
            assert time.time() < deadline, f"{what} did not come up"
            time.sleep(1)


def start_mlflow_server(port: int, d: Path) -> subprocess.Popen:
    """A real ``mlflow server`` on 127.0.0.1:``port`` with a sqlite store in ``d``, in its own
    process group (stop it with :func:`stop_mlflow_server`); returns once it answers."""
    mlflow = str(Path(sys.executable).parent / "mlflow")
    proc = subprocess.Popen(
        [
            mlflow,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{d / 'server.db'}",
            "--artifacts-destination",
            str(d / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    wait_http(f"http://127.0.0.1:{port}/health", proc, "mlflow server")
    return proc


def stop_mlflow_server(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop the server and its workers by process group; SIGKILL if SIGTERM does not do it."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
