"""The methods the replay benchmark compares: names, what each needs (the ranking prior, the
global-best table) and how its recommendation is read. Ray-free; ``ray_runner`` builds the Ray
Tune searchers/schedulers from these names."""

from __future__ import annotations

from dataclasses import dataclass

from autopipe.errors import DataError


@dataclass(frozen=True)
class Method:
    name: str
    family: str  # "baseline" (runs to the baselines' budget) or "autopipe" (to AutoPipe's)
    needs_prior: bool = False
    needs_global_best: bool = False
    # True: the recommendation after k evaluations is the core's posterior-mean choice
    # (``ModelBasedCore.recommend``); False: the incumbent by observed score.
    model_recommendation: bool = False
    offline: bool = False  # no evaluation at all: the recommendation is the only (full) run
    label: str = ""
    # On tables with curves: trials stop at the early-stop fraction under the AutoPipe
    # scheduler and are scored by the proxy (the predictor fitted on the training tasks, or the
    # fallback proxy for a method without offline models), as a job with a predictor runs them.
    early_stop: bool = False
    # AutoPipe's search.options.cost_weight (AutoPipeCore: the cost term of the acquisition)
    cost_weight: float = 0.0
    # The Ray-free proposal core behind the method, a key of ``ray_runner.CORES`` (``None``: a
    # Ray Tune searcher of its own, TPE and BOHB)
    core: str | None = None
    guard: bool = True  # AutoPipeCore's transfer-failure guard


# The cost-aware variant's search.options.cost_weight. NOTE: picked on hpobench, 3 seeds per
# held-out task, 15 evaluations (benchmarks/README.md): 0.05 -> regret 0.132 at 35 full runs,
# 0.1 -> 0.132 at 9.3, cost-blind 0.099 at 193.
COST_WEIGHT = 0.1

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("random", "baseline", label="random search", core="random"),
        Method("tpe", "baseline", label="Optuna TPE (multivariate)"),
        Method("gp-ei", "baseline", label="GP-EI (BoTorch, no prior)", core="gp-ei"),
        Method("asha", "baseline", label="ASHA + random", core="random"),
        Method("bohb", "baseline", label="BOHB (TuneBOHB + HyperBandForBOHB)"),
        Method(
            "global-best",
            "autopipe",
            needs_global_best=True,
            label="global-best order",
            core="order",
        ),
        Method("ranker-top1", "autopipe", needs_prior=True, offline=True, label="ranker top-1"),
        Method(
            "autopipe",
            "autopipe",
            needs_prior=True,
            model_recommendation=True,
            early_stop=True,
            label="AutoPipe",
            core="autopipe",
        ),
        Method(
            "autopipe-no-guard",
            "autopipe",
            needs_prior=True,
            model_recommendation=True,
            early_stop=True,
            label="AutoPipe, guard off",
            core="autopipe",
            guard=False,
        ),
        Method(
            "autopipe-cost",
            "autopipe",
            needs_prior=True,
            model_recommendation=True,
            early_stop=True,
            cost_weight=COST_WEIGHT,
            label=f"AutoPipe, cost-aware (search.options.cost_weight {COST_WEIGHT})",
            core="autopipe",
        ),
        Method(
            "no-residual",
            "autopipe",
            needs_prior=True,
            model_recommendation=True,
            early_stop=True,
            label="ablation: GP on y, prior as candidates",
            core="no-residual",
        ),
        Method("no-bo", "autopipe", needs_prior=True, label="ablation: prior top-k", core="order"),
        Method(
            "no-offline",
            "autopipe",
            model_recommendation=True,
            early_stop=True,
            label="ablation: no prior/predictor (GP on the proxy)",
            core="no-offline",
        ),
    )
}
ONLINE_BASELINES = ("random", "tpe", "gp-ei", "asha", "bohb")
DEFAULT_METHODS = tuple(METHODS)


def get_methods(names: list[str] | tuple[str, ...]) -> list[Method]:
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise DataError(f"--methods must be among {list(METHODS)}, but got {unknown}")
    if len(set(names)) != len(names):
        raise DataError(f"--methods must not repeat a name, but got {list(names)}")
    return [METHODS[n] for n in names]
