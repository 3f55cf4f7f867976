"""make_proxy: the residual predictor's proxy scores a configuration with the prior's z-score
among a fixed seeded reference sample of the space, as `autopipe tune` always did."""

from __future__ import annotations

import numpy as np
import pytest

from autopipe import metrics as M
from autopipe.errors import DataError
from autopipe.predictor.early import EarlyPredictor
from autopipe.predictor.proxy import N_REFERENCE, make_proxy
from autopipe.predictor.targets import prior_scores, run_targets
from autopipe.prior.ranker import RankingPrior
from tests.fixtures.histories import FAST, FAST_RANKER, make_curve_history


def test_residual_proxy_uses_the_prior_among_the_reference_sample() -> None:
    hist = make_curve_history(n_configs=40, n_tasks=2, planted="slope")
    prior = RankingPrior.fit(hist, FAST_RANKER)
    pred = EarlyPredictor.fit(
        hist, 0.5, prior_z=prior_scores(prior, hist, run_targets(hist)), config=FAST
    )
    meta = hist.meta_features("t0")
    proxy = make_proxy(pred, prior, hist.space, meta, seed=3)
    reports = [{M.FRACTION: f, M.TRAIN_LOSS: 3 - f, M.EVAL_LOSS: 3.1 - f} for f in (0.1, 0.5)]
    cfg = {"lr": 1e-3, "beta": 0.5}
    got, var = proxy(reports, cfg, [])
    # the same numbers as scoring the configuration after the reference sample by hand
    ref = hist.space.sample_many(N_REFERENCE, np.random.default_rng(3))
    p = float(prior.score(meta, [*ref, cfg])[-1])
    want, want_var = pred.predict_reports(reports, cfg, meta, p, peers=[])
    assert got == pytest.approx(want, abs=1e-9) and var == pytest.approx(want_var)
    # a residual predictor without a prior is refused, naming the rule
    with pytest.raises(DataError, match="residual variant and needs a prior"):
        make_proxy(pred, None, hist.space, meta, seed=3)
