"""Curve extrapolation against exact curves, signal detection, the cross-validated evaluation on
synthetic histories (k-fold and leave-one-group-out), and the CLI's exit codes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from autopipe import metrics
from autopipe.cli import main as cli_main
from autopipe.errors import DataError
from autopipe.history.data import History
from autopipe.history.runtable import write_run_table
from autopipe.predictor.early import EarlyPredictor
from autopipe.predictor.evaluate import (
    EXTRAP,
    LAST,
    MEAN,
    METHODS,
    PRED_DIRECT,
    PRED_RESIDUAL,
    PRIOR_ONLY,
    baseline_scores,
    detect_signal,
    evaluate_predictor,
    extrapolate,
    render_markdown,
    summarize,
)
from tests.fixtures.histories import FAST, FAST_RANKER, make_curve_history


def test_extrapolate_exact_curves() -> None:
    f = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    # a + b f^-c with a=1, b=0.5, c=0.7: value at f=1 is 1.5
    v, how = extrapolate(f, 1.0 + 0.5 * f**-0.7)
    assert v == pytest.approx(1.5, abs=1e-3)
    # a + b exp(-c f) with a=2, b=3, c=4: value at 1 is 2 + 3 e^-4
    v, how = extrapolate(f, 2.0 + 3.0 * np.exp(-4.0 * f))
    assert v == pytest.approx(2.0 + 3.0 * math.exp(-4.0), abs=2e-2)
    # two points of a pure power law 2 f^-0.5: the log-log line gives 2 at f=1
    v, how = extrapolate(np.array([0.25, 0.5]), 2.0 * np.array([0.25, 0.5]) ** -0.5)
    assert v == pytest.approx(2.0) and how == "power (2 points)"
    # one point: the last value; no point: NaN
    assert extrapolate(np.array([0.3]), np.array([4.0])) == (4.0, "last")
    assert math.isnan(extrapolate(np.array([]), np.array([]))[0])


def test_extrapolate_is_clipped_to_one_span() -> None:
    f = np.array([0.1, 0.2, 0.3])
    # a sharp drop then flat: whatever fits, the result stays within one span of the range
    v, _ = extrapolate(f, np.array([10.0, 1.0, 0.9]))
    assert -8.1 <= v <= 19.1


def test_detect_signal() -> None:
    h = make_curve_history(n_configs=20)
    # no curve is named like the objective (accuracy): the eval loss is the first held-out loss
    assert detect_signal(h) == (metrics.EVAL_LOSS, "min")
    # an explicit non-loss signal follows the objective's direction
    assert detect_signal(h, metrics.REWARD_MEAN) == (metrics.REWARD_MEAN, "max")
    with pytest.raises(DataError, match="--signal must be one of the curve signals"):
        detect_signal(h, "valid_loss")


def test_baselines_are_direction_aware() -> None:
    h = make_curve_history(n_configs=30, planted="slope")
    ids = h.runs["run_id"].tolist()
    b = baseline_scores(h, ids, metrics.TRAIN_LOSS, "min", 0.3)
    c = h.curves
    last = c.loc[np.isclose(c[metrics.FRACTION], 0.3)].set_index("run_id")[metrics.TRAIN_LOSS]
    # a loss is minimized: the score is the negated last value
    np.testing.assert_allclose(b.scores[LAST], -last.loc[ids].to_numpy())
    assert np.all(np.isfinite(b.scores[MEAN])) and np.all(np.isfinite(b.scores[EXTRAP]))
    # no row at or below f = 0.05: every baseline is missing
    assert np.all(np.isnan(baseline_scores(h, ids, "train_loss", "min", 0.05).scores[LAST]))


def test_kfold_evaluation_on_planted_slope() -> None:
    h = make_curve_history(n_configs=150, planted="slope", mode="min")
    ev = evaluate_predictor(
        h, fractions=[0.05, 0.3], n_folds=3, config=FAST, ranker=FAST_RANKER, seed=0
    )
    assert "3-fold" in ev.protocol and ev.signal == metrics.EVAL_LOSS
    assert set(ev.rows["method"]) == set(METHODS)
    mean = summarize(ev, "prefix").set_index(["fraction", "method"])["spearman"]
    # the final is the train-loss slope: at f = 0.3 the predictor ranks nearly perfectly and
    # beats the (noisier) eval-loss last value
    assert mean[(0.3, PRED_DIRECT)] > 0.85
    assert mean[(0.3, PRED_DIRECT)] > mean[(0.3, LAST)]
    # at f = 0.05 no run has a prefix: the prefix scope is empty
    assert ev.coverage[0.05] == 0.0 and (0.05, PRED_DIRECT) in mean.index
    assert math.isnan(mean[(0.05, PRED_DIRECT)])
    md = render_markdown(ev, "synthetic")
    assert "| 0.3 | predictor (direct) |" in md and "coverage" in md


def test_lodo_evaluation_uses_the_cross_task_prior() -> None:
    h = make_curve_history(n_configs=60, planted="noise", n_tasks=3)
    ev = evaluate_predictor(h, fractions=[0.5], config=FAST, ranker=FAST_RANKER)
    assert ev.protocol == "leave-one-group-out over 3 groups"
    assert "leave-one-group-out over 2 training groups" in ev.prior_oof
    s = summarize(ev, "all").set_index("method")["spearman"]
    # the final is a function of the learning rate shared across tasks: the prior alone ranks
    # well, and the residual predictor over it stays close on noise prefixes
    assert s[PRIOR_ONLY] > 0.7
    assert s[PRED_RESIDUAL] > s[PRIOR_ONLY] - 0.15


def test_cli_fit_and_evaluate(tmp_path, capsys) -> None:
    h = make_curve_history(n_configs=60, planted="slope")
    table = write_run_table(h, tmp_path / "table")
    out = tmp_path / "pred"
    rc = cli_main(
        ["predictor", "fit", "--history", str(table), "--fraction", "0.3", "--out", str(out)]
    )
    assert rc == 0 and "direct predictor" in capsys.readouterr().out
    assert EarlyPredictor.load(out).fraction == 0.3
    # the linear base is on by default; --linear-alpha none fits trees only
    assert len(EarlyPredictor.load(out).linear) == EarlyPredictor.load(out).config.n_models
    rc = cli_main(
        ["predictor", "fit", "--history", str(table), "--fraction", "0.3", "--out",
         str(tmp_path / "trees"), "--linear-alpha", "none"]
    )  # fmt: skip
    assert rc == 0 and EarlyPredictor.load(tmp_path / "trees").linear == []
    # members bag whole tasks by default; --bag run is recorded in the sidecar
    assert EarlyPredictor.load(out).config.bag_unit == "task"
    rc = cli_main(
        ["predictor", "fit", "--history", str(table), "--fraction", "0.3", "--out",
         str(tmp_path / "runbags"), "--bag", "run"]
    )  # fmt: skip
    assert rc == 0 and EarlyPredictor.load(tmp_path / "runbags").config.bag_unit == "run"
    rc = cli_main(
        ["predictor", "evaluate", "--history", str(table), "--fraction", "0.3", "--folds", "2",
         "--models", "2", "--csv", str(tmp_path / "rows.csv")]
    )  # fmt: skip
    assert rc == 0
    assert "| 0.3 | last observed value |" in capsys.readouterr().out
    assert set(pd.read_csv(tmp_path / "rows.csv")["method"]) == set(METHODS)


def test_cli_errors_exit_2(tmp_path, capsys) -> None:
    h = make_curve_history(n_configs=20)
    bare = History(
        space=h.space, runs=h.runs, tasks=h.tasks, objective="accuracy", mode="max", name="bare"
    )
    table = write_run_table(bare, tmp_path / "bare")
    rc = cli_main(["predictor", "evaluate", "--history", str(table)])
    # a history without curves.parquet cannot be evaluated
    assert rc == 2 and "has no curves" in capsys.readouterr().err
    rc = cli_main(["predictor", "evaluate", "--history", str(table), "--fraction", "1.5"])
    assert rc == 2 and "--fraction must be in (0, 1], but got 1.5" in capsys.readouterr().err
    rc = cli_main(["predictor", "evaluate", "--history", str(table), "--linear-alpha", "0"])
    # a zero penalty is not a ridge (and 'none' is how to turn the base off)
    assert rc == 2 and "--linear-alpha must be a number > 0 or 'none', but got '0'" in (
        capsys.readouterr().err
    )
