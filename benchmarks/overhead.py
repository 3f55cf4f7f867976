"""Overhead of running a trial through Ray Tune + Ray Train vs. calling the same SFT -> GRPO
code directly. Same configuration, same data, one CPU thread each, measured side by side.

    .venv/bin/python benchmarks/overhead.py [--reps 2] [--out benchmarks/results/overhead.md]

Direct: `run_trial` in a fresh Python process (wall time includes imports). Ray: `autopipe tune`
on a one-trial job with embedded Ray (wall time of the whole command, and the trial's own
time as Ray Tune saw it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = {
    "sft.lr": 2e-3,
    "sft.steps": 120,
    "sft.batch_size": 32,
    "sft.warmup_ratio": 0.05,
    "sft.lora_rank": 0,
    "sft.weight_decay": 0.0,
    "rl.algorithm": "grpo",
    "rl.lr": 5e-5,
    "rl.beta": 0.02,
    "rl.num_generations": 8,
    "rl.temperature": 1.0,
    "rl.batch_size": 32,
    "rl.steps": 20,
}
DATASET = {"task": "sort", "n_train": 1000, "n_rl": 256, "n_eval": 200}
MODEL = {"name": "tiny-llama", "max_length": 32, "max_completion_length": 12}

DIRECT = """
import json, sys, time
t0 = time.time()
from autopipe.trial.tasks import make_builtin
from autopipe.trial.settings import TrialSettings
from autopipe.trial.run import run_trial
cfg, ds, model = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
data = make_builtin(ds["task"], ds["n_train"], ds["n_rl"], ds["n_eval"], 0)
t1 = time.time()
out = run_trial(cfg, data, TrialSettings(max_length=model["max_length"],
                max_completion_length=model["max_completion_length"], threads=1), lambda m, c: None)
print(json.dumps({"objective": out.objective, "trial_s": time.time() - t1, "total_s": time.time() - t0}))
"""


def run_direct() -> dict:
    t = time.time()
    r = subprocess.run(
        [sys.executable, "-c", DIRECT, json.dumps(CONFIG), json.dumps(DATASET), json.dumps(MODEL)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    d = json.loads(r.stdout.strip().splitlines()[-1])
    d["wall_s"] = time.time() - t
    return d


def run_ray(tmp: Path) -> dict:
    space = {k: v for k, v in CONFIG.items()}
    spec = {
        "name": "overhead",
        "dataset": DATASET,
        "model": MODEL,
        "space": {
            "sft": {k.split(".")[1]: v for k, v in space.items() if k.startswith("sft.")},
            "rl": {k.split(".")[1]: v for k, v in space.items() if k.startswith("rl.")},
        },
        "budget": {"max_trials": 1, "max_concurrent": 1},
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}"},
        "storage": str(tmp / "ray"),
    }
    # One searched parameter with a single legal value keeps the config identical.
    spec["space"]["sft"]["lr"] = {"values": [CONFIG["sft.lr"], CONFIG["sft.lr"] * 1.0000001]}
    p = tmp / "overhead.yaml"
    p.write_text(yaml.safe_dump(spec))
    t = time.time()
    r = subprocess.run(
        [sys.executable, "-m", "autopipe", "tune", str(p), "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "AUTOPIPE_HOME": str(tmp / "home")},
        cwd=REPO,
    )
    wall = time.time() - t
    if r.returncode != 0:
        raise SystemExit(r.stdout[-2000:] + r.stderr[-2000:])
    from mlflow.tracking import MlflowClient

    c = MlflowClient(spec["tracking"]["uri"])
    runs = c.search_runs([c.get_experiment_by_name("overhead").experiment_id])
    trial = next(x for x in runs if x.data.tags.get("autopipe.role") == "trial")
    dur = (trial.info.end_time - trial.info.start_time) / 1000.0
    return {
        "wall_s": wall,
        "trial_s": dur,
        "objective": trial.data.metrics.get("objective"),
        "elapsed_in_worker_s": trial.data.metrics.get("elapsed_s"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "overhead.md"))
    a = ap.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    direct, ray = [], []
    for i in range(a.reps):
        direct.append(run_direct())
        with tempfile.TemporaryDirectory() as d:
            ray.append(run_ray(Path(d)))
        print(f"rep {i}: direct {direct[-1]}, ray {ray[-1]}", flush=True)
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    rows = [
        ("direct, fresh process (wall, incl. imports)", med(direct, "wall_s")),
        ("direct, trial only (in-process)", med(direct, "trial_s")),
        (
            "Ray Tune + Ray Train: whole `autopipe tune` (Ray start, MLflow, 1 trial)",
            med(ray, "wall_s"),
        ),
        ("Ray Tune + Ray Train: trial (MLflow child run start -> end)", med(ray, "trial_s")),
        ("Ray Tune + Ray Train: trial time inside the worker", med(ray, "elapsed_in_worker_s")),
    ]
    lines = [
        f"Same SFT({CONFIG['sft.steps']} steps) -> GRPO({CONFIG['rl.steps']} steps) config on `sort`, tiny-llama, "
        f"1 thread; median of {a.reps} reps; machine: {os.cpu_count()} cores.",
        "",
        "| path | seconds |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in rows],
        "",
        f"Ratio per trial (Ray trial / direct fresh process): **{med(ray, 'trial_s') / med(direct, 'wall_s'):.2f}x**; "
        f"whole command vs. direct fresh process: **{med(ray, 'wall_s') / med(direct, 'wall_s'):.2f}x**.",
    ]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
