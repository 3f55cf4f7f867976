"""A real job with the AutoPipe searcher (no history: plain GP-BO) and
`budget.early_stop_fraction`: every search trial stops at its early point with a resumable
checkpoint, and the job's final step resumes its shortlist (`budget.promote`, here both) to full
fidelity (same step count as a straight run, prefix not recomputed); the best full result is the
job's answer."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from autopipe import metrics as M
from autopipe.tracking import Tracker
from autopipe.tracking.best import read_best
from tests.tune.helpers import run_cli, write_spec


def test_early_stop_and_promotion(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(
        tmp_path / "p.yaml",
        "promo",
        store,
        tmp_path / "ray",
        budget={"max_trials": 2, "max_concurrent": 2, "early_stop_fraction": 0.5, "promote": 2},
        space={
            "sft": {"lr": 3.0e-3, "steps": 24, "batch_size": {"choices": [8, 16]}},
            "rl": {
                "algorithm": {"choices": ["dpo", "grpo"]},
                "lr": 5.0e-5,
                "beta": 0.02,
                "num_generations": 4,
                "temperature": {"low": 0.7, "high": 1.0},  # GRPO only: a conditional parameter
                "batch_size": 8,
                "steps": 2,
            },
        },
        # one DPO and one GRPO configuration: the promoted trials have different parameters
        search={
            "algorithm": "design",
            "options": {
                "configs": [
                    {"sft.batch_size": 8, "rl.algorithm": "dpo"},
                    {"sft.batch_size": 16, "rl.algorithm": "grpo", "rl.temperature": 0.9},
                ]
            },
        },
    )
    r = run_cli("tune", str(spec), "--quiet")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "promoted 2 early-stopped trials to full fidelity" in r.stdout
    c = MlflowClient(store)
    exp = c.get_experiment_by_name("promo").experiment_id
    trials = [x for x in c.search_runs([exp]) if x.data.tags.get(M.TAG_ROLE) == "trial"]
    early = [x for x in trials if x.data.tags[M.TAG_STATUS] == M.STATUS_EARLY_STOPPED]
    done = [x for x in trials if x.data.tags[M.TAG_STATUS] == M.STATUS_COMPLETED]
    assert len(early) == 2 and len(done) == 2
    stop = 13  # ceil(0.5 * (24 + 2))
    for x in early:
        assert float(x.data.tags[M.TAG_FIDELITY]) == stop / 26
        assert M.PROXY in x.data.metrics  # the proxy the searcher saw
    # each early-stopped trial was resumed once, from its own checkpoint
    assert sorted(x.data.tags[M.TAG_PROMOTED_FROM] for x in done) == sorted(
        x.data.tags[M.TAG_TRIAL_ID] for x in early
    )
    for promoted in done:
        # each promoted run keeps its own configuration: DPO has no sampling temperature
        grpo = promoted.data.params["rl.algorithm"] == "grpo"
        assert ("rl.temperature" in promoted.data.params) == grpo
        assert float(promoted.data.tags[M.TAG_COST_SAVED]) > 0
        steps = [m.step for m in c.get_metric_history(promoted.info.run_id, M.TRAIN_LOSS)]
        fr = c.get_metric_history(promoted.info.run_id, M.FRACTION)
        assert min(steps) > stop and max(fr, key=lambda m: m.step).step == 26
    # the answer is the better of the two full results
    top = max(x.data.metrics[M.OBJECTIVE] for x in done)
    winners = {x.info.run_id: x for x in done if x.data.metrics[M.OBJECTIVE] == top}
    best = read_best(Tracker(store), job="promo")
    assert best["value"] == top and best["mlflow_run_id"] in winners
    assert best["promoted_from"] == winners[best["mlflow_run_id"]].data.tags[M.TAG_PROMOTED_FROM]
    assert best["cost_saved_s"] == pytest.approx(
        float(winners[best["mlflow_run_id"]].data.tags[M.TAG_COST_SAVED]), abs=0.01
    )  # the winner's own saved prefix, not the job's total
    assert yaml.safe_dump(best["config"])
