"""The dataset checked where the spec is checked: `autopipe validate` and `autopipe tune` (one
function, spec/data.py) reject a file no trial could train on, a dataset smaller than asked, an
evaluation split too small to score on, and examples that do not fit the model's lengths, each
in one line naming the field; nothing is started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from autopipe.cli import main
from autopipe.errors import SpecError
from autopipe.spec import load_spec
from autopipe.spec.data import check_dataset

WORDS = ["river", "maple", "novel", "amber", "cedar", "lemon", "tiger", "piano", "ocean"]


def _letters(n: int) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        w = [WORDS[(i + k) % len(WORDS)] for k in range(3)]
        rows.append(
            {
                "prompt": f"Join the last letters of: {', '.join(w)}",
                "answer": "".join(x[-1] for x in w),
            }
        )
    return rows


def _job(tmp_path: Path, rows: list | str, **dataset: object) -> Path:
    data = tmp_path / "d.jsonl"
    if isinstance(rows, str):
        data.write_text(rows)
    else:
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = {
        "name": "d",
        "dataset": {"path": "d.jsonl", "n_train": 100, "n_rl": 20, "n_eval": 50, **dataset},
        "model": {"name": "tiny-llama", "max_length": 64, "max_completion_length": 8},
    }
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("", r"dataset\.path '.*d\.jsonl': no records \(the file is empty\)"),
        ('{"prompt": "1+1=", "answer": "2"}\n{"prompt": \n', r"line 2 is not valid JSON"),
        ('["1+1=", "2"]\n', r"line 1 must be a JSON object, but got list"),
        ([{"prompt": "1+1="}], r"record 1 has no field 'answer' \(dataset\.answer_field\)"),
        ([{"question": "1+1=", "answer": "2"}], r"has no field 'prompt' \(dataset\.prompt_field\)"),
    ],
)
def test_validate_rejects_what_no_trial_could_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: list | str, expected: str
) -> None:
    assert main(["validate", str(_job(tmp_path, rows))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autopipe: error: dataset.path "), err
    assert __import__("re").search(expected, err[0]), err[0]


def test_a_dataset_smaller_than_asked_names_the_sizes(tmp_path: Path) -> None:
    spec = load_spec(_job(tmp_path, _letters(3), n_train=1000, n_rl=256, n_eval=200, min_eval=1))
    with pytest.raises(SpecError) as e:
        check_dataset(spec)
    assert str(e.value) == (
        f"dataset.path {spec.dataset.path!r} is smaller than asked: dataset.n_train 1000, "
        "dataset.n_rl 256, dataset.n_eval 200, but its splits hold 2 train, 2 rl, 1 eval "
        "(n_train + n_rl + n_eval = 1456 examples; lower dataset.n_* to what the data holds) "
        "(a file's evaluation split is at most a fifth of its records)"
    )


def test_an_evaluation_split_under_50_is_accepted_only_explicitly(tmp_path: Path) -> None:
    small = _job(tmp_path, _letters(200), n_eval=20)
    with pytest.raises(SpecError, match=r"has 20 prompts, fewer than dataset\.min_eval 50"):
        check_dataset(load_spec(small))
    report = check_dataset(load_spec(_job(tmp_path, _letters(200), n_eval=20, min_eval=20)))
    assert report.sizes == {"train": 100, "rl": 20, "eval": 20}


def test_prompts_that_do_not_fit_max_length_are_an_error_naming_the_length(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _letters(300)
    job = _job(tmp_path, rows, n_train=200, n_eval=50)
    doc = yaml.safe_load(job.read_text())
    doc["model"]["max_length"] = 32  # the demo's: the prompts alone are 44-46 characters
    job.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(job)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autopipe: error: model.max_length 32 fits 0 of 200 SFT examples"), err
    assert "need up to 49 tokens: set model.max_length to at least 49" in err  # measured
    doc["model"]["max_length"] = 64
    job.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(job)]) == 0
    out = capsys.readouterr().out
    assert "dataset d: 200 SFT / 20 RL / 50 eval examples" in out


def test_answers_longer_than_a_completion_are_an_error(tmp_path: Path) -> None:
    rows = [{"prompt": f"spell {i}:", "answer": "abcdefghijklmnop"} for i in range(300)]
    spec = load_spec(_job(tmp_path, rows))
    with pytest.raises(
        SpecError, match=r"^model\.max_completion_length 8 fits 0 of 50 evaluation answers"
    ):
        check_dataset(spec)
