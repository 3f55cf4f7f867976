"""Tables and the regret-vs-cost plot of a replay benchmark's rows (see :mod:`.core` for the
definitions). Ray-free; matplotlib is imported only by :func:`plot_regret_cost` (Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from autopipe.bench.methods import METHODS

REFERENCE = "autopipe"
COST_REFERENCE = "autopipe-cost"  # its own match table when benchmarked


def per_task(rows: pd.DataFrame) -> pd.DataFrame:
    """Seed-averaged regret and cost per (method, task, budget)."""
    return (
        rows.groupby(["method", "task", "budget"], sort=False)[["regret", "cost", "evals"]]
        .mean()
        .reset_index()
    )


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (method, budget): mean / median / worst-task regret over tasks (of seed averages),
    the standard error of the mean over seeds, and the mean cost."""
    pt = per_task(rows)
    g = pt.groupby(["method", "budget"], sort=False)
    out = g.agg(
        tasks=("task", "nunique"),
        evals=("evals", "mean"),
        mean=("regret", "mean"),
        median=("regret", "median"),
        worst=("regret", "max"),
        cost=("cost", "mean"),
    ).reset_index()
    by_seed = rows.groupby(["method", "budget", "seed"], sort=False)["regret"].mean()
    se = by_seed.groupby(["method", "budget"], sort=False).agg(
        lambda s: float(s.std(ddof=1) / math.sqrt(len(s))) if len(s) > 1 else 0.0
    )
    out["se"] = [
        float(se.get((m, b), 0.0)) for m, b in zip(out["method"], out["budget"], strict=True)
    ]
    order = {m: i for i, m in enumerate(METHODS)}
    return out.sort_values(
        ["method", "budget"], key=lambda s: s.map(order) if s.name == "method" else s
    ).reset_index(drop=True)


def match_cost(summ: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """For each method: its final (largest-budget) mean regret and cost, and the smallest budget
    at which ``reference`` reaches a mean regret at least as good, with its cost there."""
    ref = summ.loc[summ["method"] == reference].sort_values("budget")
    rows = []
    for m, g in summ.groupby("method", sort=False):
        last = g.sort_values("budget").iloc[-1]
        hit = ref.loc[ref["mean"] <= last["mean"] + 1e-12]
        rows.append(
            {
                "method": m,
                "budget": int(last["budget"]),
                "mean": float(last["mean"]),
                "cost": float(last["cost"]),
                "ref_budget": int(hit.iloc[0]["budget"]) if len(hit) else None,
                "ref_cost": float(hit.iloc[0]["cost"]) if len(hit) else math.nan,
            }
        )
    return pd.DataFrame(rows)


def render_markdown(
    rows: pd.DataFrame, title: str, note: str = "", reference: str = REFERENCE
) -> str:
    summ = summary(rows)
    lines = [f"### {title}", ""]
    if note:
        lines += [note, ""]
    lines += [
        "Normalized regret `(best - chosen) / (best - median)` per held-out task, averaged over "
        "seeds; then mean / median / worst over tasks. Cost in mean full runs of the task, "
        "including one full run of the recommendation (with `--promote N` on tables with "
        "curves: one full run of each of the N promoted configurations of early-stopping "
        "methods); ± is the standard error of the mean over seeds.",
        "",
        "| method | budget | evals | mean regret | ± se | median | worst task | mean cost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for _, r in summ.iterrows():
        lines.append(
            f"| {r['method']} | {int(r['budget'])} | {r['evals']:.1f} | {r['mean']:.3f} | "
            f"{r['se']:.3f} | {r['median']:.3f} | {r['worst']:.3f} | {r['cost']:.1f} |"
        )
    for ref in dict.fromkeys((reference, COST_REFERENCE)):
        if (summ["method"] == ref).any():
            lines += _match_lines(summ, ref)
    pt = per_task(rows)
    lines += ["", "Per held-out task (seed-averaged regret at each method's largest budget):", ""]
    final = pt.loc[pt.groupby(["method", "task"])["budget"].transform("max") == pt["budget"]]
    wide = final.pivot(index="task", columns="method", values="regret")
    cols = [m for m in METHODS if m in wide.columns]
    lines += ["| task | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for t, r in wide.iterrows():
        lines.append(f"| {t} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _match_lines(summ: pd.DataFrame, ref: str) -> list[str]:
    """The markdown table of the cost ``ref`` needs to match each method's final mean regret."""
    mc = match_cost(summ, ref)
    lines = [
        "",
        f"Cost {ref} needs to match each method's final mean regret (smallest "
        f"{ref} budget with a mean regret at least as low):",
        "",
        f"| method | final budget | final mean regret | its mean cost | {ref} budget | "
        f"{ref} cost | cost ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    top = int(summ.loc[summ["method"] == ref, "budget"].max())
    for _, r in mc.iterrows():
        if r["ref_budget"] is None or pd.isna(r["ref_budget"]):
            rb, rc, ratio = f"not reached by {top}", "-", "-"
        else:
            rb, rc = str(int(r["ref_budget"])), f"{r['ref_cost']:.1f}"
            ratio = f"{r['ref_cost'] / r['cost']:.2f}" if r["cost"] > 0 else "-"
        lines.append(
            f"| {r['method']} | {r['budget']} | {r['mean']:.3f} | {r['cost']:.1f} | {rb} | "
            f"{rc} | {ratio} |"
        )
    return lines


def plot_regret_cost(rows: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Mean normalized regret vs. mean cost per method, with ± 1 standard-error bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = summary(rows)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for m, g in summ.groupby("method", sort=False):
        g = g.sort_values("budget")
        x, y, se = g["cost"].to_numpy(), g["mean"].to_numpy(), g["se"].to_numpy()
        style = "-" if METHODS[m].family == "baseline" else "--"
        lw = 2.5 if m == REFERENCE else 1.3
        (line,) = ax.plot(x, y, style, marker="o", ms=3, lw=lw, label=m)
        ax.fill_between(x, y - se, y + se, color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("cost (mean full runs of the task, incl. the recommendation's)")
    ax.set_ylabel("normalized regret (mean over tasks)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def write_outputs(
    rows: pd.DataFrame, out_dir: str | Path, title: str, note: str = ""
) -> list[Path]:
    """``results.md``, ``rows.csv`` and ``regret_vs_cost.png`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "results.md"
    md.write_text(render_markdown(rows, title, note))
    csv = out / "rows.csv"
    rows.to_csv(csv, index=False)
    png = plot_regret_cost(rows, out / "regret_vs_cost.png", title)
    return [md, csv, png]
