"""Ranking metrics against hand-computed answers, LODO on the synthetic table against known
orders of magnitude, the single-task refusal, and the CLI."""

from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autopipe.errors import DataError
from autopipe.history.data import History
from autopipe.history.runtable import write_run_table
from autopipe.prior.evaluate import (
    CONFIG_ONLY,
    GLOBAL_BEST,
    PRIOR,
    RANDOM,
    GlobalBest,
    lodo_evaluate,
    ndcg_at_k,
    pairwise_accuracy,
    ranking_metrics,
    render_markdown,
    summarize,
)
from autopipe.prior.ranker import RankerConfig

FAST = RankerConfig(n_estimators=100, n_models=2)


def test_ndcg_known_values() -> None:
    y = np.array([3.0, 2.0, 1.0, 0.0])  # percentile gains 1, 2/3, 1/3, 0
    assert ndcg_at_k(y, np.array([0, 1, 2, 3]), 2) == pytest.approx(1.0)
    # reversed order: DCG@2 = 0 + (1/3)/log2(3); IDCG@2 = 1 + (2/3)/log2(3)
    expect = (1 / 3 / math.log2(3)) / (1 + 2 / 3 / math.log2(3))
    assert ndcg_at_k(y, np.array([3, 2, 1, 0]), 2) == pytest.approx(expect)
    # min-max gain variant: gains 1, 2/3, 1/3, 0 as well for an evenly spaced y
    assert ndcg_at_k(y, np.array([3, 2, 1, 0]), 2, gain="y") == pytest.approx(expect)


def test_pairwise_accuracy_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=40).astype(float)  # many ties in y
    s = rng.integers(0, 6, size=40).astype(float)  # many ties in s
    good = total = 0.0
    for i, j in itertools.combinations(range(40), 2):
        if y[i] == y[j]:
            continue
        total += 1
        good += 0.5 if s[i] == s[j] else float((s[i] - s[j]) * (y[i] - y[j]) > 0)
    assert pairwise_accuracy(y, s) == pytest.approx(good / total, abs=1e-12)
    assert pairwise_accuracy(y, y) == pytest.approx(1.0)
    assert pairwise_accuracy(y, -y) == pytest.approx(0.0)
    assert pairwise_accuracy(y, np.zeros(40)) == pytest.approx(0.5)


def test_ranking_metrics_oracle_and_regret() -> None:
    rng = np.random.default_rng(0)
    y = np.arange(201, dtype=float)  # best 200, median 100
    m = ranking_metrics(y, y, rng)
    assert m["ndcg@5"] == pytest.approx(1.0) and m["spearman"] == pytest.approx(1.0)
    assert m["regret@1"] == 0.0 and m["recall@1%"] == 1.0 and m["pairwise_acc"] == 1.0
    worst_first = ranking_metrics(y, -y, rng)
    assert worst_first["regret@1"] == pytest.approx(2.0)  # (200 - 0) / (200 - 100)
    assert worst_first["regret@5"] == pytest.approx(1.96)  # best of the 5 worst is 4
    assert worst_first["recall@1%"] == 0.0


def test_random_order_expected_ndcg() -> None:
    rng = np.random.default_rng(1)
    n = 1000
    y = rng.normal(size=n)
    vals = [ranking_metrics(y, rng.random(n), rng)["ndcg@5"] for _ in range(300)]
    # E[gain] of a random configuration is 1/2 and the ideal top-5 gains are ~1, so E[nDCG@5] ~ 1/2
    assert np.mean(vals) == pytest.approx(0.5, abs=0.03)


def test_global_best_matches_and_nearest_neighbour(synthetic: History) -> None:
    gb = GlobalBest.fit(synthetic, ["t0", "t1"])
    X = synthetic.encode(synthetic.config_table("t0"))
    s = gb.score(X)
    assert s.shape == (100,) and np.isfinite(s).all()
    # an unseen configuration takes the score of its nearest seen one
    np.testing.assert_allclose(gb.score(X[:3] + 1e-4), s[:3])


@pytest.fixture(scope="module")
def lodo(synthetic: History) -> object:
    return lodo_evaluate(synthetic, FAST, n_random=5, seed=0)


def test_lodo_on_synthetic(lodo: object) -> None:
    res = lodo
    assert set(res["method"]) == {PRIOR, CONFIG_ONLY, GLOBAL_BEST, RANDOM}
    assert len(res) == 8 * 4
    mean = summarize(res).set_index("method")
    # the meta-conditioned prior recovers the planted per-task optimum up to the spacing of the
    # tasks in meta-feature space (the nearest training task's ranking has Spearman 0.84 on t3)
    assert mean.loc[PRIOR, "spearman"] > 0.8
    assert mean.loc[PRIOR, "ndcg@5"] > 0.9  # measured 0.935
    assert mean.loc[PRIOR, "regret@1"] < 0.15  # measured 0.104
    # baselines that ignore the meta-feature cannot follow the moving optimum
    assert mean.loc[PRIOR, "regret@1"] < mean.loc[GLOBAL_BEST, "regret@1"]
    assert mean.loc[PRIOR, "regret@1"] < mean.loc[CONFIG_ONLY, "regret@1"]
    assert (
        mean.loc[GLOBAL_BEST, "ndcg@5"] < 0.75 and mean.loc[CONFIG_ONLY, "ndcg@5"] < 0.75
    )  # 0.66, 0.67
    # random order: nDCG@5 near its expectation 1/2 (gains are percentiles), Spearman near 0
    assert mean.loc[RANDOM, "ndcg@5"] == pytest.approx(0.5, abs=0.1)
    assert mean.loc[RANDOM, "spearman"] == pytest.approx(0.0, abs=0.1)
    md = render_markdown(res, "synthetic")
    assert md.startswith("### synthetic") and "| prior (config + meta) | 8 |" in md


def test_lodo_single_task_is_impossible(make_table: Any) -> None:
    h = make_table(n_tasks=1)
    with pytest.raises(DataError, match="LODO is impossible"):
        lodo_evaluate(h, FAST)


def _parser() -> argparse.ArgumentParser:
    from autopipe.cli.app import build_parser

    return build_parser()


def test_cli_fit_evaluate_and_single_task_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_table: Any
) -> None:
    from autopipe.cli import main

    table = write_run_table(make_table(n_tasks=3), tmp_path / "syn")
    args = _parser().parse_args(
        ["prior", "fit", "--history", str(table), "--out", str(tmp_path / "prior"), "--models", "1"]
    )
    assert args.func(args) == 0
    assert (tmp_path / "prior" / "prior.json").is_file()
    md = tmp_path / "eval.md"
    rc = main(
        [
            "prior",
            "evaluate",
            "--history",
            str(table),
            "--prior",
            str(tmp_path / "prior"),
            "--out",
            str(md),
        ]
    )
    assert rc == 0 and "prior (config + meta)" in md.read_text()
    rc = main(
        [
            "prior",
            "evaluate",
            "--history",
            str(table),
            "--lodo",
            "--models",
            "1",
            "--eval-configs",
            "50",
            "--csv",
            str(tmp_path / "r.csv"),
        ]
    )
    assert rc == 0 and (tmp_path / "r.csv").read_text().count("\n") == 1 + 3 * 4
    one = write_run_table(make_table(n_tasks=1), tmp_path / "one")
    capsys.readouterr()
    assert main(["prior", "evaluate", "--history", str(one), "--lodo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("autopipe: error: LODO is impossible") and "\n" not in err
