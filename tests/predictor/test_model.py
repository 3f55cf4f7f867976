"""The predictor on synthetic histories with known answers: it recovers a planted prefix-slope
relation, falls back to the prior on noise prefixes, respects the objective's direction, and
round-trips through save/load without pickle."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm, spearmanr

from autopipe import metrics
from autopipe.errors import DataError
from autopipe.history.data import History
from autopipe.predictor.early import DIRECT, RESIDUAL, EarlyPredictor, PredictorConfig
from autopipe.predictor.linear import LinearBase
from autopipe.predictor.targets import member_bag, peer_ranks, run_targets, within_task_z
from autopipe.space import Param, Space
from tests.fixtures.histories import FAST, make_curve_history


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
    frame, mean, var = model.predict_history(slope_history, test, n_peers=0)
    # every other test run as a peer (the history holds one task)
    _, mean_p, var_p = model.predict_history(slope_history, test, n_peers=len(test))
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
    # a live trial reports every row, including ones past f (ignored by the predictor)
    reports = {
        rid: curves.loc[curves["run_id"] == rid].drop(columns="run_id").to_dict("records")
        for rid in frame["run_id"]
    }
    for i, rid in enumerate(frame["run_id"]):
        config = {"lr": float(runs.loc[rid, "lr"]), "beta": float(runs.loc[rid, "beta"])}
        mu, v = loaded.predict_reports(reports[rid], config, {"size": 1.0}, None)
        # no peers: the same as a history prediction without peers
        assert mu == pytest.approx(mean[i], abs=1e-5)
        assert v == pytest.approx(var[i], rel=1e-5)
        others = [reports[r] for r in frame["run_id"] if r != rid]
        mu, v = loaded.predict_reports(reports[rid], config, {"size": 1.0}, None, peers=others)
        # the other trials as live peers: the same as the history prediction among them
        assert mu == pytest.approx(mean_p[i], abs=1e-5)
        assert v == pytest.approx(var_p[i], rel=1e-5)


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
    # no curves file at all, and one with only run ids and fractions: the message says which
    for curves, expected in (
        (None, r"has no curves \(no curves.parquet\)"),
        (slope_history.curves[["run_id", "fraction"]], "curves without signal columns"),
    ):
        h = History(
            space=slope_history.space,
            runs=slope_history.runs,
            tasks=slope_history.tasks,
            curves=curves,
            objective="accuracy",
            mode="max",
            name="no-curves",
        )
        with pytest.raises(DataError, match=expected):
            EarlyPredictor.fit(h, 0.3, config=FAST)


def test_load_rejects_bad_sidecar(tmp_path) -> None:
    (tmp_path / "predictor.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(DataError, match="format must be"):
        EarlyPredictor.load(tmp_path)
    with pytest.raises(DataError, match="sidecar is missing"):
        EarlyPredictor.load(tmp_path / "nowhere")


def _scaled_tasks_history(scales=(1.0, 2.0, 3.0, 8.0), n=60, seed=0) -> History:
    """Tasks whose curves have their own scale: train_loss = c (1 - 0.1 s f) with the hidden rate
    ``s`` setting the final objective. Raw prefix values of a task with an unseen scale ``c``
    lie outside the training range; their ranks within the task do not."""
    rng = np.random.default_rng(seed)
    space = Space([Param("lr", "float", low=1e-5, high=1e-2, log=True)])
    tasks = pd.DataFrame(
        {
            "task": [f"t{i}" for i in range(len(scales))],
            "group": [f"g{i}" for i in range(len(scales))],
        }
    )
    runs, curves = [], []
    for t, c in enumerate(scales):
        s = rng.uniform(0.5, 2.5, n)
        for i in range(n):
            rid = f"t{t}-r{i}"
            runs.append((rid, f"t{t}", 0, float(np.exp(rng.uniform(-11, -5))), s[i]))
            for f in (0.1, 0.2, 0.3, 0.4, 0.5, 1.0):
                loss = c * (1.0 - 0.1 * s[i] * f) + 0.002 * c * rng.normal()
                curves.append({"run_id": rid, metrics.FRACTION: f, metrics.TRAIN_LOSS: loss})
    frame = pd.DataFrame(runs, columns=["run_id", "task", "seed", "lr", "y"])
    frame["cost"] = 1.0
    frame["status"] = "ok"
    return History(space=space, runs=frame, tasks=tasks, curves=pd.DataFrame(curves))


def _unseen_scale_rho(config, scales=(1.0, 2.0, 3.0, 8.0)) -> float:
    """Spearman of the predictions vs. the truth on the held-out task (the last scale)."""
    h = _scaled_tasks_history(scales)
    train = [r for r in h.runs["run_id"] if not r.startswith("t3-")]
    test = [r for r in h.runs["run_id"] if r.startswith("t3-")]
    y = h.runs.set_index("run_id").loc[test, "y"].to_numpy()
    model = EarlyPredictor.fit(h, 0.5, run_ids=train, config=config)
    _, mean, _ = model.predict_history(h, test, n_peers=15)
    return float(spearmanr(mean, y).statistic)


def test_peer_ranks_transfer_to_a_task_with_unseen_scale() -> None:
    trees = replace(FAST, linear_alpha=None)
    rho_raw = _unseen_scale_rho(replace(trees, relative=False))
    rho_rel = _unseen_scale_rho(trees)
    # ranked among 15 peers of its own task, the prefix orders the held-out task
    assert rho_rel > 0.9
    # raw values of the unseen scale fall outside the splits learned on the other tasks
    # (seeds 0-2 of this history: 0.35-0.71 raw vs 0.94-0.98 ranked, trees only)
    assert rho_rel > rho_raw + 0.2


def test_linear_base_orders_a_task_the_trees_cannot() -> None:
    # the held-out task's scale (3) lies between the training tasks' (1, 2, 8)
    scales = (1.0, 2.0, 8.0, 3.0)
    rho_trees = _unseen_scale_rho(replace(FAST, relative=False, linear_alpha=None), scales)
    rho_linear = _unseen_scale_rho(replace(FAST, relative=False), scales)
    # from the raw values alone, the linear base orders the held-out task: the loss slope is
    # monotone in the hidden rate on every task, whatever the level, while the trees' splits
    # sit at other tasks' levels (seeds 0-2 of this history: 0.99 with the base vs 0.15-0.84)
    assert rho_linear > 0.95
    assert rho_linear > rho_trees + 0.1
    # with peer ranks as well it stays there
    assert _unseen_scale_rho(FAST, scales) > 0.95


def test_linear_base_by_hand() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    X[:, 2] = np.nan  # a feature that never reported
    X[:5, 1] = np.nan  # and one with gaps
    y = 2.0 * X[:, 0] + 0.05 * rng.normal(size=200)
    base = LinearBase.fit(X, y, alpha=1e-4, cols=np.array([0, 1, 2]))
    # the planted slope, in standardized units, and nothing on the other columns
    assert base.w[0] == pytest.approx(2.0 * np.nanstd(X[:, 0]), rel=0.02)
    assert abs(base.w[1]) < 0.05 and base.w[2] == 0.0
    # missing values predict as the training mean of their column
    row = np.array([[np.nan, np.nan, np.nan]])
    assert base.predict(row)[0] == pytest.approx(base.b)
    # a heavy penalty shrinks towards the mean target
    flat = LinearBase.fit(X, y, alpha=1e4, cols=np.array([0, 1, 2]))
    assert np.ptp(flat.predict(X)) < 0.01 * np.ptp(base.predict(X))
    # it reads only its own columns of a wider row, and round-trips through JSON
    wide = np.hstack([X, rng.normal(size=(200, 2))])
    part = LinearBase.fit(wide, y, alpha=1e-4, cols=np.array([0, 1]))
    back = LinearBase.from_json(json.loads(json.dumps(part.to_json())))
    np.testing.assert_allclose(back.predict(wide), part.predict(wide))
    np.testing.assert_allclose(part.predict(wide), base.predict(X), atol=0.02)


def test_peer_ranks_by_hand() -> None:
    p = np.array([2.0, np.nan, 5.0, 1.0])
    Q = np.array([[1.0, 1.0, np.nan, 1.0], [3.0, 2.0, np.nan, 1.0], [2.0, 0.0, np.nan, 0.0]])
    out = peer_ranks(p, Q)
    # 2.0 among {1, 3, 2} and itself: mid-rank 2.5 of 4 -> Phi^-1(0.5) = 0
    assert out[0] == pytest.approx(0.0)
    # the trial's own value is missing: no rank
    assert math.isnan(out[1])
    # no peer has the feature: no rank
    assert math.isnan(out[2])
    # 1.0 among {1, 1, 0} and itself: 1 lower, 2 ties -> mid-rank 3 of 4 -> Phi^-1(0.625)
    assert out[3] == pytest.approx(norm.ppf(0.625))
    # the last entry is the number of peers
    assert out[4] == 3.0
    # no peers at all: every rank missing, count 0
    none = peer_ranks(p, np.empty((0, 4)))
    assert np.isnan(none[:-1]).all() and none[-1] == 0.0


def test_old_sidecar_without_peer_ranks_loads(tmp_path, slope_history: History) -> None:
    model = EarlyPredictor.fit(slope_history, 0.3, config=replace(FAST, relative=False))
    path = model.save(tmp_path / "old")
    side = json.loads((path / "predictor.json").read_text())
    del side["config"]["relative"]  # as written before peer ranks existed
    (path / "predictor.json").write_text(json.dumps(side))
    loaded = EarlyPredictor.load(path)
    # an old predictor keeps its feature layout: no peer-rank columns
    assert not loaded.relative and not any(n.startswith("rel:") for n in loaded.feature_names)


def test_old_sidecar_without_linear_base_loads(tmp_path, slope_history: History) -> None:
    trees = EarlyPredictor.fit(slope_history, 0.3, config=replace(FAST, linear_alpha=None))
    path = trees.save(tmp_path / "old")
    side = json.loads((path / "predictor.json").read_text())
    # as written before the linear base (and before task bags)
    del side["config"]["linear_alpha"], side["linear"], side["config"]["bag_unit"]
    (path / "predictor.json").write_text(json.dumps(side))
    loaded = EarlyPredictor.load(path)
    # an old predictor is trees only, was fitted on run bags and predicts as it did
    assert loaded.config.linear_alpha is None and loaded.linear == []
    assert loaded.config.bag_unit == "run"
    _, before, _ = trees.predict_history(slope_history)
    _, after, _ = loaded.predict_history(slope_history)
    np.testing.assert_allclose(after, before, atol=1e-6)


def test_member_bag_by_hand() -> None:
    tasks = np.array(["a"] * 3 + ["b"] * 2 + ["c"] * 4 + ["d"] * 1 + ["e"] * 2)
    rng = np.random.default_rng(0)
    bag = member_bag(tasks, 0.6, "task", rng)
    picked = set(tasks[bag])
    # round(0.6 * 5 tasks) = 3 tasks, each with every one of its runs and nothing else
    assert len(picked) == 3
    assert sorted(bag) == sorted(np.flatnonzero(np.isin(tasks, list(picked))))
    # a tiny fraction still keeps 2 tasks, so a member never learns from a single task
    assert len(set(tasks[member_bag(tasks, 0.01, "task", rng)])) == 2
    # "run" samples round(0.6 * 12) = 7 distinct runs across tasks, sorted
    runs = member_bag(tasks, 0.6, "run", rng)
    assert len(runs) == 7 and len(set(runs)) == 7 and np.all(np.diff(runs) > 0)
    # with 2 tasks, leaving one out would fit a member on the other alone: it samples runs
    two = np.array(["a"] * 5 + ["b"] * 5)
    assert len(member_bag(two, 0.8, "task", rng)) == 8
    # the same generator state gives the same bag
    assert np.array_equal(
        member_bag(tasks, 0.6, "task", np.random.default_rng(3)),
        member_bag(tasks, 0.6, "task", np.random.default_rng(3)),
    )


def test_task_bagged_predictor_transfers_to_an_unseen_task() -> None:
    h = make_curve_history(n_configs=60, n_tasks=5, seed=2)
    frame = run_targets(h)
    train = frame.loc[frame["task"] != "t4", "run_id"].tolist()
    test = frame.loc[frame["task"] == "t4", "run_id"].tolist()
    model = EarlyPredictor.fit(h, 0.3, run_ids=train, config=replace(FAST, bag_unit="task"))
    # each member left 1 of the 4 training tasks out whole (which runs: test_member_bag_by_hand);
    # the OOB error of those runs sets a finite noise floor
    assert math.isfinite(model.training["oob_mse"])
    assert model.floor >= model.training["oob_mse"]
    # the planted slope transfers to a fifth task no member saw
    frame, mean, _ = model.predict_history(h, test)
    assert spearmanr(mean, frame["y_max_cfg"]).statistic > 0.8
    # an unknown unit is a one-line error naming the field
    with pytest.raises(DataError, match=r"bag_unit must be one of \['task', 'run'\]"):
        PredictorConfig(bag_unit="tasks").validate()


def test_load_rejects_a_linear_base_that_does_not_fit(tmp_path, slope_history: History) -> None:
    model = EarlyPredictor.fit(slope_history, 0.3, config=FAST)
    path = model.save(tmp_path / "pred")
    side = json.loads((path / "predictor.json").read_text())
    # one base per model
    (path / "predictor.json").write_text(json.dumps({**side, "linear": side["linear"][:1]}))
    with pytest.raises(DataError, match="one base per model"):
        EarlyPredictor.load(path)
    # and only columns the model has
    bad = [{**lin, "cols": [c + 1000 for c in lin["cols"]]} for lin in side["linear"]]
    (path / "predictor.json").write_text(json.dumps({**side, "linear": bad}))
    with pytest.raises(DataError, match="outside the"):
        EarlyPredictor.load(path)
    # and every field it needs
    bad = [{k: v for k, v in lin.items() if k != "w"} for lin in side["linear"]]
    (path / "predictor.json").write_text(json.dumps({**side, "linear": bad}))
    with pytest.raises(DataError, match="linear base must have numeric cols, mu, sd, w and b"):
        EarlyPredictor.load(path)


def test_a_malformed_peer_report_costs_only_that_report(slope_history: History) -> None:
    model = EarlyPredictor.fit(slope_history, 0.3, config=FAST)
    mine = [{metrics.FRACTION: f, metrics.TRAIN_LOSS: 3.0 - 1.5 * f} for f in (0.1, 0.2, 0.3)]
    peer = [{metrics.FRACTION: f, metrics.TRAIN_LOSS: 3.0 - 2.0 * f} for f in (0.1, 0.2, 0.3)]
    cfg = {"lr": 1e-3, "beta": 0.5}
    clean = model.predict_reports(mine, cfg, None, None, peers=[peer])
    bad = [*peer, {metrics.TRAIN_LOSS: 0.1}, {metrics.FRACTION: 0.0, metrics.TRAIN_LOSS: 9.0}]
    # reports without a valid fraction are dropped from the peer, not raised from the trial
    assert model.predict_reports(mine, cfg, None, None, peers=[bad]) == clean
