"""A synthetic multi-task run table whose best configuration moves with a meta-feature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from autopipe.history.data import History
from autopipe.space import Param, Space

N_TASKS = 8
LR_GRID = tuple(float(v) for v in np.geomspace(1e-4, 1e-1, 10))
WIDTH_GRID = (16, 32, 64, 128, 256)


def optimum(scale: float) -> float:
    """Unit-cube position of the best learning rate on a task with meta-feature ``scale``."""
    return 0.1 + 0.8 * scale


def make_synthetic(mode: str = "max", seed: int = 0, n_tasks: int = N_TASKS) -> History:
    """``n_tasks`` tasks x 100 grid configurations x 2 seeds; ``y`` peaks at the learning rate
    ``optimum(meta_scale)``, prefers width 64 and adam, plus small seed noise. A second,
    irrelevant meta-feature and a constant one exercise the filter."""
    rng = np.random.default_rng(seed)
    space = Space(
        [
            Param("lr", "float", values=LR_GRID, log=True),
            Param("width", "int", values=WIDTH_GRID, log=True),
            Param("opt", "categorical", choices=("adam", "sgd")),
        ]
    )
    scales = np.linspace(0.0, 1.0, n_tasks)
    tasks = pd.DataFrame(
        {
            "task": [f"t{i}" for i in range(n_tasks)],
            "group": [f"t{i}" for i in range(n_tasks)],
            "meta_scale": scales,
            "meta_noise": rng.normal(size=n_tasks),
            "meta_const": np.ones(n_tasks),
        }
    )
    rows = []
    for i, s in enumerate(scales):
        for lr in LR_GRID:
            for w in WIDTH_GRID:
                for opt in ("adam", "sgd"):
                    u_lr = space["lr"].to_unit(lr)
                    u_w = space["width"].to_unit(w)
                    base = (
                        -4.0 * (u_lr - optimum(s)) ** 2
                        - 0.5 * (u_w - 0.5) ** 2
                        + (0.1 if opt == "adam" else 0.0)
                    )
                    for seed_ in (0, 1):
                        y = base + 0.005 * rng.normal()
                        rows.append(
                            (f"t{i}-{lr:.3g}-{w}-{opt}-{seed_}", f"t{i}", seed_, lr, w, opt, y)
                        )
    runs = pd.DataFrame(rows, columns=["run_id", "task", "seed", "lr", "width", "opt", "y"])
    if mode == "min":
        runs["y"] = -runs["y"]
    runs["cost"] = 1.0
    runs["status"] = "ok"
    return History(
        space=space, runs=runs, tasks=tasks, objective="score", mode=mode, name="synthetic"
    )


def with_costs(history: History, seed: int = 0) -> History:
    """``history`` with costs that grow with width (cost ~ width) and double for sgd, times a
    per-task factor (tasks of other sizes) and 5 % noise: a relative cost the model can learn."""
    rng = np.random.default_rng(seed)
    runs = history.runs.copy()
    factor = {t: 10.0 ** (i % 3) for i, t in enumerate(history.task_ids)}
    runs["cost"] = (
        runs["task"].map(factor).to_numpy()
        * runs["width"].to_numpy(dtype=float)
        * np.where(runs["opt"] == "sgd", 2.0, 1.0)
        * np.exp(0.05 * rng.normal(size=len(runs)))
    )
    return History(
        space=history.space,
        runs=runs,
        tasks=history.tasks,
        objective=history.objective,
        mode=history.mode,
        name="synthetic-costs",
    )


@pytest.fixture(scope="session")
def synthetic() -> History:
    return make_synthetic()


@pytest.fixture(scope="session")
def make_table() -> object:
    """The :func:`make_synthetic` factory, for tests that need other modes or task counts."""
    return make_synthetic
