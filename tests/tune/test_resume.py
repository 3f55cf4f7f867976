"""A job whose driver is killed (SIGKILL, the whole process group) continues with
`autopipe tune SPEC --resume`: finished trials are not rerun, the running one restarts from its
last checkpoint, and every trial has exactly one MLflow child run under the same parent run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from autopipe import metrics as M
from tests.fixtures.jobs import REPO, autopipe_cmd, run_cli, tiny_space, write_spec

pytestmark = pytest.mark.job(seconds=120)  # starts Ray (tests/conftest.py)

SFT_STEPS = 24


def _proc_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[19]  # field 22: start time
    except OSError:
        return None


def _descendants(root: int) -> dict[int, str]:
    """Every live process under ``root`` (pid -> start time, to tell a reused pid apart)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", encoding="utf-8") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out: dict[int, str] = {}
    todo = [root]
    while todo:
        for c in children.get(todo.pop(), []):
            start = _proc_start(c)
            if start is not None:
                out[c] = start
                todo.append(c)
    return out


def _kill_group(pid: int) -> list[tuple[int, str]]:
    """SIGKILL a driver's process group, as a lost terminal or `kill -9 -PGID` would; returns
    what it had started that outlived it (Ray's agents leave the group): (pid, start time)."""
    tree = _descendants(pid)
    os.killpg(pid, signal.SIGKILL)
    time.sleep(2)
    return [(p, start) for p, start in tree.items() if _proc_start(p) == start]


def _in_tune_state(storage: Path, trial_id: str) -> bool:
    """Whether Tune's saved experiment state (written at most every ~10 s) knows the trial yet:
    a trial started after the last save is rerun under a new id on resume, by design."""
    return any(
        trial_id in p.read_text(errors="ignore") for p in storage.glob("*/experiment_state-*.json")
    )


def _trials(c: MlflowClient, exp_id: str) -> list:
    runs = c.search_runs([exp_id])
    return [r for r in runs if r.data.tags.get(M.TAG_ROLE) == "trial"]


def test_resume_after_the_driver_is_killed(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(
        tmp_path / "k.yaml",
        "killed",
        store,
        tmp_path / "ray",
        budget={"max_trials": 3, "max_concurrent": 1},
        space=tiny_space(sft_steps=SFT_STEPS, rl_steps=12),
    )
    c = MlflowClient(store)
    c.search_experiments()  # create the store's tables before the job and this test share it
    proc = subprocess.Popen(
        autopipe_cmd("tune", str(spec), "--quiet"),
        cwd=REPO,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, killed as a whole
    )
    try:
        # Kill once one trial has finished and the next one is past its SFT checkpoint.
        deadline = time.time() + 420
        while True:
            assert proc.poll() is None, proc.stdout.read()[-3000:] if proc.stdout else ""
            assert time.time() < deadline, "no trial finished in time"
            exp = c.get_experiment_by_name("killed")
            trials = _trials(c, exp.experiment_id) if exp else []
            done = [r for r in trials if r.info.status == "FINISHED"]
            mid = [
                r
                for r in trials
                if r.info.status == "RUNNING" and M.ACCURACY_AFTER_SFT in r.data.metrics
            ]
            if done and mid and _in_tune_state(tmp_path / "ray", mid[0].data.tags[M.TAG_TRIAL_ID]):
                break
            time.sleep(1)
    finally:
        survivors = _kill_group(proc.pid)
        proc.wait(timeout=30)
    killed_at = time.time() * 1000
    before = {r.data.tags[M.TAG_TRIAL_ID]: r for r in _trials(c, exp.experiment_id)}
    parent_before = [
        r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get(M.TAG_ROLE) == "job"
    ]
    assert len(parent_before) == 1 and parent_before[0].info.status == "RUNNING"
    resumed_tid = mid[0].data.tags[M.TAG_TRIAL_ID]

    r = run_cli("tune", str(spec), "--quiet", "--resume", timeout=600)
    for p, start in survivors:  # Ray's own processes of the killed driver end within ~30 s
        if _proc_start(p) == start:  # (tests/tune/test_stale_ray.py: the next job kills them)
            os.kill(p, signal.SIGKILL)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    # --resume says what it restored
    assert (
        f"--resume: run {parent_before[0].info.run_id}: 1 trial finished (not run again), "
        "1 restarted from its last checkpoint, 1 not yet proposed"
    ) in out

    runs = c.search_runs([exp.experiment_id])
    parents = [x for x in runs if x.data.tags.get(M.TAG_ROLE) == "job"]
    # The same parent run, reopened and finished.
    assert [p.info.run_id for p in parents] == [parent_before[0].info.run_id]
    assert parents[0].info.status == "FINISHED"
    trials = _trials(c, exp.experiment_id)
    ids = [t.data.tags[M.TAG_TRIAL_ID] for t in trials]
    # One child run per trial: none duplicated, none missing.
    assert len(ids) == len(set(ids)) == 3, ids
    assert all(t.info.status == "FINISHED" for t in trials), [t.info.status for t in trials]
    assert all(t.data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED for t in trials)
    after = {t.data.tags[M.TAG_TRIAL_ID]: t for t in trials}
    for tid, old in before.items():
        if old.info.status == "FINISHED":  # finished trials were not run again
            assert after[tid].info.run_id == old.info.run_id
            assert after[tid].info.end_time == old.info.end_time
    # The killed trial kept its child run and continued from its SFT checkpoint. Tune's own
    # record of the restarted trial (result.json, rewritten on restore, unfiltered) holds no
    # SFT training step: the first report after the restart is the SFT/RL boundary.
    resumed = after[resumed_tid]
    assert resumed.info.run_id == mid[0].info.run_id
    assert resumed.info.end_time > killed_at
    reports = _tune_reports(tmp_path / "ray", resumed_tid)
    assert not [x for x in reports if x.get(M.STAGE) == "sft" and M.TRAIN_LOSS in x], reports
    assert reports[0][M.GLOBAL_STEP] == SFT_STEPS and reports[-1][M.STAGE] == "done"
    loss = c.get_metric_history(resumed.info.run_id, M.TRAIN_LOSS)
    assert len({m.step for m in loss}) == len(loss)  # no step logged twice in MLflow
    assert c.get_metric_history(resumed.info.run_id, M.OBJECTIVE)  # it finished after resuming

    # The job is finished now: another --resume has nothing to continue.
    again = run_cli("tune", str(spec), "--quiet", "--resume", timeout=120)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith("autopipe: error: --resume: job")


def _tune_reports(storage: Path, trial_id: str) -> list[dict]:
    files = [p for p in storage.glob(f"*/*{trial_id}*/result.json") if "promote" not in str(p)]
    assert len(files) == 1, files
    return [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]
