"""Import boundaries of the package's folders (../shared/STYLE.md, README "Layout").

Two kinds of check:
- static: every ``import`` statement anywhere in a folder's files, function bodies included (the
  lazy imports of ``run_trial``, of the CLI's handlers), against the folder's forbidden modules;
- runtime: importing a folder's modules in a fresh interpreter must not load the forbidden
  packages (catches what an imported sibling pulls in).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "autopipe"

RAY = ["ray"]
TRAINING = ["trl", "transformers", "peft", "deepspeed", "accelerate", "datasets"]
DRIVER_ML = ["botorch", "gpytorch", "xgboost", "mlflow"]

# folder (or top-level module) -> top-level packages its code must never import
STATIC_RULES: dict[str, list[str]] = {
    # shared vocabulary: no heavy dependencies at all
    "errors.py": RAY + TRAINING + DRIVER_ML + ["torch"],
    "metrics.py": RAY + TRAINING + DRIVER_ML + ["torch"],
    "space.py": RAY + TRAINING + DRIVER_ML + ["torch"],
    # the job spec and its checks: no Ray, no training stack, no models
    "spec": RAY + TRAINING + DRIVER_ML + ["torch"],
    # the math: Ray-free, and the driver never needs TRL to propose a configuration
    "search": RAY + TRAINING + ["xgboost", "mlflow"],
    "scheduling": RAY + TRAINING + DRIVER_ML + ["torch"],
    "prior": RAY + TRAINING + ["botorch", "gpytorch", "mlflow"],
    "predictor": RAY + TRAINING + ["botorch", "gpytorch", "mlflow"],
    "history": RAY + TRAINING + ["botorch", "gpytorch"],
    # trial workers: never BoTorch, XGBoost or MLflow, and Ray only through tune/
    "trial": RAY + DRIVER_ML,
    "tracking": RAY + TRAINING + ["botorch", "gpytorch", "xgboost"],
    # the CLI and the corpus generator reach Ray through tune/ only
    "cli": RAY + TRAINING,
    "corpus": RAY + TRAINING,
    # tune/ (the Ray wiring) and bench/ (the benchmark harness) may import Ray
}


def _imports(path: Path) -> set[str]:
    """Top-level package names of every import in ``path`` (relative imports excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def _files(where: str) -> list[Path]:
    p = PKG / where
    return [p] if p.is_file() else sorted(p.rglob("*.py"))


def test_every_module_is_covered_by_a_rule_or_may_use_ray() -> None:
    ray_ok = {"tune", "bench"}
    top = {p.name for p in PKG.iterdir() if not p.name.startswith(("_", "."))}
    uncovered = sorted(top - set(STATIC_RULES) - ray_ok - {"py.typed"})
    assert uncovered == [], f"add a boundary rule for {uncovered}"


@pytest.mark.parametrize("where", sorted(STATIC_RULES))
def test_static_imports(where: str) -> None:
    files = _files(where)
    assert files, where
    bad = {
        str(f.relative_to(PKG)): sorted(_imports(f) & set(STATIC_RULES[where]))
        for f in files
        if _imports(f) & set(STATIC_RULES[where])
    }
    assert bad == {}, f"forbidden imports under {where}: {bad}"


def test_ray_is_imported_only_under_tune_and_bench() -> None:
    bad = sorted(
        str(f.relative_to(PKG))
        for f in PKG.rglob("*.py")
        if "ray" in _imports(f) and f.relative_to(PKG).parts[0] not in ("tune", "bench")
    )
    assert bad == []


def test_nothing_imports_the_cli() -> None:
    bad = []
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG)
        if rel.parts[0] == "cli" or rel.name == "__main__.py":
            continue
        tree = ast.parse(f.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            bad += [
                f"{rel}: {m}" for m in mods if m == "autopipe.cli" or m.startswith("autopipe.cli.")
            ]
    assert bad == []


RUNTIME_CASES = [
    # (modules imported, modules that must not be loaded)
    (
        [
            "autopipe.trial.worker",
            "autopipe.trial.run",
            "autopipe.trial.settings",
            "autopipe.trial.sft",
            "autopipe.trial.rl",
            "autopipe.trial.evaluation",
            "autopipe.trial.tasks",
            "autopipe.trial.rewards",
            "autopipe.trial.models",
            "autopipe.tune.train_loop",
        ],
        ["botorch", "xgboost", "mlflow", "gpytorch"],
    ),
    (
        [
            "autopipe.spec",
            "autopipe.spec.checks",
            "autopipe.search",
            "autopipe.search.base",
            "autopipe.search.simple",
            "autopipe.tune.job",
            "autopipe.tune.cluster",
            "autopipe.tune.summary",
            "autopipe.tracking",
            "autopipe.cli",
            "autopipe.cli.app",
        ],
        ["trl", "transformers", "torch", "ray"],
    ),
    (
        [
            "autopipe.space",
            "autopipe.search.autopipe",
            "autopipe.search.gp_ei",
            "autopipe.search.gp",
            "autopipe.scheduling.policy",
            "autopipe.scheduling.ledger",
            "autopipe.scheduling.budget",
            "autopipe.history.data",
            "autopipe.history.transfer",
            "autopipe.history.sources",
            "autopipe.history.metafeatures",
            "autopipe.prior.ranker",
            "autopipe.prior.evaluate",
            "autopipe.predictor.early",
            "autopipe.predictor.evaluate",
            "autopipe.predictor.proxy",
        ],
        ["ray", "trl", "transformers"],
    ),
]


@pytest.mark.parametrize(("mods", "forbidden"), RUNTIME_CASES)
def test_runtime_import_boundary(mods: list[str], forbidden: list[str]) -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in mods)
        + (f"bad = [m for m in {forbidden!r} if m in sys.modules]\nprint(','.join(bad))\n")
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"{mods} imported {r.stdout.strip()}"
