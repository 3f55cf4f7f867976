"""What a job transfers: a prior and an early predictor fitted at job start from the run tables
it names (or loaded from folders it names), with one-line errors for histories of another space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from autopipe import metrics as M
from autopipe.errors import SpecError
from autopipe.history.transfer import load_transfer
from autopipe.predictor.early import DIRECT, RESIDUAL
from autopipe.predictor.proxy import make_proxy
from autopipe.spec import parse_spec
from tests.fixtures.histories import transfer_spec, transfer_table


def test_job_fits_prior_and_residual_predictor_from_its_run_table(tmp_path: Path) -> None:
    table = transfer_table(tmp_path)
    spec = transfer_spec(tmp_path, {"run_tables": ["hist"]})  # relative to the spec's folder
    space = spec.to_space()
    lines: list[str] = []
    tr = load_transfer(spec, space, log=lines.append)
    # both models fitted at job start, each announced on one line and kept as MLflow tags
    assert tr.prior is not None and tr.predictor is not None
    assert len(lines) == 2 and lines == tr.notes and "fitted on" in lines[0]
    assert set(tr.tags) == {"autopipe.history.transfer.0", "autopipe.history.transfer.1"}
    # the predictor stops where the job stops trials, over out-of-fold prior scores
    assert tr.predictor.fraction == 0.5 and tr.predictor.variant == RESIDUAL
    assert str(table) in lines[1]
    # the prior learned the shared optimum lr = 1e-3
    cands = [
        {"sft.lr": lr, "sft.steps": 60, "rl.lr": 1e-4} for lr in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    ]
    score = tr.prior.score({"size": 1.0}, cands)
    assert int(np.argmax(score)) in (1, 2, 3) and score[2] > score[0] and score[2] > score[4]
    # the proxy it feeds ranks a new task's prefixes (curves on an unseen scale) by their rate
    proxy = make_proxy(tr.predictor, tr.prior, space, {"size": 5.0}, seed=0)
    rates = np.linspace(0.0, 1.0, 8)
    reps = [
        [{M.FRACTION: f, M.EVAL_LOSS: 9.0 * (1 - 0.3 * r * f)} for f in (0.1, 0.2, 0.3, 0.4, 0.5)]
        for r in rates
    ]
    cfg = {"sft.lr": 1e-3, "sft.steps": 60, "rl.lr": 1e-4}
    got = [proxy(reps[i], cfg, [reps[j] for j in range(8) if j != i])[0] for i in range(8)]
    alone = [proxy(reps[i], cfg, [])[0] for i in range(8)]
    # ranked among the other 7, the prefixes order exactly as their hidden rates
    assert spearmanr(got, rates).statistic > 0.99
    # and better than without peers, where the unseen scale leaves only the raw values
    assert spearmanr(got, rates).statistic > spearmanr(alone, rates).statistic


def test_no_early_stopping_means_no_predictor_and_files_win(tmp_path: Path) -> None:
    transfer_table(tmp_path)
    spec = transfer_spec(tmp_path, {"run_tables": ["hist"]}, early=1.0)
    tr = load_transfer(spec, spec.to_space())
    # trials run to the end: nothing to predict
    assert tr.prior is not None and tr.predictor is None and len(tr.notes) == 1
    tr.prior.save(tmp_path / "prior")
    spec = transfer_spec(tmp_path, {"run_tables": ["hist"], "prior": "prior"})
    tr = load_transfer(spec, spec.to_space())
    # the named prior is loaded, only the predictor is fitted
    assert tr.notes[0] == "prior: loaded from prior" and "predictor: residual" in tr.notes[1]


def test_single_task_history_gives_the_direct_predictor(tmp_path: Path) -> None:
    transfer_table(tmp_path, n_tasks=1)
    spec = transfer_spec(tmp_path, {"run_tables": ["hist"]})
    tr = load_transfer(spec, spec.to_space())
    # no other task to score the prior out of fold: the direct variant
    assert tr.predictor.variant == DIRECT


def test_history_of_another_space_is_one_line_error(tmp_path: Path) -> None:
    transfer_table(tmp_path)
    other = {"sft": {"lr": {"low": 1.0e-5, "high": 1.0e-2, "log": True}}}
    spec = transfer_spec(tmp_path, {"run_tables": ["hist"]}, space=other)
    with pytest.raises(SpecError, match=r"^history: .*hist was fitted over another search space"):
        load_transfer(spec, spec.to_space())
    spec = transfer_spec(tmp_path, {"run_tables": ["missing"]})
    with pytest.raises(SpecError, match=r"^history: .*missing"):
        load_transfer(spec, spec.to_space())


def test_demo_job_transfers_from_the_shipped_history_without_its_task() -> None:
    from autopipe.spec import load_spec

    spec = load_spec(Path(__file__).parents[2] / "jobs" / "demo.yaml")
    tr = load_transfer(spec, spec.to_space())
    # the demo fits both models on benchmarks/data/tinypost at start
    assert tr.prior is not None and tr.predictor is not None
    assert tr.predictor.variant == RESIDUAL and tr.predictor.fraction == 0.5
    # the demo's task is held out of the history its models learn from
    tasks = tr.prior.training["tasks"]
    assert tasks and not any(t.startswith("sort") for t in tasks)


def test_saved_models_must_fit_the_job(tmp_path: Path) -> None:
    transfer_table(tmp_path)
    spec = transfer_spec(tmp_path, {"run_tables": ["hist"]})
    tr = load_transfer(spec, spec.to_space())
    tr.prior.save(tmp_path / "prior")
    tr.predictor.save(tmp_path / "pred")
    spec = transfer_spec(tmp_path, {"prior": "prior", "predictor": "pred"}, early=0.25)
    with pytest.raises(SpecError, match=r"^history.predictor was fitted at fraction 0.5, but "):
        load_transfer(spec, spec.to_space())
    other = {"sft": {"lr": {"low": 1.0e-5, "high": 1.0e-2, "log": True}}}
    spec = transfer_spec(tmp_path, {"prior": "prior"}, space=other)
    with pytest.raises(SpecError, match=r"^history.prior was fitted over another search space"):
        load_transfer(spec, spec.to_space())


def test_full_length_random_search_fits_nothing(tmp_path: Path) -> None:
    transfer_table(tmp_path)
    spec = transfer_spec(tmp_path, {"run_tables": ["hist"]}, early=1.0)
    data = spec.dump()
    data["search"] = {"algorithm": "random"}
    spec = parse_spec(data, base_dir=tmp_path)
    tr = load_transfer(spec, spec.to_space())
    # neither the searcher nor the trials use a prior or a predictor
    assert tr.prior is None and tr.predictor is None and tr.notes == []


def test_resume_warns_when_the_history_changed(tmp_path: Path, caplog) -> None:
    import json

    from autopipe.tune.job import _check_same_transfer

    transfer_table(tmp_path, seed=0)
    spec = transfer_spec(tmp_path, {"run_tables": ["hist"]})
    first = load_transfer(spec, spec.to_space())
    # the same history gives the same fingerprint
    assert (
        first.fingerprint and load_transfer(spec, spec.to_space()).fingerprint == first.fingerprint
    )

    class Store:  # the parent run's transfer.json, as the job wrote it when it started
        def read_text(self, run_id: str, name: str) -> str:
            return json.dumps({"fingerprint": first.fingerprint, "notes": first.notes})

    _check_same_transfer(Store(), "p", first)
    assert "differ" not in caplog.text
    transfer_table(tmp_path, seed=1)  # the run table grew or changed since
    again = load_transfer(spec, spec.to_space())
    assert again.fingerprint != first.fingerprint
    _check_same_transfer(Store(), "p", again)
    # the resumed job says its models now come from another history
    assert "--resume: the history or saved models differ" in caplog.text
