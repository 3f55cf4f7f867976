"""``autopipe bench``: the reduced benchmark (2 held-out tasks, 2 seeds, small budget) writes its
table and plot; bad input gives one line and exit code 2 before Ray. The CLI runs the direct
engine here; ``test_engines.py`` runs the same case through real Ray Tune and checks that both
engines agree."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from autopipe.cli import main
from autopipe.history.runtable import write_run_table
from tests.fixtures.histories import make_synthetic


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench") / "synth"
    write_run_table(make_synthetic(n_tasks=4), root)
    return root


def test_reduced_benchmark_writes_table_and_plot(table: Path, tmp_path: Path) -> None:
    rc = main(
        [
            "bench", "--data", str(table), "--methods", "random", "autopipe", "ranker-top1",
            "--budget", "3", "6", "--autopipe-budget", "6", "--seeds", "2", "--tasks", "2",
            "--prior-models", "1", "--out", str(tmp_path), "--name", "reduced", "--engine", "direct",
        ]
    )  # fmt: skip
    assert rc == 0
    out = tmp_path / "reduced"
    md = (out / "results.md").read_text()
    assert "| autopipe | 6 |" in md and "| random | 6 |" in md and "ranker-top1" in md
    assert (out / "regret_vs_cost.png").stat().st_size > 1000
    rows = pd.read_csv(out / "rows.csv")
    assert rows["task"].nunique() == 2 and set(rows["seed"]) == {0, 1}
    online = rows.loc[rows["method"] != "ranker-top1"]
    # every online evaluation was a real trial: 3 then 6 evaluations, finite regret and cost
    assert set(online["evals"]) == {3, 6}
    assert rows["regret"].notna().all() and (rows["cost"] > 0).all()
    import ray

    assert not ray.is_initialized()  # the direct engine starts no Ray
    assert "--engine direct" in md


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--methods", "random", "hyperopt"], "--methods must be among"),
        (["--budget", "0", "5"], "--budget values must be >= 1"),
        (["--autopipe-budget", "0"], "--autopipe-budget must be >= 1"),
        (["--early-fraction", "0"], "--early-fraction must be in (0, 1]"),
        (["--early-fraction", "1.5"], "--early-fraction must be in (0, 1]"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    table: Path, args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--data", str(table), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autopipe: error:") and needle in err[0]


def test_missing_folder_and_single_group(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--data", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    h = make_synthetic(n_tasks=2)
    h.tasks["group"] = "one"
    write_run_table(h, tmp_path / "one")
    assert main(["bench", "--data", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 or more task groups" in err[0]


def test_direct_engine_refuses_bohb_on_curves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.fixtures.histories import make_curve_history

    write_run_table(make_curve_history(n_configs=8, n_tasks=2), tmp_path / "curves")
    args = ["bench", "--data", str(tmp_path / "curves"), "--methods", "bohb", "--engine", "direct"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # HyperBandForBOHB pauses trials, which only the Tune engine runs
    assert len(err) == 1 and "cannot run bohb on a table with curves" in err[0]
