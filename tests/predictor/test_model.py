"""The predictor on synthetic histories with known answers: it recovers a planted prefix-slope
relation, falls back to the prior on noise prefixes, respects the objective's direction, and
round-trips through save/load without pickle."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from autopipe import metrics
from autopipe.errors import DataError
from autopipe.history.model import History
from autopipe.predictor.model import (
    DIRECT,
    RESIDUAL,
    EarlyPredictor,
    run_targets,
    within_task_z,
)

from .conftest import FAST, make_curve_history


def _split(h: History, n_test: int = 80) -> tuple[list[str], list[str]]:
    ids = run_targets(h)["run_id"].tolist()
    return ids[n_test:], ids[:n_test]


def test_recovers_planted_slope(slope_history: History) -> None:
    train, test = _split(slope_history)
    model = EarlyPredictor.fit(slope_history, 0.3, run_ids=train, config=FAST)
    assert model.variant == DIRECT
    frame, mean, var = model.predict_history(slope_history, test)
    rho = spearmanr(mean, frame["y_max_cfg"]).statistic
    # the final is the prefix slope plus 1 % noise: held-out ranking is nearly exact
    assert rho > 0.9
    # predictions are on the z scale of the truth, not merely monotone in it
    z = within_task_z(run_targets(slope_history))[: len(test)]
    assert float(np.sqrt(np.mean((mean - z) ** 2))) < 0.4
    # the noise handed to the GP is never below the floor and is finite
    assert np.all(var >= model.floor) and np.all(np.isfinite(var))


def test_without_prefix_the_slope_is_not_recoverable(slope_history: History) -> None:
    train, test = _split(slope_history)
    # at f = 0.05 no run has reported yet, and the configuration is unrelated to the final
    model = EarlyPredictor.fit(slope_history, 0.05, run_ids=train, config=FAST)
    frame, mean, _ = model.predict_history(slope_history, test)
    assert abs(spearmanr(mean, frame["y_max_cfg"]).statistic) < 0.35


def test_falls_back_to_prior_on_noise_prefix(noise_history: History) -> None:
    frame = run_targets(noise_history)
    z = within_task_z(frame)
    rng = np.random.default_rng(1)
    prior = z + 0.3 * rng.normal(size=len(z))  # an informative prior (Spearman ~0.95)
    train, test = _split(noise_history)
    n_test = len(test)
    model = EarlyPredictor.fit(
        noise_history, 0.5, prior_z=prior[n_test:], run_ids=train, config=FAST
    )
    assert model.variant == RESIDUAL
    got, mean, _ = model.predict_history(noise_history, test, prior[:n_test])
    truth = got["y_max_cfg"].to_numpy()
    rho_prior = spearmanr(prior[:n_test], truth).statistic
    rho_pred = spearmanr(mean, truth).statistic
    # the prefix is noise, so the prediction keeps the prior's ranking ...
    assert spearmanr(mean, prior[:n_test]).statistic > 0.9
    # ... and ranks the truth about as well as the prior does
    assert rho_pred > rho_prior - 0.05
    # and stays close to the prior in value (residuals learned from noise are small)
    assert float(np.mean(np.abs(mean - prior[:n_test]))) < 0.35


def test_direction_is_respected() -> None:
    h_max = make_curve_history(planted="slope", mode="max", n_configs=160)
    h_min = make_curve_history(planted="slope", mode="min", n_configs=160)
    # same runs and curves, objective negated: the z target (larger is better) is identical
    np.testing.assert_allclose(within_task_z(run_targets(h_max)), within_task_z(run_targets(h_min)))
    m = EarlyPredictor.fit(h_min, 0.3, config=FAST)
    frame, mean, _ = m.predict_history(h_min)
    # for mode min, a higher prediction means a lower (better) recorded objective
    y = h_min.runs.set_index("run_id").loc[frame["run_id"], "y"].to_numpy()
    assert spearmanr(mean, y).statistic < -0.9


def test_predict_reports_matches_history_and_round_trips(tmp_path, slope_history: History) -> None:
    train, test = _split(slope_history, n_test=5)
    model = EarlyPredictor.fit(slope_history, 0.3, run_ids=train, config=FAST)
    frame, mean, var = model.predict_history(slope_history, test)
    curves = slope_history.curves
    runs = slope_history.runs.set_index("run_id")
    path = model.save(tmp_path / "pred")
    # XGBoost's own format plus a JSON sidecar, nothing pickled
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["predictor.json"] + [f"model_{k}.ubj" for k in range(FAST.n_models)]
    )
    side = json.loads((path / "predictor.json").read_text())
    assert side["variant"] == DIRECT and side["fraction"] == 0.3
    loaded = EarlyPredictor.load(path)
    for i, rid in enumerate(frame["run_id"]):
        rows = curves.loc[curves["run_id"] == rid]
        # a live trial reports every row, including ones past f (ignored by the predictor)
        reports = rows.drop(columns="run_id").to_dict("records")
        config = {"lr": float(runs.loc[rid, "lr"]), "beta": float(runs.loc[rid, "beta"])}
        mu, v = loaded.predict_reports(reports, config, {"size": 1.0}, None)
        assert mu == pytest.approx(mean[i], abs=1e-5)
        assert v == pytest.approx(var[i], rel=1e-5)


def test_batch_api_and_residual_needs_prior(slope_history: History) -> None:
    frame = run_targets(slope_history)
    prior = within_task_z(frame)
    model = EarlyPredictor.fit(slope_history, 0.3, prior_z=prior, config=FAST)
    report = [{metrics.FRACTION: 0.1, metrics.TRAIN_LOSS: 2.9}]
    cfg = {"lr": 1e-3, "beta": 0.5}
    with pytest.raises(DataError, match="residual variant: prior_z must be a finite float"):
        model.predict_reports(report, cfg, None, None)
    mu, v = model.predict_reports(report, cfg, None, 0.5)
    assert math.isfinite(mu) and v >= model.floor
    mean, var = model.predict_batch(
        [report, report], [cfg, cfg], [None, None], np.array([0.5, 0.5])
    )
    # the batch API gives the single-trial answer for each trial
    np.testing.assert_allclose(mean, [mu, mu], atol=1e-6)
    with pytest.raises(DataError, match="one length"):
        model.predict_batch([report], [cfg, cfg], [None, None], np.array([0.5, 0.5]))


def test_no_curves_is_a_data_error(slope_history: History) -> None:
    h = History(
        space=slope_history.space,
        runs=slope_history.runs,
        tasks=slope_history.tasks,
        curves=None,
        objective="accuracy",
        mode="max",
        name="no-curves",
    )
    with pytest.raises(DataError, match="no curve signals"):
        EarlyPredictor.fit(h, 0.3, config=FAST)


def test_load_rejects_bad_sidecar(tmp_path) -> None:
    (tmp_path / "predictor.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DataError, match="format must be"):
        EarlyPredictor.load(tmp_path)
    with pytest.raises(DataError, match="sidecar is missing"):
        EarlyPredictor.load(tmp_path / "nowhere")
