"""Job spec validation: every bad input gives one line naming the field, exit code 2, no
traceback, and no Ray started."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from autopipe.cli import main
from autopipe.errors import SpecError
from autopipe.spec import load_spec, parse_spec

REPO = Path(__file__).resolve().parents[2]

GOOD = """
name: t
dataset: {task: sort}
space:
  sft: {lr: {low: 1.0e-4, high: 1.0e-3}, steps: 20}
"""

# (yaml text, substring the one-line error must contain)
BAD = [
    ("name: t\n", "dataset is required"),
    ("dataset: {task: sort}\n", "name is required"),
    ("name: t\ndataset: {task: nope}\n", "dataset.task must be one of"),
    ("name: t\ndataset: {task: sort, path: x.jsonl}\n", "exactly one of task"),
    ("name: t\ndataset: {}\n", "exactly one of task"),
    ("name: t\ndataset: {task: sort}\nbogus: 1\n", "bogus is not a valid key"),
    ("name: t\ndataset: {task: sort, n_train: many}\n", "dataset.n_train"),
    ("name: t\ndataset: {task: sort, n_train: 2}\n", "dataset.n_train must be >= 8, but got 2"),
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {lr: {low: -1, high: 1.0e-3}}}\n",
        "space.sft.lr.low must be > 0",
    ),
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {lr: {low: 1.0e-3, high: 1.0e-4}}}\n",
        "high must be >= low",
    ),
    ("name: t\ndataset: {task: sort}\nspace: {sft: {steps: {values: []}}}\n", "space.sft.steps"),
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {lr: {lo: 1, hi: 2}}}\n",
        "space.sft.lr has unknown keys",
    ),
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {lrate: 0.1}}\n",
        "space.sft.lrate is not a valid key",
    ),
    (
        "name: t\ndataset: {task: sort}\nspace: {rl: {algorithm: ppo}}\n",
        "space.rl.algorithm must be one of",
    ),
    (
        "name: t\ndataset: {task: sort}\nspace: {rl: {num_generations: 1}}\n",
        "space.rl.num_generations must be >= 2",
    ),
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {steps: 10, epochs: 1}}\n",
        "one of steps or epochs",
    ),
    (
        "name: t\ndataset: {task: sort}\nbudget: {max_trials: -3}\n",
        "budget.max_trials must be >= 1, but got -3",
    ),
    (
        "name: t\ndataset: {task: sort}\nbudget: {max_trials: 0}\n",
        "budget.max_trials must be >= 1, but got 0",
    ),
    (
        "name: t\ndataset: {task: sort}\nbudget: {early_stop_fraction: 1.5}\n",
        "budget.early_stop_fraction must be <= 1",
    ),
    ("name: t\ndataset: {task: sort}\nbudget: {cost_cap_s: -5}\n", "budget.cost_cap_s must be > 0"),
    (
        "name: t\ndataset: {task: sort}\nbudget: {promote: 0}\n",
        "budget.promote must be >= 1, but got 0",
    ),
    (
        "name: t\ndataset: {task: sort}\nsearch: {algorithm: hyperband9}\n",
        "search.algorithm must be one of",
    ),
    ("name: t\ndataset: {task: sort}\nresources: {deepspeed: 4}\n", "resources.deepspeed must be"),
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {lora_rank: 8}}\nresources: {deepspeed: 3}\n",
        "resources.deepspeed 3 cannot be combined with sft.lora_rank > 0",
    ),
    (
        "name: t\ndataset: {task: sort}\nresources: {workers_per_trial: 0}\n",
        "resources.workers_per_trial must be >= 1",
    ),
    (
        "name: t\ndataset: {task: sort}\nresources: {cpus_per_worker: '2'}\n",
        "resources.cpus_per_worker",
    ),
    ("name: t\ndataset: {task: sort}\nmodel: {name: gpt-17}\n", "model.name must be one of"),
    ("name: 'has space'\ndataset: {task: sort}\n", "name must match"),
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {batch_size: 2.5}}\n",
        "space.sft.batch_size must be an integer",
    ),
    ("- a\n- b\n", "must be a YAML mapping"),
    ("name: t\n  dataset: [\n", "not valid YAML"),
    ("a: &x [1]\nb: *x\n", "must not use YAML aliases"),
    ("name: t\nname: u\ndataset: {task: sort}\n", "has the key 'name' twice"),
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {lr: 0.1, steps: 20, batch_size: 8, warmup_ratio: 0, lora_rank: 0, weight_decay: 0}, rl: null}\n",
        "space must search at least one parameter",
    ),  # NaN passes every comparison: each entry shape names it (YAML's .nan)
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {steps: .nan}}\n",
        "space.sft.steps must be a finite number >= 1, but got nan",
    ),
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {lr: .nan}}\n",
        "space.sft.lr must be a finite number > 0 and <= 1, but got nan",
    ),
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {steps: {values: [.nan, 10]}}}\n",
        "space.sft.steps.values[0] must be a finite number >= 1, but got nan",
    ),
    (
        "name: t\ndataset: {task: sort}\nspace: {rl: {batch_size: {choices: [.nan, 16]}}}\n",
        "space.rl.batch_size.choices[0] must be a finite number >= 1, but got nan",
    ),
    # integer parameters: choices and range bounds must be integers too (not only values)
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {batch_size: {choices: [16.5, 32]}}}\n",
        "space.sft.batch_size.choices[0] must be an integer, but got 16.5",
    ),
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {steps: {low: 10.5, high: 10.5}}}\n",
        "space.sft.steps.low must be an integer, but got 10.5",
    ),
    # Space's own checks get the "space." prefix of the field
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {batch_size: {choices: [16, 16]}}}\n",
        "error: space.sft.batch_size.choices must be distinct",
    ),
    # seeds that numpy/transformers could not take
    ("name: t\nseed: 100000000000000000000\ndataset: {task: sort}\n", "seed must be <= 2147483647"),
    ("name: t\ndataset: {task: sort, seed: 4294967296}\n", "dataset.seed must be <= 2147483647"),
    ("name: t\ndataset: {task: sort}\nsearch: {seed: -1}\n", "search.seed must be >= 0"),
    # a reward entry's mistyped weight names the weight, not "should be a string"
    (
        "name: t\ndataset: {task: sort}\neval: {rewards: [{name: exact_match, weight: '1'}]}\n",
        "eval.rewards.0.weight",
    ),
    # YAML 1.1 reads on/yes/true keys as booleans: named, with the line
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {true: 1}}\n",
        "job spec keys must be strings, but got True (line 3; quote it)",
    ),
    # PyYAML reads 1e-4 (no dot) as text: the error says how to write it
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {lr: {low: 1e-4, high: 1.0e-3}}}\n",
        "space.sft.lr.low input should be a valid number, but got '1e-4' (YAML reads '1e-4' as "
        "text; write 1.0e-4)",
    ),
    (
        "name: t\ndataset: {task: sort}\nspace: {sft: {lr: 3e-4}}\n",
        "(YAML reads '3e-4' as text; write 3.0e-4)",
    ),
    # option values out of range are caught by validate, before any model is built
    (
        "name: t\ndataset: {task: sort}\nsearch: {algorithm: autopipe, options: {w_end: 5}}\n",
        "search.options.w_end must be in [0, 1], but got 5",
    ),
    (
        "name: t\ndataset: {task: sort}\nsearch: {algorithm: autopipe, options: {warm_start: -1}}\n",
        "search.options.warm_start must be >= 0, but got -1",
    ),
    (
        "name: t\ndataset: {task: sort}\nsearch: {algorithm: gp-ei, options: {max_fit_iter: 0}}\n",
        "search.options.max_fit_iter must be >= 1, but got 0",
    ),
]


def test_good_spec_loads(tmp_path: Path) -> None:
    p = tmp_path / "ok.yaml"
    p.write_text(GOOD)
    spec = load_spec(p)
    space = spec.to_space()
    assert "sft.lr" in space.names
    assert space.constants["sft.steps"] == 20
    assert space["sft.lr"].log  # learning rates are searched on a log scale by default


def test_repo_jobs_validate() -> None:
    for job in sorted((REPO / "jobs").glob("*.yaml")):
        spec = load_spec(job)
        assert spec.name


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[f"bad{i:02d}" for i in range(len(BAD))])
def test_bad_specs_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(textwrap.dedent(text))
    code = main(["validate", str(p)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0, err  # one line
    assert err.startswith("autopipe: error: ")
    assert expected in err, err


def test_validate_several_specs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\ndataset: {task: nope}\n")
    # every spec is checked; each bad one is one line naming its file, and the exit code is 2
    assert main(["validate", str(good), str(bad), str(good)]) == 2
    out, err = capsys.readouterr()
    assert out.count(": ok - job 't'") == 2
    assert err.count("\n") == 1 and err.startswith(
        f"autopipe: error: {bad}: dataset.task must be one of"
    ), err
    assert main(["validate", str(good), str(good)]) == 0


def test_missing_file_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    p = tmp_path / "latin.yaml"
    p.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(SpecError, match="must be UTF-8"):
        load_spec(p)
    big = tmp_path / "big.yaml"
    big.write_text("name: t\n" + "#" * 2_000_000)
    with pytest.raises(SpecError, match="at most"):
        load_spec(big)
    with pytest.raises(SpecError, match="must be a file, but it is a directory"):
        load_spec(tmp_path)
    with pytest.raises(SpecError, match="must be a file, but it is not a regular file"):
        load_spec("/dev/null")


@pytest.mark.parametrize(
    ("algo", "options", "expected"),
    [
        (
            "random",
            {"warm_start": 3},
            "search.options of 'random' must be among ['candidates'], but got unknown ['warm_start']",
        ),
        ("autopipe", {"betta": 1}, "but got unknown ['betta']"),
        ("autopipe", {"prior": "x"}, "but got unknown ['prior']"),
        # scalar options of the wrong type: one line naming the option, before any model is built
        (
            "autopipe",
            {"cost_weight": "x"},
            "search.options.cost_weight must be a number, but got 'x'",
        ),
        (
            "autopipe",
            {"guard": "false"},
            "search.options.guard must be true or false, but got 'false'",
        ),
        (
            "autopipe",
            {"warm_start": 2.5},
            "search.options.warm_start must be an integer, but got 2.5",
        ),
        (
            "autopipe",
            {"warm_start": True},
            "search.options.warm_start must be an integer, but got True",
        ),
        ("gp-ei", {"budget": "7"}, "search.options.budget must be an integer, but got '7'"),
        # the right type but out of range: the core's own check when the job builds it
        ("autopipe", {"cost_weight": -1}, "search.options.cost_weight must be >= 0, but got -1"),
    ],
)
def test_search_options_are_checked(algo: str, options: dict, expected: str) -> None:
    from autopipe.tune.job import make_core

    spec = parse_spec(
        {
            "name": "o",
            "dataset": {"task": "sort"},
            "search": {"algorithm": algo, "options": options},
        }
    )
    with pytest.raises(SpecError, match=re.escape(expected)):
        make_core(spec, spec.to_space(), {})


def test_search_options_reach_the_core() -> None:
    from autopipe.tune.job import make_core

    spec = parse_spec(
        {
            "name": "o",
            "dataset": {"task": "sort"},
            "search": {"algorithm": "autopipe", "options": {"warm_start": 3, "budget": 7}},
        }
    )
    core = make_core(spec, spec.to_space(), {})
    assert core.warm_start == 3 and core.budget == 7  # the user's budget overrides max_trials


def test_grpo_only_knobs_are_conditional() -> None:
    spec = parse_spec(
        {
            "name": "c",
            "dataset": {"task": "sort"},
            "space": {
                "rl": {
                    "algorithm": {"choices": ["grpo", "dpo"]},
                    "num_generations": {"choices": [4, 8]},
                }
            },
        }
    )
    space = spec.to_space()
    assert space["rl.num_generations"].condition is not None
    dpo = space.complete(
        {"sft.lr": 1e-3, "rl.algorithm": "dpo", "rl.lr": 1e-5, "rl.num_generations": 4}
    )
    assert "rl.num_generations" not in dpo


def test_cli_subprocess_no_traceback_no_ray(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: t\ndataset: {task: sort}\nbudget: {max_trials: -1}\n")
    code = (
        "import sys\nfrom autopipe.cli import main\nrc = main(['tune', sys.argv[1]])\n"
        "assert 'ray' not in sys.modules, 'Ray was imported'\nsys.exit(rc)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip() == "autopipe: error: budget.max_trials must be >= 1, but got -1"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            "{low: 1.0e-4}",
            "space.sft.lr must have both low and high (a range {low, high, log}), but got only low",
        ),
        (
            "{high: 1.0e-3, log: true}",
            "space.sft.lr must have both low and high (a range {low, high, log}), but got only high",
        ),
        (
            "{low: 1.0e-4, high: 1.0e-3, step: 2}",
            "space.sft.lr has unknown keys ['step']; a range takes only {low, high, log}",
        ),
        (
            "{values: [1.0e-4, 1.0e-3], step: 2}",
            "space.sft.lr has unknown keys ['step']; a grid takes only {values, log}",
        ),
        (
            "{choices: [1.0e-4, 1.0e-3], log: true}",
            "space.sft.lr has unknown keys ['log']; a choice list takes only {choices}",
        ),
        (
            "{low: 1.0e-4, values: [1.0e-3]}",
            "space.sft.lr mixes the keys ['low', 'values'] of different shapes; use one of "
            "{low, high, log} | {values, log} | {choices}",
        ),
        ("{log: true}", "space.sft.lr needs low and high, values or choices, but got only ['log']"),
        (
            "{lo: 1, hi: 2}",
            "space.sft.lr has unknown keys ['hi', 'lo']; valid: {low, high, log} | {values, log} | "
            "{choices}",
        ),
        ("{low: a, high: 1.0e-3}", "space.sft.lr.low input should be a valid number"),
        ("{low: 1.0e-3, high: 1.0e-4}", "space.sft.lr high must be >= low (0.001), but got 0.0001"),
    ],
)
def test_range_entry_errors_name_the_actual_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str, expected: str
) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(f"name: t\ndataset: {{task: sort}}\nspace: {{sft: {{lr: {entry}}}}}\n")
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith(f"autopipe: error: {expected}"), err


def test_rl_range_entry_missing_high() -> None:
    with pytest.raises(SpecError, match=re.escape("space.rl.lr must have both low and high")):
        parse_spec(
            {"name": "t", "dataset": {"task": "sort"}, "space": {"rl": {"lr": {"low": 1e-5}}}}
        )


def test_cost_weight_reaches_the_core_with_the_history_costs() -> None:
    """``search.options.cost_weight`` of a job over the demo space, with the prior fitted on the
    project's post-training history (trial seconds as costs): the searcher is cost-aware."""
    from autopipe.history.sources import load_history
    from autopipe.prior.ranker import RankerConfig, RankingPrior
    from autopipe.tune.job import make_core

    root = Path(__file__).resolve().parents[2]
    spec = load_spec(root / "jobs" / "demo.yaml")
    spec = spec.model_copy(
        update={"search": spec.search.model_copy(update={"options": {"cost_weight": 0.2}})}
    )
    history = load_history(str(root / "benchmarks" / "data" / "tinypost"), None)
    prior = RankingPrior.fit(history, RankerConfig(n_models=1, n_estimators=20, n_jobs=1))
    task = history.task_ids[0]
    core = make_core(spec, spec.to_space(), history.meta_features(task), prior=prior)
    assert core.cost_weight == 0.2 and core.cands.has_cost
    # trial seconds differ between configurations (more SFT steps, larger GRPO groups cost more)
    assert np.ptp(core.cands.log_cost) > 0.5


def test_validate_catches_a_mistyped_search_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `autopipe validate` builds no model-based core, but an option's type is still checked
    p = tmp_path / "o.yaml"
    p.write_text(
        "name: t\ndataset: {task: sort}\n"
        "search: {algorithm: autopipe, options: {cost_weight: cheap}}\n"
    )
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "autopipe: error: search.options.cost_weight must be a number, but got 'cheap'"
