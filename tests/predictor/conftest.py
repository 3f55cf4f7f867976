"""Synthetic run tables with learning curves named like AutoPipe's own reports
(:mod:`autopipe.metrics`), whose final objective is planted in the curve prefix or not at all."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autopipe import metrics
from autopipe.history.data import History
from autopipe.predictor.early import PredictorConfig
from autopipe.prior.ranker import RankerConfig
from autopipe.space import Param, Space

FRACTIONS = tuple(round(0.1 * k, 1) for k in range(1, 11))
FAST = PredictorConfig(n_estimators=120, max_depth=3)
FAST_RANKER = RankerConfig(n_estimators=40, n_models=1, n_jobs=1)


def make_curve_history(
    n_configs: int = 240,
    planted: str = "slope",
    mode: str = "max",
    n_tasks: int = 1,
    seed: int = 0,
) -> History:
    """``n_tasks`` tasks x ``n_configs`` random configurations x 1 seed, curves at fractions
    0.1..1.0 with the signals train_loss, eval_loss, grad_norm, reward_mean and kl.

    ``planted="slope"``: each run has a hidden rate ``s``; train_loss falls as ``3 - s f`` and
    the final objective is ``s`` plus small noise, while the configuration carries no information.
    ``planted="noise"``: the curves are independent noise and the final objective is a smooth
    function of the learning rate (what a prior can know). ``mode="min"`` negates the objective.
    """
    rng = np.random.default_rng(seed)
    space = Space(
        [
            Param("lr", "float", low=1e-5, high=1e-2, log=True),
            Param("beta", "float", low=0.0, high=1.0),
        ]
    )
    tasks = pd.DataFrame(
        {
            "task": [f"t{i}" for i in range(n_tasks)],
            "group": [f"g{i}" for i in range(n_tasks)],
            "meta_size": np.linspace(1.0, 2.0, n_tasks),
        }
    )
    runs, curves = [], []
    for t in range(n_tasks):
        lr = np.exp(rng.uniform(np.log(1e-5), np.log(1e-2), n_configs))
        beta = rng.uniform(0.0, 1.0, n_configs)
        u_lr = (np.log(lr) - np.log(1e-5)) / (np.log(1e-2) - np.log(1e-5))
        if planted == "slope":
            s = rng.uniform(0.5, 2.5, n_configs)
            y = s + 0.02 * rng.normal(size=n_configs)
        elif planted == "noise":
            s = np.zeros(n_configs)
            y = -4.0 * (u_lr - 0.6) ** 2 + 0.05 * rng.normal(size=n_configs)
        else:
            raise ValueError(f"planted must be 'slope' or 'noise', but got {planted!r}")
        for i in range(n_configs):
            rid = f"t{t}-r{i}"
            runs.append((rid, f"t{t}", 0, lr[i], beta[i], -y[i] if mode == "min" else y[i]))
            for f in FRACTIONS:
                if planted == "slope":
                    loss = 3.0 - s[i] * f + 0.01 * rng.normal()
                else:
                    loss = 3.0 + 0.5 * rng.normal()
                curves.append(
                    {
                        "run_id": rid,
                        metrics.FRACTION: f,
                        metrics.TRAIN_LOSS: loss,
                        metrics.EVAL_LOSS: loss + 0.1 + 0.3 * rng.normal(),
                        metrics.GRAD_NORM: abs(rng.normal()),
                        metrics.REWARD_MEAN: rng.normal(),
                        metrics.KL: abs(rng.normal()) * f,
                    }
                )
    frame = pd.DataFrame(runs, columns=["run_id", "task", "seed", "lr", "beta", "y"])
    frame["cost"] = 1.0
    frame["status"] = "ok"
    return History(
        space=space,
        runs=frame,
        tasks=tasks,
        curves=pd.DataFrame(curves),
        objective=metrics.ACCURACY,
        mode=mode,
        name=f"synthetic-{planted}",
    )


@pytest.fixture(scope="session")
def slope_history() -> History:
    return make_curve_history(planted="slope")


@pytest.fixture(scope="session")
def noise_history() -> History:
    return make_curve_history(planted="noise")
