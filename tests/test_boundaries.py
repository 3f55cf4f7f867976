"""Import boundaries (STYLE.md): trial workers never import BoTorch/XGBoost/MLflow; the driver
proposes configurations without TRL; the math never imports Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = [
    # (modules imported, modules that must not be loaded)
    (
        ["autopipe.trial.worker", "autopipe.trial.pipeline"],
        ["botorch", "xgboost", "mlflow", "gpytorch"],
    ),
    (
        [
            "autopipe.spec",
            "autopipe.search",
            "autopipe.search.core",
            "autopipe.tune.runner",
            "autopipe.cli",
        ],
        ["trl", "transformers", "torch", "ray"],
    ),
    (
        [
            "autopipe.space",
            "autopipe.search.core",
            "autopipe.history.model",
            "autopipe.prior.ranker",
            "autopipe.prior.evaluate",
            "autopipe.history.metafeatures",
        ],
        ["ray"],
    ),
]


@pytest.mark.parametrize(("mods", "forbidden"), CASES)
def test_import_boundary(mods: list[str], forbidden: list[str]) -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in mods)
        + (f"bad = [m for m in {forbidden!r} if m in sys.modules]\nprint(','.join(bad))\n")
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"{mods} imported {r.stdout.strip()}"
