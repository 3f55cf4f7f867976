"""Spaces, objectives and priors shared by the searcher tests: a finite grid, a mixed space with a
continuous range and a conditional parameter, a fake prior, and the synthetic history a real
ranking prior is fitted on (fixture ``real_prior`` in conftest)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from autopipe.history.data import History
from autopipe.space import Condition, Param, Space

LR_GRID = tuple(float(v) for v in np.geomspace(1e-4, 1e-1, 8))


def finite_space() -> Space:
    """80 configurations: a grid searched by enumeration."""
    return Space(
        [
            Param("lr", "float", values=LR_GRID, log=True),
            Param("width", "int", values=(16, 32, 64, 128, 256), log=True),
            Param("opt", "categorical", choices=("adam", "sgd")),
        ]
    )


def mixed_space() -> Space:
    """A continuous range, an integer range and a conditional parameter: searched over a pool."""
    return Space(
        [
            Param("lr", "float", low=1e-4, high=1e-1, log=True),
            Param("layers", "int", low=1, high=6),
            Param("opt", "categorical", choices=("adam", "sgd")),
            Param("momentum", "float", low=0.0, high=0.99, condition=Condition("opt", ("sgd",))),
        ]
    )


def objective(space: Space, config: Mapping[str, Any]) -> float:
    """A smooth bump with its best learning rate at 0.7 on the unit scale; adam is better."""
    u = space.to_unit(config)
    return float(
        -4.0 * (u[0] - 0.7) ** 2
        - 0.5 * (u[1] - 0.5) ** 2
        + (0.2 if config["opt"] == "adam" else 0.0)
    )


class FakePrior:
    """Scores the learning rate's distance to 0.6 on the unit scale: roughly right, not exact."""

    def score_features(self, meta: Mapping[str, float] | None, X_cfg: np.ndarray) -> np.ndarray:
        s = -((X_cfg[:, 0] - 0.6) ** 2)
        sd = s.std()
        return (s - s.mean()) / sd if sd > 0 else np.zeros(len(s))


def synthetic_history(space: Space, seed: int = 0) -> History:
    """Four tasks of the finite space whose best learning rate moves with ``meta_scale``."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.5, 0.9, 4)
    tasks = pd.DataFrame(
        {
            "task": [f"t{i}" for i in range(4)],
            "group": [f"t{i}" for i in range(4)],
            "meta_scale": scales,
        }
    )
    rows = []
    for i, sc in enumerate(scales):
        for k, cfg in enumerate(space.iter_grid()):
            u = space.to_unit(cfg)
            y = (
                -4.0 * (u[0] - sc) ** 2
                - 0.5 * (u[1] - 0.5) ** 2
                + (0.2 if cfg["opt"] == "adam" else 0.0)
            )
            rows.append(
                (
                    f"t{i}-{k}",
                    f"t{i}",
                    0,
                    cfg["lr"],
                    cfg["width"],
                    cfg["opt"],
                    y + 0.01 * rng.normal(),
                )
            )
    runs = pd.DataFrame(rows, columns=["run_id", "task", "seed", "lr", "width", "opt", "y"])
    runs["cost"] = 1.0
    runs["status"] = "ok"
    return History(
        space=space, runs=runs, tasks=tasks, objective="score", mode="max", name="synthetic"
    )
