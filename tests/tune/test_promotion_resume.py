"""Promotion on ``--resume``, without Ray: promotions a previous execution finished are read back
from MLflow and not run again, the winner's saved prefix is its own, and a run recorded before
``budget.promote`` existed can still be resumed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from autopipe import metrics as M
from autopipe.scheduling.ledger import TrialRecord
from autopipe.spec import parse_spec
from autopipe.tracking import Tracker
from autopipe.tune.job import JobRun, _check_same_spec
from autopipe.tune.promotion import plan_promotions
from autopipe.tune.resume import TrialRun, load_trials, promotions_done
from autopipe.tune.summary import JobResult

SPEC = {
    "name": "p",
    "dataset": {"task": "sort"},
    "space": {
        "sft": {"lr": 1e-3, "steps": 10, "batch_size": {"choices": [8, 16]}},
        "rl": {"algorithm": {"choices": ["dpo", "grpo"]}, "lr": 1e-5, "steps": 2},
    },
    "budget": {"max_trials": 4, "early_stop_fraction": 0.5, "promote": 2},
}


def _record(tid: str, cfg: dict, proxy: float, cost: float) -> TrialRecord:
    rec = TrialRecord(tid, dict(cfg), [{M.COST_S: cost, M.FRACTION: 0.5}])
    rec.status, rec.proxy, rec.checkpoint = M.STATUS_EARLY_STOPPED, proxy, f"/ckpt/{tid}"
    return rec


def test_finished_promotions_are_not_run_again() -> None:
    spec = parse_spec(SPEC)
    space = spec.to_space()
    a = space.validate({"sft.batch_size": 8, "rl.algorithm": "dpo"})
    b = space.validate({"sft.batch_size": 16, "rl.algorithm": "grpo"})
    ledger = SimpleNamespace(
        trials={"ea": _record("ea", a, 0.9, 5.0), "eb": _record("eb", b, 0.4, 7.0)}
    )
    core = SimpleNamespace(shortlist=lambda k: [a, b][:k])
    callback = SimpleNamespace(runs={}, configs={}, tracker=None)
    result = JobResult("p", "1", "r", "uri", None, None, None)
    # both shortlisted configurations were promoted (pa, pb) by the execution being resumed
    run = JobRun(spec, space, tracker=None, callback=callback, ledger=ledger, storage="/s")
    points, _ = plan_promotions(run, core, result, {"ea": "pa", "eb": "pb"})
    # nothing is left to run; both count as promoted, each credited with its own early-stopped
    # prefix
    assert points == []
    assert result.promoted == {"pa": "ea", "pb": "eb"}
    assert result.saved_by == {"pa": 5.0, "pb": 7.0} and result.cost_saved_s == 12.0


def test_promotions_done_reads_sources_and_configurations(tmp_path: Path) -> None:
    space = parse_spec(SPEC).to_space()
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}")
    exp = tracker.experiment_id("p")
    parent = tracker.start_run(exp, "job", {M.TAG_ROLE: "job"})
    for tid, status, src, params in (
        ("e1", M.STATUS_EARLY_STOPPED, None, {"sft.batch_size": 8, "rl.algorithm": "dpo"}),
        ("p1", M.STATUS_COMPLETED, "e1", {"sft.batch_size": 8, "rl.algorithm": "dpo"}),
        ("p2", M.STATUS_KILLED, "e2", {"sft.batch_size": 16, "rl.algorithm": "grpo"}),
    ):
        tags = {M.TAG_ROLE: "trial", M.TAG_TRIAL_ID: tid, M.TAG_STATUS: status}
        if src:
            tags[M.TAG_PROMOTED_FROM] = src
        rid = tracker.start_run(exp, tid, tags, parent_run_id=parent)
        tracker.log_params(rid, params)
        tracker.end_run(rid)
    tracker.flush()
    trials = load_trials(tracker, tracker.resolve(parent), exp)
    done, configs = promotions_done(trials, space)
    # only the completed promotion counts (the killed one is run again), with its typed config
    assert done == {"e1": "p1"}
    assert configs == {"p1": {"sft.batch_size": 8, "rl.algorithm": "dpo"}}
    assert promotions_done({"x": TrialRun("x", "r", M.STATUS_COMPLETED)}, space) == ({}, {})


def test_resume_accepts_a_run_recorded_before_a_new_field(tmp_path: Path) -> None:
    spec = parse_spec(SPEC)
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}")
    parent = tracker.start_run(tracker.experiment_id("p"), "job", {M.TAG_ROLE: "job"})
    old = spec.dump()
    del old["budget"]["promote"]  # as a job recorded its spec before budget.promote existed
    tracker.log_text(parent, yaml.safe_dump(old), M.ARTIFACT_SPEC)
    tracker.flush()
    promote_default = parse_spec({**SPEC, "budget": {**SPEC["budget"], "promote": 3}})
    _check_same_spec(tracker, parent, promote_default)  # the default it had then: same search
    from autopipe.errors import SpecError

    with pytest.raises(
        SpecError, match=r"differs from the run being resumed .* in budget\.promote"
    ):
        _check_same_spec(tracker, parent, spec)  # promote 2 is a change


def test_a_repeated_configuration_resumes_its_best_stopped_trial() -> None:
    from autopipe.tune.promotion import resumable_rank

    space = parse_spec(SPEC).to_space()
    a = space.validate({"sft.batch_size": 8, "rl.algorithm": "dpo"})
    zero, lower = _record("e1", a, 0.0, 1.0), _record("e2", a, -0.5, 1.0)
    no_ckpt = _record("e3", a, 2.0, 1.0)
    no_ckpt.checkpoint = None
    # a checkpoint beats a better proxy without one; a proxy of 0.0 beats -0.5
    assert sorted([lower, no_ckpt, zero], key=resumable_rank)[-1] is zero
    assert resumable_rank(no_ckpt) < resumable_rank(lower)
