"""A trial as Ray Tune runs it: the function trainable that starts one Ray Train
``TorchTrainer`` per trial (its workers run :func:`autopipe.tune.train_loop.train_loop`), the
worker-side settings of a job, and where checkpoints are stored. No search or scheduling here."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from autopipe.spec import JobSpec
from autopipe.tracking import data_dir

# Ray's resource of the head node; each trial driver takes a tiny share of it.
# NOTE: 1e-4 is Ray's resource granularity: up to 10,000 concurrent trial drivers.
HEAD_RESOURCE = "node:__internal_head__"
HEAD_SHARE = 1e-4


def trial_settings(spec: JobSpec) -> dict[str, Any]:
    """The worker-side TrialSettings of a job, as a plain dict."""
    from autopipe.trial.settings import TrialSettings

    threads = spec.resources.threads_per_worker or max(1, int(spec.resources.cpus_per_worker))
    s = TrialSettings(
        model_name=spec.model.name,
        model_path=str(spec.resolve(spec.model.path)) if spec.model.path else None,
        max_length=spec.model.max_length,
        max_completion_length=spec.model.max_completion_length,
        dtype=spec.model.dtype,
        eval_samples=spec.eval.samples,
        eval_temperature=spec.eval.temperature,
        reward_format_weight=spec.eval.reward_format_weight,
        rewards=spec.eval.reward_list(),
        deepspeed=spec.resources.deepspeed,
        device="cuda" if spec.resources.gpus_per_worker > 0 else "cpu",
        threads=threads,
        seed=spec.seed,
        early_stop_fraction=spec.budget.early_stop_fraction,
    )
    return asdict(s)


def make_trainable(
    spec: JobSpec,
    constants: dict[str, Any],
    storage: str,
    full_fidelity: bool = False,
    replay: dict[str, dict[str, Any]] | None = None,
) -> Any:
    """A Tune function trainable that runs one trial as a Ray Train ``TorchTrainer``.

    ``full_fidelity`` runs trials to the end whatever the early-stop fraction (promotion); a
    config holding ``RESUME_KEY`` resumes that checkpoint instead of starting over. A trial in
    ``replay`` (resume: it ended before the driver died, after Tune's last checkpoint) only
    reports its recorded final result again. A restarted trial's Train run (same name, same
    storage) continues from its latest checkpoint: Ray Train reloads it.
    """
    from ray import tune

    from autopipe.trial import worker as W
    from autopipe.tune.callbacks import RESERVED, RESUME_KEY
    from autopipe.tune.train_loop import train_loop

    settings = trial_settings(spec)
    if full_fidelity:
        settings["early_stop_fraction"] = 1.0
    base = {
        W.KEY_SETTINGS: settings,
        W.KEY_DATASET: spec.dataset.model_dump(mode="json"),
        W.KEY_BASE_DIR: str(spec.base_dir),
    }
    res = spec.resources
    max_failures = spec.budget.max_failures
    replay = dict(replay or {})

    def autopipe_trial(config: dict[str, Any]) -> None:
        import ray.train
        from ray.train.torch import TorchConfig, TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        trial_id = tune.get_context().get_trial_id()
        if trial_id in replay:
            tune.report(replay[trial_id])
            return
        worker_cfg = dict(base)
        worker_cfg[W.KEY_PARAMS] = {
            **constants,
            **{k: v for k, v in config.items() if k not in RESERVED},
        }
        if config.get(RESUME_KEY):
            worker_cfg[W.KEY_RESUME] = config[RESUME_KEY]
        use_gpu = res.gpus_per_worker > 0
        per_worker = {"CPU": res.cpus_per_worker}
        if use_gpu:
            per_worker["GPU"] = res.gpus_per_worker
        trainer = TorchTrainer(
            train_loop,
            train_loop_config=worker_cfg,
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ray.train.ScalingConfig(
                num_workers=res.workers_per_trial, use_gpu=use_gpu, resources_per_worker=per_worker
            ),
            run_config=ray.train.RunConfig(
                name=f"trial-{trial_id}",
                storage_path=storage,
                callbacks=[TuneReportCallback()],
                failure_config=ray.train.FailureConfig(max_failures=max_failures),
            ),
        )
        trainer.fit()

    # The trial driver only waits on its Train run; the workers hold the CPUs/GPUs. Ray needs a
    # non-empty request, so the driver asks for 1 MiB of memory and no CPU: a CPU fraction here
    # would keep a worker that needs every CPU of a node from ever being scheduled. It stays on
    # the head node, beside the job's driver (Ray Train puts the trial's Train controller on the
    # same node): losing a worker node then loses only Train workers, which Train retries.
    return tune.with_resources(
        autopipe_trial, {"cpu": 0, "memory": 1 << 20, HEAD_RESOURCE: HEAD_SHARE}
    )


def storage_path(spec: JobSpec) -> str:
    if spec.storage:
        s = spec.storage
        return s if "://" in s else str(spec.resolve(s).resolve())
    p = data_dir() / "ray_results"
    p.mkdir(parents=True, exist_ok=True)
    return str(p)
