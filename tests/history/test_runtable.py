"""Run tables: reading the awkward but legal cases, round-tripping, and one-line errors for
malformed tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autopipe.errors import DataError
from autopipe.history import History, read_run_table, write_run_table
from autopipe.history.data import concat_histories
from tests.fixtures.histories import write_toy
from tests.fixtures.shared import SHARED, require_shared


def test_read_min_objective_missing_meta_failed_runs(tmp_path: Path) -> None:
    h = read_run_table(write_toy(tmp_path / "t", with_meta=False))
    assert h.mode == "min" and h.objective == "val_loss" and h.cost_unit == "seconds"
    assert h.curves is None and h.meta_columns == []
    assert h.meta_features("a") == {}
    assert math.isnan(
        h.runs.loc[h.runs.run_id == "r5", "y"].iloc[0]
    )  # inf objective counts as failed
    ct = h.config_table("a").set_index("opt")
    assert ct.loc["adam", "y"] == pytest.approx(0.6)  # seed-averaged over r0 and r1
    assert ct.loc["adam", "y_max"] == pytest.approx(-0.6)  # direction-aware: min -> negated
    assert math.isnan(ct.loc["sgd", "y"]) and ct.loc["sgd", "n_ok"] == 0  # all seeds failed
    assert h.summary()["per_task"][1]["best"] == pytest.approx(0.2)  # best of a min objective
    a, b = h.summary()["per_task"]
    # seed noise: adam on task a ran with seeds 0 and 1 (0.5, 0.7): sample sd 0.1414
    assert a["replicated"] == 1 and a["seed_sd"] == pytest.approx(0.2 / math.sqrt(2))
    # task a's only finite configuration is both best and median: no span to divide by
    assert math.isnan(a["seed_sd_ratio"])
    # task b's second seed diverged (inf): one finite run is no replicate
    assert b["replicated"] == 0 and math.isnan(b["seed_sd"])
    from autopipe.cli.history import format_summary

    rows = {ln.split()[0]: ln.split() for ln in format_summary(h.summary()).splitlines()[10:12]}
    # `autopipe history show` prints the replicate count, seed sd and sd/span per task
    assert rows["a"][-3:] == ["1", "0.141", "-"] and rows["b"][-3:] == ["0", "-", "-"]


def test_read_partial_meta_and_curves_round_trip(tmp_path: Path) -> None:
    h = read_run_table(write_toy(tmp_path / "t", with_curves=True))
    assert h.meta_features("a") == {"n": 100.0} and h.meta_features("b") == {}
    assert h.curve_signals == ["train_loss"] and len(h.curves) == 3
    out = write_run_table(h, tmp_path / "copy")
    h2 = read_run_table(out)
    pd.testing.assert_frame_equal(h.runs, h2.runs)
    pd.testing.assert_frame_equal(h.tasks, h2.tasks)
    pd.testing.assert_frame_equal(h.curves, h2.curves)
    assert (h2.mode, h2.objective, h2.cost_unit, h2.space.to_json()) == (
        h.mode,
        h.objective,
        h.cost_unit,
        h.space.to_json(),
    )


def test_conditional_values_normalized(tmp_path: Path) -> None:
    h = read_run_table(write_toy(tmp_path / "t"))
    r = h.runs.set_index("run_id")
    assert r.loc["r3", "momentum"] == pytest.approx(0.5)
    assert math.isnan(r.loc["r0", "momentum"])
    X = h.encode(h.runs)
    assert X.shape == (6, h.space.n_features)


def _expect_error(root: Path, file: str, column: str) -> str:
    with pytest.raises(DataError) as e:
        read_run_table(root)
    msg = str(e.value)
    assert "\n" not in msg  # one line
    assert file in msg and repr(column) in msg or column in msg
    return msg


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    root = write_toy(tmp_path / "t")
    runs = pd.read_parquet(root / "runs.parquet").drop(columns=["depth"])
    runs.to_parquet(root / "runs.parquet", index=False)
    msg = _expect_error(root, "runs.parquet", "depth")
    assert "'depth' is missing" in msg


def test_unknown_parameter_type_names_file_and_column(tmp_path: Path) -> None:
    root = write_toy(tmp_path / "t")
    d = json.loads((root / "space.json").read_text())
    d["params"][1]["type"] = "bool"
    (root / "space.json").write_text(json.dumps(d))
    msg = _expect_error(root, "space.json", "depth")
    assert "'bool'" in msg


def test_nan_in_parameter_names_file_and_column(tmp_path: Path) -> None:
    root = write_toy(tmp_path / "t")
    runs = pd.read_parquet(root / "runs.parquet")
    runs.loc[4, "lr"] = np.nan
    runs.to_parquet(root / "runs.parquet", index=False)
    msg = _expect_error(root, "runs.parquet", "lr")
    assert "must not be NaN" in msg and "'r4'" in msg


@pytest.mark.parametrize(
    ("column", "value", "rule"),
    [
        ("depth", 2.5, "must take values of its grid"),
        ("depth", 5, "must be in"),
        ("opt", "rmsprop", "must be one of"),
        ("status", "exploded", "must be one of"),
        ("task", "zzz", "must name a task"),
        ("lr", 0.5, "must be in"),
    ],
)
def test_bad_values(tmp_path: Path, column: str, value: object, rule: str) -> None:
    root = write_toy(tmp_path / "t")
    runs = pd.read_parquet(root / "runs.parquet")
    runs[column] = runs[column].astype(object)
    runs.loc[0, column] = value
    runs.to_parquet(root / "runs.parquet", index=False)
    msg = _expect_error(root, "runs.parquet", column)
    assert rule in msg


def test_bad_number_is_shown_as_written(tmp_path: Path) -> None:
    root = write_toy(tmp_path / "t")
    runs = pd.read_parquet(root / "runs.parquet")
    runs.loc[0, "lr"] = 0.5  # a float column: the value is a numpy scalar when read back
    runs.to_parquet(root / "runs.parquet", index=False)
    msg = _expect_error(root, "runs.parquet", "lr")
    assert "but got 0.5 (row 0, run_id 'r0')" in msg and "np." not in msg


def test_nan_conditional_active_is_error(tmp_path: Path) -> None:
    root = write_toy(tmp_path / "t")
    runs = pd.read_parquet(root / "runs.parquet")
    runs.loc[3, "momentum"] = np.nan  # opt = sgd: momentum applies
    runs.to_parquet(root / "runs.parquet", index=False)
    assert "where its condition holds" in _expect_error(root, "runs.parquet", "momentum")


def test_missing_files_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_run_table(tmp_path / "nope")
    root = write_toy(tmp_path / "t")
    (root / "space.json").write_text("{not json")
    _expect_error(root, "space.json", "")
    root = write_toy(tmp_path / "u")
    (root / "tasks.parquet").unlink()
    _expect_error(root, "tasks.parquet", "")


def test_concat_rejects_task_collision(tmp_path: Path) -> None:
    h = read_run_table(write_toy(tmp_path / "t"))
    with pytest.raises(DataError, match="already appear"):
        concat_histories([h, h])
    assert concat_histories([h]) is h


def test_reads_shared_single_task_table_with_curves() -> None:
    h = read_run_table(require_shared(SHARED / "data" / "scan_llm"))
    assert isinstance(h, History) and h.mode == "min" and h.cost_unit == "flops"
    assert len(h.task_ids) == 1 and h.curves is not None
    assert h.curves["fraction"].between(0, 1, inclusive="right").all()
