"""The XGBoost ranking prior: recovers a planted, meta-feature-dependent ranking; works without
meta-features; saves and loads without pickle; subsamples evenly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import spearmanr

from autopipe.errors import DataError
from autopipe.history.data import History
from autopipe.prior.ranker import RankerConfig, RankingPrior, even_subsample, relevance_labels
from tests.fixtures.histories import with_costs

FAST = RankerConfig(n_estimators=150)


def test_recovers_planted_ranking_on_unseen_task(synthetic: History) -> None:
    held = "t3"
    prior = RankingPrior.fit(synthetic, FAST, tasks=[t for t in synthetic.task_ids if t != held])
    assert "scale" in prior.meta_filter.kept  # the informative meta-feature survives the filter
    assert prior.meta_filter.dropped["const"] == "constant"
    ct = synthetic.config_table(held)
    s = prior.score(synthetic.meta_features(held), ct)
    # scores are z-scores within the scored set
    assert s.mean() == pytest.approx(0.0, abs=1e-9) and s.std() == pytest.approx(1.0, abs=1e-9)
    # trees cannot interpolate between tasks: copying the ranking of the nearest training task in
    # meta-feature space (t2) gives Spearman 0.84, so the ranker must get at least close to it
    assert spearmanr(s, ct["y_max"]).statistic > 0.8
    best = ct["y_max"].to_numpy()[np.argmax(s)]
    assert best >= np.sort(ct["y_max"].to_numpy())[-5]  # top-1 is a true top-5 configuration


def test_meta_features_move_the_ranking(synthetic: History) -> None:
    prior = RankingPrior.fit(synthetic, FAST)
    ct = synthetic.config_table("t0")
    lo = prior.score({"scale": 0.0, "noise": 0.0}, ct)
    hi = prior.score({"scale": 1.0, "noise": 0.0}, ct)
    u_lr = synthetic.space["lr"].to_unit
    best_lo = u_lr(ct["lr"].to_numpy()[np.argmax(lo)])
    best_hi = u_lr(ct["lr"].to_numpy()[np.argmax(hi)])
    # the planted optimum moves from lr unit 0.1 (scale 0) to 0.9 (scale 1)
    assert best_lo < 0.35 and best_hi > 0.65


def test_config_only_and_missing_meta(synthetic: History) -> None:
    no_meta = History(
        space=synthetic.space,
        runs=synthetic.runs,
        tasks=synthetic.tasks[["task", "group"]],
        objective=synthetic.objective,
        mode=synthetic.mode,
    )
    prior = RankingPrior.fit(no_meta, FAST)
    assert prior.meta_filter.kept == [] and len(prior.feature_names) == synthetic.space.n_features
    ct = synthetic.config_table("t0")
    # config-only ranker still learns the shared structure (width 64, adam)
    top = ct.iloc[np.argsort(-prior.score(None, ct))[:10]]
    assert (top["opt"] == "adam").mean() >= 0.8
    # a meta-conditioned prior scores a task whose meta-features are missing (NaN features)
    with_meta = RankingPrior.fit(synthetic, FAST)
    s = with_meta.score({}, ct)
    assert np.isfinite(s).all()


def test_min_objective_is_ranked_in_the_right_direction(make_table: Any) -> None:
    h = make_table(mode="min")
    prior = RankingPrior.fit(h, FAST, tasks=[t for t in h.task_ids if t != "t3"])
    ct = h.config_table("t3")
    s = prior.score(h.meta_features("t3"), ct)
    # high score must mean low loss
    assert spearmanr(s, ct["y"]).statistic < -0.7


def test_save_load_round_trip(tmp_path: Path, synthetic: History) -> None:
    prior = RankingPrior.fit(synthetic, FAST)
    path = prior.save(tmp_path / "prior")
    files = sorted(p.name for p in path.iterdir())
    assert files == ["model_0.ubj", "model_1.ubj", "model_2.ubj", "prior.json"]  # no pickle
    side = json.loads((path / "prior.json").read_text())
    assert (
        side["feature_names"] == prior.feature_names
        and side["config"]["max_configs_per_task"] == 600
    )
    back = RankingPrior.load(path)
    ct = synthetic.config_table("t5")
    meta = synthetic.meta_features("t5")
    np.testing.assert_allclose(back.score(meta, ct), prior.score(meta, ct), rtol=1e-6, atol=1e-6)
    records = synthetic.records(ct.head(7))
    np.testing.assert_allclose(back.score(meta, records), prior.score(meta, ct.head(7)), atol=1e-6)


def test_load_errors(tmp_path: Path, synthetic: History) -> None:
    with pytest.raises(DataError, match="sidecar is missing"):
        RankingPrior.load(tmp_path)
    path = RankingPrior.fit(synthetic, RankerConfig(n_estimators=5, n_models=1)).save(
        tmp_path / "p"
    )
    (path / "model_0.ubj").unlink()
    with pytest.raises(DataError, match="model file"):
        RankingPrior.load(path)


def test_same_seed_same_scores_other_seed_differs(synthetic: History) -> None:
    ct = synthetic.config_table("t2")
    meta = synthetic.meta_features("t2")
    cfg = RankerConfig(n_estimators=30, max_configs_per_task=40)
    a = RankingPrior.fit(synthetic, cfg).score(meta, ct)
    b = RankingPrior.fit(synthetic, cfg).score(meta, ct)
    c = RankingPrior.fit(
        synthetic, RankerConfig(n_estimators=30, max_configs_per_task=40, seed=1)
    ).score(meta, ct)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_even_subsample_covers_the_range() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=1000)
    idx = even_subsample(y, 100, rng)
    assert len(idx) == 100 and len(set(idx)) == 100
    ranks = np.argsort(np.argsort(y))[idx]
    # exactly one pick in each decile-of-deciles stratum of the ranking
    np.testing.assert_array_equal(np.sort(ranks) // 10, np.arange(100))
    assert len(even_subsample(y[:50], 100, rng)) == 50


def test_relevance_labels_are_integer_quantile_bins() -> None:
    y = np.array([0.1, 0.5, 0.5, 0.9, 0.3])
    lab = relevance_labels(y, 4)
    np.testing.assert_array_equal(lab, [0, 2, 2, 3, 1])
    assert relevance_labels(np.array([1.0]), 4).tolist() == [0.0]


def test_cost_model_predicts_relative_cost_on_an_unseen_task(
    tmp_path: Path, synthetic: History
) -> None:
    costly = with_costs(synthetic)
    prior = RankingPrior.fit(costly, FAST, tasks=[f"t{i}" for i in range(7)])
    ct = costly.config_table("t7")  # held out, another cost level (factor 10)
    meta = costly.meta_features("t7")
    got = prior.log_cost_features(meta, costly.encode(ct))
    true = np.log(ct["cost"].to_numpy())
    true = true - true.mean()
    # the held-out task's relative costs, not its absolute level (10x the t0 costs)
    assert spearmanr(got, true)[0] > 0.95
    assert np.abs(got - true).max() < 0.3
    # the cost model is saved beside the rankers (UBJSON, named in the sidecar) and reloaded
    path = prior.save(tmp_path / "prior")
    assert (path / "cost.ubj").is_file()
    assert json.loads((path / "prior.json").read_text())["cost_model"] == "cost.ubj"
    back = RankingPrior.load(path)
    np.testing.assert_allclose(back.log_cost_features(meta, costly.encode(ct)), got, atol=1e-6)
    # a sidecar naming a cost model whose file is gone is a one-line error
    (path / "cost.ubj").unlink()
    with pytest.raises(DataError, match="cost model named in prior.json is missing"):
        RankingPrior.load(path)


def test_no_cost_model_without_cost_differences(synthetic: History) -> None:
    # every run of the synthetic table costs 1: there is nothing to predict
    assert RankingPrior.fit(synthetic, FAST).log_cost_features(None, np.zeros((3, 4))) is None
    # switched off in the configuration: no cost model even where costs differ
    off = RankingPrior.fit(with_costs(synthetic), replace(FAST, fit_cost=False))
    assert off.cost_model is None and off.training["cost_rows"] == 0
