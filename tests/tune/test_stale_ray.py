"""An embedded Ray whose driver was SIGKILLed: Ray's processes outlive the driver (its agents
for about half a minute, holding their ports); the next embedded start kills them at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autopipe.tune import cluster

pytestmark = pytest.mark.job(seconds=15)  # starts Ray (tests/conftest.py)

KILLED_DRIVER = """
import os, signal
from autopipe.spec import parse_spec
from autopipe.tune.cluster import init_ray, local_ray_env
local_ray_env()
init_ray(parse_spec({"name": "s", "dataset": {"task": "sort"}}), None)
import ray
node = ray._private.worker._global_node
print(node.get_session_dir_path(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no shutdown, no cleanup: a lost terminal
"""


def test_the_next_embedded_start_kills_what_a_killed_driver_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOPIPE_HOME", str(tmp_path / "home"))
    r = subprocess.run(
        [sys.executable, "-c", KILLED_DRIVER],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    session = r.stdout.strip().splitlines()[-1]
    try:
        assert cluster.session_processes(session), "nothing of the killed driver's Ray outlived it"
        assert list((tmp_path / "home" / "ray_sessions").glob("*.json"))  # its record
        t0 = time.time()
        assert cluster.clean_stale_sessions() > 0
        while cluster.session_processes(session) and time.time() - t0 < 5:
            time.sleep(0.2)
        assert cluster.session_processes(session) == set(), (
            "Ray processes of the killed driver are still alive"
        )
        assert not list((tmp_path / "home" / "ray_sessions").glob("*.json"))
        assert cluster.clean_stale_sessions() == 0  # nothing left to clean
    finally:
        for pid in cluster.session_processes(session):
            os.kill(pid, signal.SIGKILL)
