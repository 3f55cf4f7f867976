"""Prefix statistics against hand-computed answers, the prefix cut-off and windows, and the
agreement of live reports with history curves."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from autopipe import metrics
from autopipe.errors import DataError
from autopipe.predictor.features import STATS, PrefixFeaturizer, has_prefix, signal_stats

IDX = {s: i for i, s in enumerate(STATS)}


def test_signal_stats_known_values() -> None:
    fr = np.array([0.1, 0.2, 0.3, 0.4])
    v = np.array([4.0, 3.0, 2.5, 1.5])
    s = signal_stats(fr, v)
    assert s[IDX["mean"]] == pytest.approx(2.75)
    assert s[IDX["max"]] == 4.0 and s[IDX["min"]] == 1.5
    assert s[IDX["std"]] == pytest.approx(np.std(v))
    # least squares over x = 0.1..0.4: slope = cov(x, v) / var(x) = -0.0775 / 0.0125 = -8.0
    assert s[IDX["slope"]] == pytest.approx(-8.0)
    # mean first difference = (1.5 - 4.0) / 3
    assert s[IDX["diff"]] == pytest.approx(-2.5 / 3)
    assert s[IDX["last"]] == 1.5


def test_signal_stats_one_point_and_missing() -> None:
    one = signal_stats(np.array([0.2]), np.array([3.0]))
    # one point: slope and difference are undefined, spread is zero
    assert math.isnan(one[IDX["slope"]]) and math.isnan(one[IDX["diff"]])
    assert one[IDX["std"]] == 0.0 and one[IDX["mean"]] == 3.0
    # NaN values are skipped, not propagated
    s = signal_stats(np.array([0.1, 0.2, 0.3]), np.array([1.0, np.nan, 3.0]))
    assert s[IDX["mean"]] == 2.0 and s[IDX["slope"]] == pytest.approx(10.0)
    assert np.all(np.isnan(signal_stats(np.array([0.1]), np.array([np.nan]))))


def test_prefix_cutoff_and_last_window() -> None:
    fz = PrefixFeaturizer((metrics.TRAIN_LOSS,), fraction=0.5)
    fr = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0])
    v = np.array([10.0, 9.0, 8.0, 7.0, 6.0, -100.0, -100.0])
    x = dict(zip(fz.names, fz.from_arrays(fr, v.reshape(-1, 1)), strict=True))
    # rows past f = 0.5 are ignored
    assert x["train_loss:all:min"] == 6.0 and x["prefix:n_points"] == 5.0
    assert x["prefix:last_fraction"] == 0.5
    # the last-20 % window holds fractions >= 0.8 * 0.5 = 0.4: values 7 and 6
    assert x["train_loss:last20:mean"] == pytest.approx(6.5)
    assert x["train_loss:last20:slope"] == pytest.approx(-10.0)
    assert x["train_loss:all:slope"] == pytest.approx(-10.0)


def test_reports_match_curves_and_unknown_signals_are_missing() -> None:
    sig = (metrics.TRAIN_LOSS, metrics.REWARD_MEAN, metrics.KL)
    fz = PrefixFeaturizer(sig, fraction=0.3)
    curves = pd.DataFrame(
        {
            "run_id": ["a", "a", "a", "b"],
            metrics.FRACTION: [0.1, 0.2, 0.4, 0.5],
            metrics.TRAIN_LOSS: [2.0, 1.5, 1.0, 3.0],
            metrics.REWARD_MEAN: [0.1, 0.3, 0.9, 0.0],
        }
    )
    X = fz.from_curves(curves, ["a", "b", "c"])
    reports = [
        {metrics.FRACTION: 0.1, metrics.TRAIN_LOSS: 2.0, metrics.REWARD_MEAN: 0.1, "stage": "sft"},
        {metrics.FRACTION: 0.2, metrics.TRAIN_LOSS: 1.5, metrics.REWARD_MEAN: 0.3},
        {metrics.FRACTION: 0.4, metrics.TRAIN_LOSS: 1.0, metrics.REWARD_MEAN: 0.9},
    ]
    # the same run from live reports (with a non-numeric key) and from the curves table
    np.testing.assert_array_equal(fz.from_reports(reports), X[0])
    names = fz.names
    # kl is in neither source: all its statistics are missing
    assert np.all(np.isnan(X[0][[i for i, n in enumerate(names) if n.startswith("kl:")]]))
    # runs b (first row past f) and c (no rows) have no prefix
    assert X[1][-2] == 0.0 and X[2][-2] == 0.0 and np.isnan(X[1][0])
    np.testing.assert_array_equal(has_prefix(curves, ["a", "b", "c"], 0.3), [True, False, False])


def test_fraction_tolerance_admits_rounded_checkpoints() -> None:
    fz = PrefixFeaturizer((metrics.EVAL_LOSS,), fraction=0.1)
    # scan_llm's 10 % checkpoints sit at 0.10000197 (step rounding)
    x = fz.from_arrays(np.array([0.10000197, 0.2]), np.array([[2.0], [1.0]]))
    assert x[-2] == 1.0


def test_bad_inputs_are_named() -> None:
    with pytest.raises(DataError, match="fraction must be in"):
        PrefixFeaturizer((metrics.TRAIN_LOSS,), fraction=0.0)
    fz = PrefixFeaturizer((metrics.TRAIN_LOSS,), fraction=0.5)
    with pytest.raises(DataError, match=r"reports\[1\] must have a 'fraction' key"):
        fz.from_reports([{metrics.FRACTION: 0.1}, {metrics.TRAIN_LOSS: 1.0}])
    with pytest.raises(DataError, match=r"reports\[0\].fraction must be in \(0, 1\]"):
        fz.from_reports([{metrics.FRACTION: 1.5}])


def test_pipeline_style_reports_match_the_history_curve() -> None:
    sig = (metrics.TRAIN_LOSS, metrics.EVAL_LOSS)
    fz = PrefixFeaturizer(sig, fraction=0.5)
    # what MLflow records and the history export reads back: one row per step
    curves = pd.DataFrame(
        {
            "run_id": ["a"] * 4,
            metrics.FRACTION: [0.15, 0.3, 0.45, 0.6],
            metrics.TRAIN_LOSS: [2.0, 1.5, 1.2, 1.0],
            metrics.EVAL_LOSS: [np.nan, 1.7, 1.4, np.nan],
        }
    )
    # what a trial reports live: the trainer's training log and its evaluation log at the same
    # step as two reports, then the stop report at exactly f, which carries no signal
    reports = [
        {metrics.FRACTION: 0.15, metrics.TRAIN_LOSS: 2.0},
        {metrics.FRACTION: 0.3, metrics.TRAIN_LOSS: 1.5},
        {metrics.FRACTION: 0.3, metrics.EVAL_LOSS: 1.7},
        {metrics.FRACTION: 0.45, metrics.TRAIN_LOSS: 1.2},
        {metrics.FRACTION: 0.45, metrics.EVAL_LOSS: 1.4},
        {metrics.FRACTION: 0.5, metrics.EARLY_STOPPED: 1.0, "stage": "sft"},
    ]
    live = fz.from_reports(reports)
    # the same features: the point count, the last fraction (0.45, not 0.5) and the last-20 %
    # window all as in the history the predictor was fitted on
    np.testing.assert_array_equal(live, fz.from_curves(curves, ["a"])[0])
    assert live[-2] == 3.0 and live[-1] == 0.45
