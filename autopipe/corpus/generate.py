"""Generate a post-training history: real SFT -> GRPO/DPO trials on many built-in tasks, run
through the normal tuning path (Ray Tune trials that are Ray Train runs, tracked in MLflow), over
a space-filling design of a job's search space.

The plan is deterministic: for every task, ``n_configs`` configurations from a scrambled Sobol
sequence over the template job's space (one in six with DPO when the space lets the RL algorithm
be DPO), trained with the base seed, plus the first ``n_replicates`` of them trained again with
``n_seeds - 1`` further seeds (to measure noise). Each (task, seed) pair is one job named
``<prefix>-<task>-s<seed>`` in one MLflow experiment, searched with the fixed-design searcher.

MLflow is the record: before running, the generator reads the experiment and skips every
configuration that already ended (completed or failed) under its job, so an interrupted
generation resumes where it stopped and never trains a configuration twice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from autopipe import metrics as M
from autopipe.errors import SpecError
from autopipe.space import Space
from autopipe.spec import JobSpec, parse_spec

log = logging.getLogger(__name__)

# The corpus: built-in task -> size of its SFT set (500-4,000 examples, so tasks differ in size
# as well as in kind). The demo's task (sort) is held out of the shipped corpus.
CORPUS_TASKS: dict[str, int] = {
    "add2": 1000,
    "maxd": 2000,
    "compare": 1500,
    "reverse": 3000,
    "count": 800,
    "parity": 500,
    "mcq": 4000,
    "shift": 2500,
    "ynm": 600,
    "dup": 1200,
}
N_RL = 256  # RL prompts and evaluation prompts of the shipped corpus (jobs/demo.yaml's sizes)
N_EVAL = 200
DPO_EVERY = 6  # one design point in six trains with DPO (when the space allows it)


@dataclass
class GenJob:
    """One job of the plan: a task, a training seed and the configurations to run."""

    task: str
    seed: int
    configs: list[dict[str, Any]]
    done: int = 0  # configurations of this job already ended in MLflow
    todo: list[dict[str, Any]] = field(default_factory=list)

    def name(self, prefix: str) -> str:
        return f"{prefix}-{self.task}-s{self.seed}"


def design(space: Space, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` space-filling configurations: scrambled Sobol points mapped through the space.

    A searched ``rl.algorithm`` with a DPO choice is set to DPO for every ``DPO_EVERY``-th point
    and GRPO otherwise (so a minority of the corpus is DPO, as the history issue asks), and
    inactive parameters are dropped.
    """
    from scipy.stats import qmc

    if n < 1:
        raise SpecError(f"--configs-per-task must be >= 1, but got {n}")
    sobol = qmc.Sobol(d=len(space.params), scramble=True, seed=seed)
    m = math.ceil(math.log2(max(n, 2)))
    u = sobol.random_base2(m)[:n]
    algo = next((p for p in space.params if p.name == "rl.algorithm"), None)
    out = []
    for i, row in enumerate(u):
        cfg = {p.name: p.from_unit(float(x)) for p, x in zip(space.params, row, strict=True)}
        if algo is not None and algo.choices is not None and "dpo" in algo.choices:
            cfg["rl.algorithm"] = "dpo" if i % DPO_EVERY == DPO_EVERY - 1 else "grpo"
        out.append(space.complete(cfg))
    return out


def plan(
    space: Space,
    tasks: list[str],
    n_configs: int,
    n_replicates: int,
    n_seeds: int,
    seed: int = 0,
) -> list[GenJob]:
    """Every (task, seed) job of the generation, in the order they run."""
    if n_replicates < 0 or n_replicates > n_configs:
        raise SpecError(
            f"--replicates must be between 0 and --configs-per-task ({n_configs}), "
            f"but got {n_replicates}"
        )
    if n_seeds < 1:
        raise SpecError(f"--seeds must be >= 1, but got {n_seeds}")
    configs = design(space, n_configs, seed)
    jobs = [GenJob(t, seed, list(configs)) for t in tasks]
    if n_replicates and n_seeds > 1:
        for t in tasks:
            jobs += [GenJob(t, seed + k, configs[:n_replicates]) for k in range(1, n_seeds)]
    return jobs


def job_spec(
    template: JobSpec,
    job: GenJob,
    prefix: str,
    experiment: str,
    max_concurrent: int,
    n_train: int | None = None,
) -> JobSpec:
    """The spec of one generation job: the template's model, space, evaluation and resources,
    the task's built-in dataset, the fixed design as searcher, every trial run to the end."""
    data = template.dump()
    data["name"] = job.name(prefix)
    data["dataset"] = {
        "task": job.task,
        "n_train": n_train or CORPUS_TASKS.get(job.task, template.dataset.n_train),
        "n_rl": template.dataset.n_rl,
        "n_eval": template.dataset.n_eval,
        "min_eval": template.dataset.min_eval,
    }
    data["budget"] = {
        "max_trials": len(job.todo),
        "max_concurrent": max(1, min(max_concurrent, len(job.todo))),
        "early_stop_fraction": 1.0,
        "max_failures": template.budget.max_failures,
    }
    data["search"] = {"algorithm": "design", "seed": job.seed, "options": {"configs": job.todo}}
    data["history"] = {}
    # The corpus records where every configuration ends up: RL divergence rules never stop a
    # generation trial early (non-finite losses still end it as failed).
    data["stopping"] = {**data.get("stopping", {}), "patience": 1000}
    data["seed"] = job.seed
    data["tracking"] = {"uri": template.tracking.uri, "experiment": experiment}
    return parse_spec(data, base_dir=template.base_dir)


def ended_configs(tracking_uri: str | None, experiment: str, job_name: str, space: Space) -> set:
    """Configuration keys of the trials of ``job_name`` that ended (completed or failed)."""
    from autopipe.history.mlflow_reader import parse_param
    from autopipe.tracking import open_client

    client = open_client(tracking_uri)  # the store run_job writes to
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return set()
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{M.TAG_JOB}` = '{job_name}' and tags.`{M.TAG_ROLE}` = 'trial'",
        max_results=50000,
    )
    done = set()
    for r in runs:
        if r.data.tags.get(M.TAG_STATUS) not in (M.STATUS_COMPLETED, M.STATUS_FAILED):
            continue  # killed or still marked running: run it again
        cfg = {}
        for p in space.params:
            text = r.data.params.get(p.name)
            if text is not None:
                cfg[p.name] = parse_param(p, text, f"mlflow:{experiment}", r.info.run_id)
        done.add(space.config_key(space.complete(cfg)))
    return done


def resolve_todo(
    jobs: list[GenJob], space: Space, tracking_uri: str | None, experiment: str, prefix: str
) -> None:
    """Fill each job's ``todo`` with its configurations that have not ended in MLflow yet."""
    for job in jobs:
        done = ended_configs(tracking_uri, experiment, job.name(prefix), space)
        job.todo = [c for c in job.configs if space.config_key(c) not in done]
        job.done = len(job.configs) - len(job.todo)


def run_plan(
    jobs: list[GenJob],
    template: JobSpec,
    prefix: str,
    experiment: str,
    max_concurrent: int,
    n_train: int | None = None,
) -> int:
    """Run every job of the plan with trials left (:func:`resolve_todo` first), one after the
    other on one embedded Ray, printing a line per job; returns the exit code (130 when a job was
    interrupted: the same command resumes)."""
    import time

    from autopipe.tune.cluster import local_ray_env, ray_session

    local_ray_env()  # before Ray is imported
    from autopipe.tune.job import run_job

    t0 = time.time()
    with ray_session(template):
        for j in jobs:
            if not j.todo:
                continue
            spec = job_spec(template, j, prefix, experiment, max_concurrent, n_train)
            res = run_job(spec, verbose=0)
            ok = sum(1 for v in res.statuses.values() if v == M.STATUS_COMPLETED)
            print(
                f"{j.name(prefix)}: {len(j.todo)} trials, {ok} completed, "
                f"{res.wall_s:.0f} s (total {time.time() - t0:.0f} s)",
                flush=True,
            )
            if res.interrupted:
                print("history generate: interrupted; run the same command again to resume")
                return 130
    print(
        f"history generate: done in {time.time() - t0:.0f} s; export with `autopipe history "
        f"export --from mlflow:{experiment} --out DIR`"
    )
    return 0
