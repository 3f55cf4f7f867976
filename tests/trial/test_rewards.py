"""Rewards named in a job spec (``eval.rewards``) come only from the built-in registry or an
explicit ``module:function``: every other name is a one-line spec error; a custom reward is
really called by a GRPO trial with its weight; without ``eval.rewards`` nothing changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from autopipe import metrics as M
from autopipe.cli import main
from autopipe.errors import SpecError
from autopipe.spec import parse_spec
from autopipe.trial.rewards import BUILTIN, build, load
from autopipe.trial.run import run_trial
from autopipe.trial.settings import TrialSettings
from autopipe.trial.tasks import make_builtin, make_reward_funcs
from tests import reward_fixtures

BASE = {"name": "rw", "dataset": {"task": "sort", "n_train": 100}}


def spec_with(**eval_section: Any) -> Any:
    return parse_spec({**BASE, "eval": eval_section})


@pytest.mark.parametrize(
    ("rewards", "words"),
    [
        (["exact_mtch"], ["eval.rewards", "'exact_mtch'", "exact_match", "module:function"]),
        (["os.path:join("], ["eval.rewards", "'os.path:join('"]),
        (["no_such_module_xyz:f"], ["eval.rewards", "cannot import", "'no_such_module_xyz'"]),
        (["tests.reward_fixtures:missing"], ["eval.rewards", "no attribute 'missing'"]),
        (["tests.reward_fixtures:NOT_A_FUNCTION"], ["eval.rewards", "must be a function", "int"]),
        (["exact_match", {"name": "exact_match", "weight": 2.0}], ["eval.rewards", "repeated"]),
        ([], ["eval.rewards", "at least one"]),
        ([{"name": "format", "weight": 0}], ["eval.rewards", "weight", "> 0"]),
        ([{"name": "format", "wieght": 1}], ["eval.rewards", "wieght"]),
        ("exact_match", ["eval.rewards"]),
    ],
)
def test_bad_rewards_are_one_line_spec_errors(rewards: Any, words: list[str]) -> None:
    with pytest.raises(SpecError) as e:
        spec_with(rewards=rewards)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_format_weight_and_rewards_together_is_an_error() -> None:
    with pytest.raises(SpecError, match="reward_format_weight applies only without eval.rewards"):
        spec_with(rewards=["exact_match"], reward_format_weight=0.2)


def test_cli_validate_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(
        yaml.safe_dump({**BASE, "eval": {"rewards": ["tests.reward_fixtures:half_reward"]}})
    )
    assert main(["validate", str(p)]) == 0
    p.write_text(yaml.safe_dump({**BASE, "eval": {"rewards": ["eval"]}}))
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "eval.rewards" in err and "'eval'" in err


def test_default_and_explicit_lists() -> None:
    assert spec_with().eval.reward_list() is None  # default: unchanged behaviour
    s = spec_with(
        rewards=["exact_match", {"name": "tests.reward_fixtures:half_reward", "weight": 2}]
    )
    assert s.eval.reward_list() == [
        ("exact_match", 1.0),
        ("tests.reward_fixtures:half_reward", 2.0),
    ]
    assert load("exact_match") is None and set(BUILTIN) == {"exact_match", "format"}


def test_builtins_match_the_default_rewards() -> None:
    # The registry's exact_match/format, weighted (1, w), score like the default pair.
    completions = ["1 2 3", "3 2 1", "x"]
    answers = ["1 2 3"] * 3
    w = 0.1
    funcs, weights = build([("exact_match", 1.0), ("format", w)], "text", None)
    default = make_reward_funcs("text", None, w)
    assert [f.__name__ for f in funcs] == [f.__name__ for f in default]
    for f, g, wt in zip(funcs, default, weights, strict=True):
        got = [wt * v for v in f(completions=completions, answer=answers)]
        assert got == g(completions=completions, answer=answers)


def test_custom_reward_is_called_by_a_grpo_trial() -> None:
    data = make_builtin("sort", 64, 16, 8, seed=0)
    cfg = {
        "sft.lr": 3e-3,
        "sft.steps": 2,
        "sft.batch_size": 8,
        "rl.algorithm": "grpo",
        "rl.lr": 5e-5,
        "rl.beta": 0.0,
        "rl.num_generations": 4,
        "rl.batch_size": 4,
        "rl.steps": 2,
    }
    spec = spec_with(rewards=[{"name": "tests.reward_fixtures:half_reward", "weight": 2.0}])
    settings = TrialSettings(
        max_length=24,
        max_completion_length=4,
        threads=1,
        eval_samples=1,
        rewards=spec.eval.reward_list(),
    )
    reports: list[dict[str, Any]] = []
    reward_fixtures.CALLS.clear()
    out = run_trial(cfg, data, settings, lambda m, ckpt: reports.append(dict(m)))
    assert out.status == M.STATUS_COMPLETED
    assert reward_fixtures.CALLS and all(n == 4 for n in reward_fixtures.CALLS)  # one group/step
    rl = [r[M.REWARD_MEAN] for r in reports if r.get(M.STAGE) == "rl" and M.REWARD_MEAN in r]
    assert rl and all(v == pytest.approx(1.0) for v in rl)  # 0.5 per completion * weight 2


def test_a_spec_with_rewards_reads_back_from_its_own_dump() -> None:
    # `submit` stages spec.dump() and the parent run records it: both must parse again.
    s = spec_with(rewards=["exact_match", {"name": "format", "weight": 0.2}])
    again = parse_spec(s.dump())
    assert again.dump() == s.dump()
    assert again.eval.reward_list() == s.eval.reward_list()
