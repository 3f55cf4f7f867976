"""Built-in tasks, file loaders and the answer parser shared by rewards and evaluation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from autopipe.errors import DataError
from autopipe.trial.tasks import (
    TASKS,
    Example,
    format_ok,
    is_correct,
    load_file,
    load_pubmedqa,
    make_builtin,
    make_reward_funcs,
    parse_answer,
    wrong_answer,
)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_builtin_deterministic_and_held_out(name: str) -> None:
    a = make_builtin(name, 200, 50, 40, seed=3)
    b = make_builtin(name, 200, 50, 40, seed=3)
    c = make_builtin(name, 200, 50, 40, seed=4)
    assert a.to_records() == b.to_records()
    assert a.dataset_id() == b.dataset_id() != c.dataset_id()
    assert (len(a.train), len(a.rl), len(a.eval)) == (200, 50, 40)
    eval_prompts = {e.prompt for e in a.eval}
    assert not eval_prompts & {e.prompt for e in a.train + a.rl}  # no leakage
    for ex in a.eval:  # every answer parses as itself
        assert is_correct(ex.answer, ex.answer, a.answer_kind, a.choices)


def test_parser_and_rewards() -> None:
    assert parse_answer(" 42\nmore", "number") == "42"
    assert parse_answer("Yes. because", "choice", ("yes", "no", "maybe")) == "yes"
    assert parse_answer("perhaps", "choice", ("yes", "no")) == ""
    assert is_correct("123", "123", "text") and not is_correct("1234", "123", "text")
    assert format_ok("12", "number") and not format_ok("12 apples", "number")
    exact, fmt = make_reward_funcs("number", None, 0.1)
    assert exact(["7", "8", ""], answer=["7", "7", "7"]) == [1.0, 0.0, 0.0]
    assert fmt(["7", "x7"]) == [0.1, 0.0]
    assert len(make_reward_funcs("number", None, 0.0)) == 1  # format reward can be dropped
    rng = random.Random(0)
    for ex, kind, ch in [
        (Example("p", "yes"), "choice", ("yes", "no")),
        (Example("p", "12"), "number", None),
        (Example("p", "abc"), "text", None),
    ]:
        assert wrong_answer(ex, kind, ch, rng) != ex.answer


def test_jsonl_and_parquet(tmp_path: Path) -> None:
    rows = [{"q": f"{i}+1=", "a": str(i + 1)} for i in range(50)]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    d = load_file(p, None, "q", "a", 30, 10, 10, 0)
    assert d.answer_kind == "number" and len(d.eval) == 10 and len(d.train) == 30
    import pandas as pd

    pq = tmp_path / "d.parquet"
    pd.DataFrame(rows).to_parquet(pq)
    assert load_file(pq, None, "q", "a", 30, 10, 10, 0).to_records() == d.to_records()
    with pytest.raises(DataError, match="no field 'prompt'"):
        load_file(p, "jsonl", "prompt", "a", 30, 10, 10, 0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"q": 1}\nnot json\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_file(bad, "jsonl", "q", "a", 5, 5, 5, 0)


def test_pubmedqa(shared_dir: Path) -> None:
    d = load_pubmedqa(shared_dir / "data" / "pubmedqa" / "ori_pqal.json", 400, 100, 500, 0)
    assert d.answer_kind == "choice" and d.choices == ("yes", "no", "maybe")
    assert len(d.eval) == 500  # the official test split
    assert {e.answer for e in d.eval} == {"yes", "no", "maybe"}
    assert not {e.prompt for e in d.eval} & {e.prompt for e in d.train}


def test_dataset_path_expands_vars_as_every_spec_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autopipe.spec import check_paths, load_spec
    from autopipe.trial.tasks import load_dataset

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(30)]
    (data / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    monkeypatch.setenv("AP_TEST_DATA", str(data))
    job = tmp_path / "jobs" / "j.yaml"
    job.parent.mkdir()
    job.write_text(
        "name: t\ndataset: {path: $AP_TEST_DATA/d.jsonl, n_train: 10, n_rl: 5, n_eval: 5}\n"
    )
    spec = load_spec(job)
    check_paths(spec)  # what `autopipe validate` and `tune` check: the file exists
    assert spec.resolve(spec.dataset.path) == data / "d.jsonl"
    d = load_dataset(spec.dataset, spec.base_dir)
    assert len(d.train) == 10 and len(d.eval) == 5
