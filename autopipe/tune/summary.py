"""What a job ended with: :class:`JobResult`, the summary the parent MLflow run records
(trial counts, cost, the best full-fidelity result and ``best_config.yaml``), and the text
``autopipe tune`` prints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from autopipe import metrics as M
from autopipe.spec import canonical_order
from autopipe.tracking import Tracker


@dataclass
class JobResult:
    job: str
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    best_config: dict[str, Any] | None
    best_objective: float | None
    best_trial_id: str | None
    statuses: dict[str, str] = field(default_factory=dict)
    total_cost_s: float = 0.0
    wall_s: float = 0.0
    interrupted: bool = False
    experiment_path: str = ""
    promoted: dict[str, str] = field(default_factory=dict)  # promoted trial -> early-stopped source
    cost_saved_s: float = 0.0  # over all promoted trials
    saved_by: dict[str, float] = field(default_factory=dict)  # promoted trial -> its saved prefix
    prior_top: dict[str, Any] | None = None  # the prior's top-ranked candidate (with a prior)
    transfer: list[str] = field(default_factory=list)  # how the prior/predictor were obtained
    restored: str = ""  # --resume: what the previous execution left, as the job printed it
    stopped: str = ""  # the error the job's first trials all failed with, if that stopped it
    stopped_after: int = 0  # how many trials had failed with it


def space_size(space: Any) -> float:
    n = space.grid_size() if space.is_finite and len(space) <= 12 else math.inf
    return n


def summarise(result: JobResult, cb: Any, constants: dict[str, Any], tracker: Tracker) -> None:
    best_tid, best_val, best_cfg = None, -math.inf, None
    total = 0.0
    for tid, last in cb.last.items():
        cost = last.get(M.COST_S)
        if isinstance(cost, (int, float)) and math.isfinite(cost):
            total += float(cost)
        status = cb.status.get(tid)
        val = last.get(M.OBJECTIVE)
        if status != M.STATUS_COMPLETED:  # only full-fidelity scores compete (proxies do not)
            continue
        if isinstance(val, (int, float)) and math.isfinite(val) and val > best_val:
            best_tid, best_val, best_cfg = tid, float(val), cb.configs.get(tid)
    result.statuses = dict(cb.status)
    result.total_cost_s = total
    parent = result.parent_run_id
    counts = {s: sum(1 for v in cb.status.values() if v == s) for s in M.TRIAL_STATUSES}
    tracker.log_metrics(
        parent,
        {
            "n_trials": len(cb.status),
            "total_cost_s": total,
            "cost_saved_s": result.cost_saved_s,
            **{f"n_{k.replace('-', '_')}": v for k, v in counts.items()},
        },
        0,
    )
    if best_tid is None:
        tracker.set_tags(parent, {"autopipe.best": "none"})
        return
    full = canonical_order({**constants, **(best_cfg or {})})
    result.best_config, result.best_objective, result.best_trial_id = full, best_val, best_tid
    doc = {
        "job": result.job,
        "objective": M.OBJECTIVE,
        "value": best_val,
        "trial_id": best_tid,
        "mlflow_run_id": cb.runs.get(best_tid),
        "status": cb.status.get(best_tid),
        "promoted_from": result.promoted.get(best_tid),
        "cost_saved_s": (
            round(result.saved_by[best_tid], 2) if best_tid in result.saved_by else None
        ),
        "config": full,
    }
    tracker.log_text(parent, yaml.safe_dump(doc, sort_keys=False), M.ARTIFACT_BEST)
    tracker.log_metrics(parent, {"best_objective": best_val}, 0)
    tracker.set_tags(
        parent,
        {"autopipe.best_trial": best_tid, "autopipe.best_run_id": str(cb.runs.get(best_tid))},
    )


def prior_top(core: Any) -> dict[str, Any] | None:
    """The candidate the job's ranking prior scores highest (what transfer alone would pick)."""
    cands = getattr(core, "cands", None)
    if cands is None or getattr(core, "prior", None) is None or len(cands) == 0:
        return None
    import numpy as np

    return dict(cands.configs[int(np.argmax(cands.s))])


def format_summary(res: JobResult) -> str:
    lines = [
        f"job {res.job}: {len(res.statuses)} trials "
        + ", ".join(
            f"{s} {sum(1 for v in res.statuses.values() if v == s)}"
            for s in M.TRIAL_STATUSES
            if any(v == s for v in res.statuses.values())
        ),
        f"cost {res.total_cost_s:.1f} trial-seconds, wall {res.wall_s:.1f} s"
        + (" (interrupted)" if res.interrupted else ""),
        f"MLflow: {res.tracking_uri} experiment {res.experiment_id} run {res.parent_run_id}",
    ]
    if res.restored:
        lines.append(res.restored)
    if res.stopped:
        lines.append(
            f"stopped early: the first {res.stopped_after} trials all failed with the same error: "
            f"{res.stopped}"
        )
    if res.promoted:
        lines.append(
            f"promoted {len(res.promoted)} early-stopped "
            f"trial{'s' if len(res.promoted) != 1 else ''} to full fidelity (the searcher's "
            f"shortlist); {res.cost_saved_s:.1f} trial-seconds of their prefixes not recomputed"
        )
    lines += res.transfer
    if res.prior_top is not None:
        lines.append(
            "the prior's top-ranked configuration (before any trial): "
            + ", ".join(f"{k}={short_value(v)}" for k, v in res.prior_top.items())
        )
    if res.best_config is not None:
        lines.append(f"best {M.OBJECTIVE} = {res.best_objective:.4f} (trial {res.best_trial_id})")
        lines.append(yaml.safe_dump({"config": res.best_config}, sort_keys=False).rstrip())
    else:
        lines.append("no trial finished at full fidelity with a score")
    return "\n".join(lines)


def short_value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
