"""What a resumed job rebuilds without running anything: the searcher's saved state carries the
ledger (scheduler decisions, proxies, spend), and the MLflow callback does not log a step twice
nor end a trial whose record was final before the resume."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from autopipe import metrics as M
from autopipe.scheduling.budget import BudgetGate
from autopipe.scheduling.ledger import Ledger
from autopipe.search.simple import GridCore
from autopipe.space import Param, Space
from autopipe.tune.callbacks import MLflowTrialCallback
from autopipe.tune.resume import TrialRun, replay_result
from autopipe.tune.searcher import JobSearcher

SPACE = Space([Param("sft.lr", "float", values=(1e-4, 3e-4, 1e-3, 3e-3), log=True)])


def _searcher() -> tuple[JobSearcher, Ledger]:
    ledger = Ledger()
    return JobSearcher(GridCore(SPACE, seed=0), ledger, BudgetGate(ledger, 100.0, 0.5)), ledger


def test_searcher_state_carries_the_ledger(tmp_path: Path) -> None:
    s, ledger = _searcher()
    cfg = s.suggest("a")
    ledger.record("a", cfg, {M.TRAIN_LOSS: 1.5, M.FRACTION: 0.5, M.COST_S: 60.0, M.GLOBAL_STEP: 4})
    ledger.mark_early_stopped("a")
    s.on_trial_complete("a", {M.OBJECTIVE: math.nan})
    s.suggest("b")
    s.save(str(tmp_path / "state.json"))

    r, restored = _searcher()
    shared = restored.trials  # the scheduler and callback hold the same Ledger object
    r.restore(str(tmp_path / "state.json"))
    assert restored.trials is shared  # loaded in place
    assert restored.trials["a"].status == M.STATUS_EARLY_STOPPED
    assert restored.trials["a"].proxy == -1.5  # the fallback proxy: minus the latest loss
    assert restored.spent_s() == 60.0  # the budget gate sees what was spent before
    assert r.suggest("c") == s.suggest("c")  # and the core proposes what it would have


class _Tracker:
    def __init__(self) -> None:
        self.metrics: list[tuple[str, dict[str, Any], int]] = []
        self.ended: list[str] = []
        self.open_runs: set[str] = set()

    def log_metrics(self, run_id: str, values: dict[str, Any], step: int) -> None:
        if values:
            self.metrics.append((run_id, dict(values), step))

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.ended.append(run_id)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        pass


def test_callback_skips_logged_steps_and_final_records() -> None:
    tracker = _Tracker()
    cb = MLflowTrialCallback(tracker, "0", "parent", {})  # type: ignore[arg-type]
    cb.resume_from(
        {
            "run": TrialRun("run", "r1", M.STATUS_RUNNING, {}, {M.TRAIN_LOSS: 24, M.KL: 26}),
            "old": TrialRun("old", "r2", M.STATUS_COMPLETED, {M.OBJECTIVE: 0.5}, {M.OBJECTIVE: 36}),
        }
    )
    trial = SimpleNamespace(trial_id="run", config={}, last_result={})
    # The restarted trial reports again from its SFT checkpoint (step 24), then goes on.
    cb.on_trial_result(0, [], trial, {M.GLOBAL_STEP: 24, M.ACCURACY_AFTER_SFT: 0.4})
    cb.on_trial_result(0, [], trial, {M.GLOBAL_STEP: 25, M.TRAIN_LOSS: 1.0, M.KL: 0.1})
    cb.on_trial_result(0, [], trial, {M.GLOBAL_STEP: 27, M.TRAIN_LOSS: 0.9, M.KL: 0.2})
    # the final report is at the step of the last RL log: one step, the later value winning
    cb.on_trial_result(0, [], trial, {M.GLOBAL_STEP: 27, M.OBJECTIVE: 0.3, M.COST_S: 9.0})
    assert tracker.metrics == [
        ("r1", {M.ACCURACY_AFTER_SFT: 0.4}, 24),  # not logged before: kept
        ("r1", {M.TRAIN_LOSS: 1.0}, 25),  # KL at 25 was logged before the kill
    ]  # step 27 waits for the trial to move on or end
    cb.on_trial_complete(0, [], trial)
    assert tracker.metrics[2:] == [
        ("r1", {M.TRAIN_LOSS: 0.9, M.KL: 0.2, M.OBJECTIVE: 0.3, M.COST_S: 9.0}, 27)
    ]
    # A trial that ended before the resume is replayed to Tune but its run is not touched.
    old = SimpleNamespace(trial_id="old", config={}, last_result={})
    cb.on_trial_complete(0, [], old)
    assert tracker.ended == ["r1"] and cb.status["old"] == M.STATUS_COMPLETED  # r2 untouched
    replay = replay_result(TrialRun("old", "r2", M.STATUS_COMPLETED, {M.OBJECTIVE: 0.5}, {"x": 36}))
    assert replay[M.STAGE] == "done" and replay[M.GLOBAL_STEP] == 36


def test_orphans_are_dropped_only_after_the_restored_trials_were_matched() -> None:
    tracker = _Tracker()
    cb = MLflowTrialCallback(tracker, "0", "parent", {})  # type: ignore[arg-type]
    cb.resume_from({"a": TrialRun("a", "r1", M.STATUS_RUNNING, {}, {M.TRAIN_LOSS: 5})})
    # The restore failed before Tune ran a step: nothing may be deleted.
    assert cb.drop_orphans() == [] and cb.runs == {"a": "r1"}


class _SpecTracker:
    def __init__(self, text: str | None) -> None:
        self.text = text

    def read_text(self, run_id: str, artifact_file: str) -> str | None:
        return self.text


def test_resume_refuses_a_changed_spec() -> None:
    import yaml

    from autopipe.errors import SpecError
    from autopipe.spec import parse_spec
    from autopipe.tune.job import _check_same_spec

    base = {"name": "j", "dataset": {"task": "sort", "n_train": 100}}
    spec = parse_spec(base)
    recorded = yaml.safe_dump(spec.dump())
    _check_same_spec(_SpecTracker(recorded), "p", spec)  # the same spec resumes
    moved = parse_spec({**base, "tracking": {"uri": "sqlite:////tmp/elsewhere.db"}})
    _check_same_spec(_SpecTracker(recorded), "p", moved)  # another tracking URI is fine
    _check_same_spec(_SpecTracker(None), "p", spec)  # no record: nothing to compare
    changed = parse_spec({**base, "search": {"algorithm": "gp-ei"}, "budget": {"max_trials": 9}})
    try:
        _check_same_spec(_SpecTracker(recorded), "p", changed)
        raise AssertionError("a changed spec was accepted")
    except SpecError as e:
        msg = str(e)
    assert "budget.max_trials, search.algorithm" in msg and "\n" not in msg  # one line, names both
