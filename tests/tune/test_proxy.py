"""A job naming `history.predictor`: early-stopped trials are scored by the learned predictor
(through the proxy the runner builds), not by the fallback loss proxy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autopipe import metrics as M
from autopipe.history.runtable import read_run_table
from autopipe.predictor.early import EarlyPredictor
from autopipe.tune.job import load_proxy
from tests.fixtures.histories import FAST, transfer_spec, transfer_table


def test_runner_proxy_uses_the_fitted_predictor(tmp_path: Path) -> None:
    table = transfer_table(
        tmp_path
    )  # a run table over the job's own space, loss falling at a hidden rate
    pred = EarlyPredictor.fit(read_run_table(table), 0.5, config=FAST)
    pred.save(tmp_path / "pred")
    spec = transfer_spec(tmp_path, {"predictor": "pred"})
    proxy = load_proxy(spec, meta={"size": 1.0})
    assert proxy is not None

    def reports(rate: float) -> list[dict]:
        loss = [3.0 * (1 - 0.3 * rate * f) for f in (0.1, 0.2, 0.3, 0.4, 0.5)]
        return [
            {M.FRACTION: f, M.TRAIN_LOSS: v - 0.1, M.EVAL_LOSS: v}
            for f, v in zip((0.1, 0.2, 0.3, 0.4, 0.5), loss, strict=True)
        ]

    cfg = {"sft.lr": 1e-3, "sft.steps": 60, "rl.lr": 1e-4}
    fast, var = proxy(reports(0.9), cfg)
    slow, _ = proxy(reports(0.1), cfg)
    assert np.isfinite(fast) and var is not None and var > 0
    assert fast > slow  # a faster-falling prefix predicts a better final score
