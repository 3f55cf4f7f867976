"""A job naming `history.predictor`: early-stopped trials are scored by the learned predictor
(through the proxy the runner builds), not by the fallback loss proxy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autopipe import metrics as M
from autopipe.predictor.model import EarlyPredictor
from autopipe.spec import parse_spec
from autopipe.tune.runner import load_proxy
from tests.predictor.conftest import FAST, make_curve_history


def test_runner_proxy_uses_the_fitted_predictor(tmp_path: Path) -> None:
    hist = make_curve_history(n_configs=200, planted="slope", seed=1)
    pred = EarlyPredictor.fit(hist, 0.5, config=FAST)
    pred.save(tmp_path / "pred")
    spec = parse_spec(
        {
            "name": "p",
            "dataset": {"task": "sort"},
            "space": {"sft": {"lr": {"low": 1e-5, "high": 1e-2}}},
            "history": {"predictor": str(tmp_path / "pred")},
        },
        base_dir=tmp_path,
    )
    proxy = load_proxy(spec, meta={})
    assert proxy is not None

    def reports(rate: float) -> list[dict]:
        return [
            {M.FRACTION: f, M.TRAIN_LOSS: 3 - rate * f, M.EVAL_LOSS: 3.1 - rate * f}
            for f in (0.1, 0.2, 0.3, 0.4, 0.5)
        ]

    cfg = {"lr": 1e-3, "beta": 0.5}
    fast, var = proxy(reports(2.4), cfg)
    slow, _ = proxy(reports(0.6), cfg)
    assert np.isfinite(fast) and var is not None and var > 0
    assert fast > slow  # a faster-falling prefix predicts a better final score
