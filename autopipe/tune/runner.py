"""Run a tuning job: Ray Tune over trials that are Ray Train ``TorchTrainer`` runs, a searcher
from the registry, MLflow tracking on the driver, and the best configuration written back.

This module wires parts together; it holds no search math and no training code.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from autopipe import metrics as M
from autopipe.errors import ClusterError, SpecError, TrackingError
from autopipe.spec import JobSpec, parse_spec
from autopipe.tracking import Tracker, data_dir
from autopipe.transfer import load_transfer

log = logging.getLogger(__name__)

# Environment every Ray worker gets: quiet, offline, one thread pool per worker.
WORKER_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "PYTHONWARNINGS": "ignore",
    "RAY_TRAIN_V2_ENABLED": "1",
    # Ray Train's print patch ignores print(file=...), which makes Ray's own dis.dis(file=buf)
    # spill bytecode listings into the trial logs.
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    # Train's controller polls its workers at this interval and every ray.train.report waits
    # for that poll: the 2 s default made reporting dominate tiny trials.
    # NOTE: 0.25 s was chosen by hand; benchmarks/overhead.py measures the per-trial overhead
    # that results (benchmarks/README.md).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25",
    # Train's controller gives a worker group 60 s to start, then fails the attempt: on a loaded
    # 2-core machine (a demo beside another job) worker processes took longer and every attempt
    # timed out. A user's own setting in the driver's environment wins (worker_env).
    "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "300",
}


_UNSET: Any = object()  # make_core's "prior not given" (None means "no prior")

# Ray's resource of the head node; each trial driver takes a tiny share of it.
# NOTE: 1e-4 is Ray's resource granularity: up to 10,000 concurrent trial drivers.
HEAD_RESOURCE = "node:__internal_head__"
HEAD_SHARE = 1e-4


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


def trial_settings(spec: JobSpec) -> dict[str, Any]:
    """The worker-side TrialSettings of a job, as a plain dict."""
    from autopipe.trial.pipeline import TrialSettings

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


def worker_env(spec: JobSpec) -> dict[str, str]:
    threads = spec.resources.threads_per_worker or max(1, int(spec.resources.cpus_per_worker))
    env = dict(WORKER_ENV)
    env["OMP_NUM_THREADS"] = str(threads)
    for key in ("TORCH_EXTENSIONS_DIR", "AUTOPIPE_FAULT", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def local_ray_env() -> None:
    """Environment for an embedded Ray that listens on 127.0.0.1 only.

    Ray reads these when it is imported, so the CLI calls this before importing Ray.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


def init_ray(spec: JobSpec, address: str | None) -> bool:
    """Connect to ``address`` or start an embedded local Ray bound to 127.0.0.1.

    Returns whether this call started Ray (and so should shut it down).
    """
    import ray

    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": worker_env(spec)}
    if address:
        # Under `autopipe submit` the job's runtime env already sets these variables: let the
        # driver's identical settings merge with it instead of failing on the overlap.
        os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
        try:
            ray.init(
                address=address,
                runtime_env=runtime_env,
                log_to_driver=True,
                logging_level=logging.WARNING,
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ClusterError(
                f"--address {address!r}: cannot connect to a Ray cluster ({e})"
            ) from None
        return True
    # Embedded: everything on loopback (see local_ray_env), no token auth for a single-user
    # local instance.
    local_ray_env()
    # Ray Train's PlacementGroupCleaner (and any State API call in a worker) finds "its" cluster
    # by auto-detection, which fails when another Ray runs on this machine (e.g. a history
    # generation beside the demo): the cleaner then dies, every early-stopped trial leaks its
    # placement group, and once they hold all CPUs no trial can start. So the workers are told
    # this instance's API server, on a dashboard port chosen here.
    env_vars = runtime_env["env_vars"]
    for attempt in range(3):
        dash_port = free_port()
        api = {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{dash_port}"}
        try:
            ray.init(
                # "local" always starts a new instance: never attach to another Ray here.
                address="local",
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                dashboard_port=dash_port,
                runtime_env={**runtime_env, "env_vars": {**env_vars, **api}},
                logging_level=logging.WARNING,
                log_to_driver=True,
                configure_logging=True,
                _node_ip_address="127.0.0.1",
            )
            break
        except (ValueError, RuntimeError, ConnectionError) as e:
            # Ray makes no retry on a given dashboard port: something took the free port we
            # picked before Ray bound it. Start over on another one.
            if ray.is_initialized():
                ray.shutdown()
            if "port" not in str(e).lower() or attempt == 2:
                raise ClusterError(f"could not start the embedded Ray ({e})") from None
            log.warning("the embedded Ray's dashboard port %d was taken; retrying", dash_port)
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Seconds `autopipe tune --address HOST:PORT` waits for a TCP connection before giving up
# (ray.init itself retries an unreachable GCS for minutes).
ADDRESS_PROBE_S = 5.0


def check_address(address: str | None, timeout_s: float = ADDRESS_PROBE_S) -> None:
    """Fail fast on ``--address HOST:PORT`` where nothing listens: one TCP connection attempt.

    ``auto``, ``local`` and URIs (``ray://HOST:PORT``) are left to ``ray.init``.
    """
    import socket

    if not address or address in ("auto", "local") or "://" in address:
        return
    if address.startswith("["):  # [IPv6]:PORT
        host, sep, port = address[1:].partition("]:")
        if not sep:
            return
    else:
        host, _, port = address.rpartition(":")
        if not host or ":" in host:
            return  # no port, or a bare IPv6 address: Ray says what is wrong
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(
            f"--address {address}: the port must be a number in 1..65535, but got {port!r}"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except socket.gaierror:
        raise ClusterError(
            f"--address {address}: no Ray cluster reachable (cannot resolve host {host!r})"
        ) from None
    except TimeoutError:
        raise ClusterError(
            f"--address {address}: no Ray cluster reachable (no answer in {timeout_s:g} s)"
        ) from None
    except ConnectionRefusedError:
        raise ClusterError(
            f"--address {address}: no Ray cluster reachable (connection refused)"
        ) from None
    except OSError as e:
        raise ClusterError(
            f"--address {address}: no Ray cluster reachable ({e.strerror or e})"
        ) from None


def check_resources(spec: JobSpec) -> None:
    """Reject trials that no node can host, before anything waits forever."""
    import ray

    need_cpu = spec.resources.cpus_per_worker
    need_gpu = spec.resources.gpus_per_worker
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    fits = [
        n
        for n in nodes
        if n["Resources"].get("CPU", 0) >= need_cpu and n["Resources"].get("GPU", 0) >= need_gpu
    ]
    total_cpu = sum(n["Resources"].get("CPU", 0) for n in nodes)
    total_gpu = sum(n["Resources"].get("GPU", 0) for n in nodes)
    w = spec.resources.workers_per_trial
    if len(nodes) > 1 and not spec.storage:
        raise ClusterError(
            "storage must name a path shared by every node (or a URI such as s3://...) on a "
            f"cluster of {len(nodes)} nodes, but got none (checkpoints would stay on one node)"
        )
    if not fits:
        raise ClusterError(
            f"resources: a worker needs {need_cpu:g} CPU and {need_gpu:g} GPU, but no node of the "
            f"cluster has that much (largest: "
            f"{max((n['Resources'].get('CPU', 0) for n in nodes), default=0):g} CPU, "
            f"{max((n['Resources'].get('GPU', 0) for n in nodes), default=0):g} GPU)"
        )
    if total_cpu < w * need_cpu or total_gpu < w * need_gpu:
        raise ClusterError(
            f"resources: a trial needs {w} workers x ({need_cpu:g} CPU, {need_gpu:g} GPU), but the "
            f"cluster has {total_cpu:g} CPU and {total_gpu:g} GPU in all"
        )


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
            W.train_fn,
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


def dataset_tags(spec: JobSpec) -> tuple[dict[str, str], dict[str, float]]:
    """Dataset id and meta-features (computed on the driver before any training)."""
    from autopipe.tasks import load_dataset

    data = load_dataset(spec.dataset, spec.base_dir)
    meta = compute_meta(data)
    tags = {M.TAG_DATASET: data.dataset_id()}
    tags.update({f"{M.TAG_META_PREFIX}{k}": f"{v:.6g}" for k, v in meta.items()})
    return tags, meta


def compute_meta(data: Any) -> dict[str, float]:
    """Text meta-features of the SFT split against the evaluation split, cached by content hash."""
    from autopipe.history.metafeatures import cached_text_meta_features

    rec = data.to_records()
    return cached_text_meta_features(rec["train"], rec["eval"], data_dir() / "meta_cache")


def run_job(
    spec: JobSpec, address: str | None = None, verbose: int = 1, resume: bool = False
) -> JobResult:
    """Run the whole job; always leaves the MLflow runs it opened closed.

    ``resume`` continues the job's latest execution if it did not finish (its driver was
    killed, or Ctrl-C): same parent run, same Tune experiment; finished trials stay as they are,
    unfinished ones restart from their last checkpoint.
    """
    t0 = time.time()
    space = spec.to_space()
    # Bad input is a one-line error before Ray or MLflow start (and before Ray is imported).
    preflight(spec, space, address)
    check_address(address)

    from ray import tune

    from autopipe.scheduling.budget import BudgetGate
    from autopipe.scheduling.ledger import Ledger
    from autopipe.scheduling.policy import StopRules
    from autopipe.scheduling.ray_scheduler import AutoPipeScheduler
    from autopipe.tune.callbacks import MLflowTrialCallback
    from autopipe.tune.resume import (
        find_unfinished,
        load_trials,
        promotions_done,
        reopen_run,
        replay_result,
    )
    from autopipe.tune.searcher import JobSearcher

    tracker = Tracker(spec.tracking.uri)
    tracker.check()
    exp_name = spec.tracking.experiment or spec.name
    exp_id = tracker.experiment_id(exp_name)
    previous = find_unfinished(tracker, spec.name)
    if resume and previous is None:
        raise TrackingError(
            f"--resume: job {spec.name!r} has no unfinished run with a restorable Ray Tune "
            f"experiment in the tracking store at {tracker.uri}"
        )
    if previous is not None and not resume:
        log.warning(
            "job %r has an unfinished run %s (%s); `autopipe tune SPEC --resume` continues it. "
            "Starting a new run.",
            spec.name,
            previous.run_id,
            previous.status,
        )
        previous = None
    if previous is not None:
        _check_same_spec(tracker, previous.run_id, spec)
    ds_tags, meta = dataset_tags(spec)
    # Before any MLflow run exists: a history of another space is a one-line error, not a
    # failed job run.
    transfer = load_transfer(spec, space, tracker.uri, log=log.info)
    common_tags = {M.TAG_JOB: spec.name, **ds_tags}
    if previous is not None:
        exp_id, parent = previous.experiment_id, previous.run_id
        reopen_run(tracker, parent)
    else:
        parent = tracker.start_run(
            exp_id,
            f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}",
            {**common_tags, M.TAG_ROLE: "job", M.TAG_SEARCH: spec.search.algorithm},
        )
    started = False
    result = JobResult(spec.name, exp_id, parent, tracker.uri, None, None, None)
    ledger = Ledger()
    # Each trial's params: its configuration, the space's constants and the training seed.
    trial_params = {**space.constants, "seed": spec.seed}
    callback = MLflowTrialCallback(tracker, exp_id, parent, common_tags, trial_params, ledger)
    early = spec.budget.early_stop_fraction
    searcher = None
    done_before: dict[str, str] = {}  # --resume: promotions the previous execution finished
    errored = False
    rules = StopRules(
        early_stop_fraction=early,
        kl_growth=spec.stopping.kl_growth,
        kl_floor=spec.stopping.kl_floor,
        reward_drop=spec.stopping.reward_drop,
        patience=spec.stopping.patience,
    )
    try:
        if previous is None:
            _log_job(tracker, parent, spec, space, meta, ds_tags)
        result.transfer = list(transfer.notes)
        if transfer.notes and previous is None:
            tracker.set_tags(parent, transfer.tags)
            tracker.log_text(
                parent,
                json.dumps({"fingerprint": transfer.fingerprint, "notes": transfer.notes}),
                M.ARTIFACT_TRANSFER,
            )
        elif previous is not None:
            _check_same_transfer(tracker, parent, transfer)
        if transfer.predictor is not None:
            from autopipe.predictor.proxy import make_proxy

            ledger.proxy_fn = make_proxy(transfer.predictor, transfer.prior, space, meta, spec.seed)
        # The searcher and the storage folder before Ray: their errors are the user's input.
        core = make_core(spec, space, meta, prior=transfer.prior)
        storage = storage_path(spec)
        started = init_ray(spec, address)
        check_resources(spec)
        searcher = JobSearcher(
            core,
            ledger,
            BudgetGate(
                ledger,
                spec.budget.cost_cap_s,
                early,
                min(spec.budget.promote, spec.budget.max_trials),
            ),
            metric=M.OBJECTIVE,
            mode="max",
        )
        tune_config = tune.TuneConfig(
            search_alg=searcher,
            scheduler=AutoPipeScheduler(rules, ledger),
            metric=M.OBJECTIVE,
            mode="max",
            num_samples=spec.budget.max_trials,
            max_concurrent_trials=spec.budget.max_concurrent,
        )
        if previous is not None:
            run_name = previous.path.rstrip("/").rsplit("/", 1)[-1]
            trials = load_trials(tracker, parent, exp_id)
            callback.resume_from(trials)
            done_before, promoted_cfgs = promotions_done(trials, space)
            for tid, cfg in promoted_cfgs.items():
                callback.configs.setdefault(tid, cfg)
            replay = {t: replay_result(r) for t, r in trials.items() if r.done}
            tuner = tune.Tuner.restore(
                previous.path,
                trainable=make_trainable(spec, space.constants, storage, replay=replay),
                resume_unfinished=True,
                resume_errored=False,
            )
            _reattach(tuner, tune_config, [callback], verbose)
        else:
            run_name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            tracker.set_tags(parent, {M.TAG_TUNE_PATH: _join(storage, run_name)})
            tuner = tune.Tuner(
                make_trainable(spec, space.constants, storage),
                tune_config=tune_config,
                run_config=tune.RunConfig(
                    name=run_name, storage_path=storage, callbacks=[callback], verbose=verbose
                ),
            )
        result.prior_top = prior_top(core)
        grid = tuner.fit()
        result.experiment_path = grid.experiment_path
        if early < 1.0 and not _unfinished(callback, tracker):
            _promote(
                spec,
                space,
                core,
                ledger,
                callback,
                storage,
                run_name,
                verbose,
                result,
                done_before,
            )
    except Exception:
        errored = True
        raise
    finally:
        if previous is not None:
            callback.drop_orphans()
        open_trials = _unfinished(callback, tracker)
        for t in open_trials:
            callback.status[t] = M.STATUS_KILLED
        n_search = len([t for t in callback.status if t not in result.promoted])
        ended_by_itself = n_search >= min(spec.budget.max_trials, _space_size(space)) or (
            searcher is not None and (searcher.finished_by_budget or searcher.exhausted)
        )
        result.interrupted = bool(open_trials) or not ended_by_itself
        try:
            # Close the child runs the callback could not finish (Ctrl-C), then summarise.
            for t in open_trials:
                tracker.set_tags(callback.runs[t], {M.TAG_STATUS: M.STATUS_KILLED})
                tracker.end_run(callback.runs[t], "KILLED")
            _summarise(result, callback, space.constants, tracker)
        except TrackingError as e:  # never hide the job's own error behind a tracking one
            log.error("could not finish the MLflow records of the job: %s", e)
        finally:
            tracker.close_open(
                "FAILED" if errored else "KILLED" if result.interrupted else "FINISHED"
            )
            if started:
                import ray

                ray.shutdown()
            result.wall_s = time.time() - t0
            result.parent_run_id = tracker.resolve(parent)  # a placeholder during an outage
    return result


def _log_job(
    tracker: Tracker,
    parent: str,
    spec: JobSpec,
    space: Any,
    meta: dict[str, float],
    ds_tags: dict[str, str],
) -> None:
    """The parent run's record of the job: spec, space, meta-features, main parameters."""
    tracker.log_text(parent, json.dumps(space.to_json(), indent=1), M.ARTIFACT_SPACE)
    tracker.log_text(parent, yaml.safe_dump(spec.dump(), sort_keys=False), M.ARTIFACT_SPEC)
    tracker.log_text(parent, json.dumps(meta, indent=1, sort_keys=True), M.ARTIFACT_META)
    tracker.log_params(
        parent,
        {
            "search.algorithm": spec.search.algorithm,
            "budget.max_trials": spec.budget.max_trials,
            "budget.early_stop_fraction": spec.budget.early_stop_fraction,
            "dataset": ds_tags[M.TAG_DATASET],
            "model": spec.model.name,
        },
    )


def _join(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else os.path.join(storage, name)


def _check_same_transfer(tracker: Tracker, parent: str, transfer: Any) -> None:
    """``--resume`` refits or reloads the prior and predictor: warn when what they came from
    (the history's runs, the saved model files) changed since the job started."""
    text = tracker.read_text(parent, M.ARTIFACT_TRANSFER)
    old = json.loads(text).get("fingerprint", "") if text else ""
    if old != transfer.fingerprint:
        log.warning(
            "--resume: the history or saved models differ from when run %s started; the "
            "resumed search and early-stop scoring use models from the current ones",
            parent,
        )


def _check_same_spec(tracker: Tracker, parent: str, spec: JobSpec) -> None:
    """``--resume`` continues the same search: refuse a spec that changed since (Tune would keep
    the old trial count and searcher, and a changed space breaks the searcher's saved state)."""
    text = tracker.read_text(parent, M.ARTIFACT_SPEC)
    if text is None:
        return  # no record of the original spec: nothing to compare with
    old = yaml.safe_load(text) or {}
    try:
        # fields added since the run was recorded compare at their defaults
        old = parse_spec(old).dump()
    except SpecError:
        pass  # compare what was recorded
    new = spec.dump()
    changed = []
    for k in sorted(set(old) | set(new)):
        if k == "tracking" or old.get(k) == new.get(k):  # where records go may change
            continue
        o, n = old.get(k), new.get(k)
        if isinstance(o, dict) and isinstance(n, dict):
            changed += [f"{k}.{s}" for s in sorted(set(o) | set(n)) if o.get(s) != n.get(s)]
        else:
            changed.append(k)
    if changed:
        raise SpecError(
            f"--resume: the job spec differs from the run being resumed ({parent}) in "
            f"{', '.join(changed)}; resume with the original spec or start a new run without "
            "--resume"
        )


def _reattach(tuner: Any, tune_config: Any, callbacks: list[Any], verbose: int) -> None:
    """Give a restored Tuner this execution's searcher, scheduler and callbacks.

    ``Tuner.restore`` unpickles the ones the first execution started with: empty, and bound to
    the dead driver's MLflow client. Tune then loads the searcher's saved state (with the
    ledger) into the new searcher from the experiment directory (``Searcher.restore_from_dir``).
    NOTE: private attributes of ``ray.tune.Tuner`` as of Ray 2.60 (pinned in pyproject.toml);
    tests/tune/test_resume.py fails if they move.
    """
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None:
        raise ClusterError(
            "--resume works with an embedded Ray or --address of a cluster this machine is part "
            "of (auto, HOST:6379), not through Ray Client (ray://); submit the job instead"
        )
    internal._tune_config = tune_config
    internal._run_config.callbacks = callbacks
    internal._run_config.verbose = verbose


def _unfinished(callback: Any, tracker: Tracker) -> list[str]:
    return [t for t, rid in callback.runs.items() if rid in tracker.open_runs]


def make_core(spec: JobSpec, space: Any, meta: dict[str, float], prior: Any = _UNSET) -> Any:
    """The searcher's Ray-free core from the registry, with the job's prior (``prior``: a
    loaded or fitted one, or ``None``; by default the one ``history.prior`` names).

    ``search.options`` must be keyword arguments of the core (checked here, so a typo is a
    one-line error); ``prior`` and ``meta`` come from ``history`` and the dataset, not options.
    """
    import inspect

    algo = spec.search.algorithm
    factory = _checked_factory(spec)
    params = inspect.signature(factory).parameters
    opts: dict[str, Any] = {}
    if "budget" in params:
        opts["budget"] = spec.budget.max_trials
    if algo == "autopipe":
        prior = load_prior(spec) if prior is _UNSET else prior
        if prior is None:
            log.warning(
                "search.algorithm autopipe without a prior (history.prior or "
                "history.run_tables): plain GP-BO, no transfer"
            )
        opts.update(prior=prior, meta=meta)
    opts.update(spec.search.options)
    return factory(space, seed=spec.search.seed, **opts)


def _checked_factory(spec: JobSpec) -> Any:
    """The core factory of ``search.algorithm``, once ``search.options`` are known to be among
    its keyword arguments."""
    import inspect

    from autopipe.search import get_core_factory

    algo = spec.search.algorithm
    factory = get_core_factory(algo)
    params = inspect.signature(factory).parameters
    allowed = sorted(
        n
        for n, p in params.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in ("space", "seed", "prior", "meta")
    )
    unknown = sorted(set(spec.search.options) - set(allowed))
    if unknown:
        raise SpecError(
            f"search.options of {algo!r} must be among {allowed}, but got unknown {unknown}"
        )
    for name, value in spec.search.options.items():
        _check_option_type(name, value, params[name])
    check_values = getattr(factory, "check_options", None)
    if check_values is not None:  # the model-based cores' range checks (cheap, no prior needed)
        check_values(**spec.search.options)
    return factory


# scalar annotations of core options (as strings: the cores use postponed annotations)
_OPTION_TYPES = {"bool": (bool,), "int": (int,), "float": (int, float)}


def _check_option_type(name: str, value: Any, param: Any) -> None:
    """A scalar option of the wrong type (``warm_start: "5"``, ``guard: "false"``) is a one-line
    error before anything starts; the model-based cores' ``check_options`` check the ranges."""
    ann = param.annotation if isinstance(param.annotation, str) else ""
    parts = [a.strip() for a in ann.split("|")]
    optional = "None" in parts
    kinds = [a for a in parts if a != "None"]
    if len(kinds) != 1 or kinds[0] not in _OPTION_TYPES or (value is None and optional):
        return
    want = kinds[0]
    ok = isinstance(value, _OPTION_TYPES[want]) and (want == "bool" or not isinstance(value, bool))
    if not ok:
        what = {"bool": "true or false", "int": "an integer", "float": "a number"}[want]
        raise SpecError(f"search.options.{name} must be {what}, but got {value!r}")


# Searchers whose core is cheap to build without a prior, meta-features or torch: the checks
# before a job starts build them (grid needs a finite space, design its configs, ...).
CHEAP_CORES = ("random", "grid", "design")


def check_search(spec: JobSpec, space: Any = None) -> None:
    """The searcher checks a job can make before anything starts: ``search.options`` names, and
    for the cheap cores (:data:`CHEAP_CORES`) the core itself built once (a grid over a
    continuous space, a design without configs, a candidate outside the space). Model-based
    cores need the prior to be built: their option values are range-checked by their
    ``check_options``."""
    space = spec.to_space() if space is None else space
    _checked_factory(spec)
    if spec.search.algorithm in CHEAP_CORES:
        make_core(spec, space, {}, prior=None)


def preflight(spec: JobSpec, space: Any = None, address: str | None = None) -> None:
    """Every check of a job's input that needs neither Ray, MLflow nor a fitted model: the files
    and folders the spec names, and the searcher (``autopipe validate`` runs exactly these).
    With an ``address`` (an existing cluster) the model and storage paths are left to the
    cluster's nodes."""
    from autopipe.spec import check_paths

    check_paths(spec, local=address is None)
    check_search(spec, space)


def load_prior(spec: JobSpec) -> Any:
    """The prior ``history.prior`` names, else ``None``."""
    if not spec.history.prior:
        return None
    from autopipe.prior.ranker import RankingPrior

    return RankingPrior.load(spec.resolve(spec.history.prior))


def load_proxy(spec: JobSpec, meta: dict[str, float], tracking_uri: str | None = None) -> Any:
    """The proxy of early-stopped trials: the job's learned predictor (named by
    ``history.predictor`` or fitted from its histories, see :mod:`autopipe.transfer`), else
    ``None``. A residual predictor's prior z-score of a configuration is computed against a
    fixed seeded reference sample of the space (:func:`autopipe.predictor.proxy.make_proxy`)."""
    from autopipe.predictor.proxy import make_proxy

    space = spec.to_space()
    transfer = load_transfer(spec, space, tracking_uri)
    if transfer.predictor is None:
        return None
    return make_proxy(transfer.predictor, transfer.prior, space, meta, spec.seed)


def _list_searcher(configs: list[dict[str, Any]]) -> Any:
    """A Ray Tune searcher that suggests ``configs`` in order, then finishes. Each dict is a
    whole trial config (no param_space to merge with), so configurations of a conditional space
    keep exactly their own keys."""
    from ray.tune.search import Searcher

    class ListSearcher(Searcher):
        def __init__(self) -> None:
            super().__init__(metric=M.OBJECTIVE, mode="max")
            self._todo = [dict(c) for c in configs]

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            return self._todo.pop(0) if self._todo else Searcher.FINISHED

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            pass

    return ListSearcher()


def _promote(
    spec: JobSpec,
    space: Any,
    core: Any,
    ledger: Any,
    callback: Any,
    storage: str,
    run_name: str,
    verbose: int,
    result: JobResult,
    done_before: dict[str, str] | None = None,
) -> None:
    """Run the searcher's shortlist (``budget.promote`` configurations; a model-based searcher's
    recommendation first) to full fidelity, each resuming its early-stopped trial; the best full
    result is the job's answer (:func:`_summarise`). Shortlisted configurations that already ran
    to the end are not rerun: trials that completed during the search, and (``done_before``,
    on ``--resume``: early-stopped source trial id -> its completed promoted trial) promotions a
    previous execution finished."""
    from ray import tune

    from autopipe.tune.callbacks import PROMOTED_FROM_KEY, RESUME_KEY

    shortlist = core.shortlist(spec.budget.promote)
    if not shortlist:
        log.warning("no trial produced a score; nothing to promote")
        return
    early: dict[tuple, Any] = {}
    for r in ledger.trials.values():
        if r.status != M.STATUS_EARLY_STOPPED:
            continue
        key = space.config_key({k: v for k, v in r.config.items() if k in space.names})
        best = early.get(key)
        # the same configuration stopped twice (a design with repeats): resume one that can be
        # resumed, with the better proxy
        if best is None or _resumable_rank(r) > _resumable_rank(best):
            early[key] = r
    done_before = dict(done_before or {})
    points, sources = [], []
    for cfg in shortlist:
        source = early.get(space.config_key(cfg))
        if source is None:
            continue  # ran to full fidelity already (or failed): its own result stands
        if source.trial_id in done_before:  # promoted by the execution this one resumes
            t = done_before[source.trial_id]
            result.promoted[t] = source.trial_id
            _count_saved(result, t, source, callback, tag=False)
            continue
        config = dict(cfg)
        if source.checkpoint:
            config[RESUME_KEY] = source.checkpoint
            config[PROMOTED_FROM_KEY] = source.trial_id
        points.append(config)
        sources.append(source)
    if not points:
        return
    tuner = tune.Tuner(
        make_trainable(spec, space.constants, storage, full_fidelity=True),
        tune_config=tune.TuneConfig(
            search_alg=_list_searcher(points),
            num_samples=len(points),
            max_concurrent_trials=spec.budget.max_concurrent,
            metric=M.OBJECTIVE,
            mode="max",
        ),
        run_config=tune.RunConfig(
            name=f"{run_name}-promote", storage_path=storage, callbacks=[callback], verbose=verbose
        ),
    )
    before = set(callback.configs)
    tuner.fit()
    by_key = {space.config_key(p): s for p, s in zip(points, sources, strict=True)}
    for t in [t for t in callback.configs if t not in before]:
        cfg = {k: v for k, v in callback.configs[t].items() if k in space.names}
        source = by_key.get(space.config_key(cfg))
        result.promoted[t] = source.trial_id if source is not None else ""
        if source is not None and source.checkpoint:
            _count_saved(result, t, source, callback, tag=True)


def _resumable_rank(r: Any) -> tuple[bool, float]:
    """Order of early-stopped trials of one configuration: one with a checkpoint first, then
    the better proxy (a trial without a proxy last)."""
    return bool(r.checkpoint), -math.inf if r.proxy is None else float(r.proxy)


def _count_saved(result: JobResult, t: str, source: Any, callback: Any, tag: bool) -> None:
    """Credit promoted trial ``t`` with its source's prefix, which it did not recompute."""
    saved = float(source.cost_s)
    result.saved_by[t] = saved
    result.cost_saved_s += saved
    rid = callback.runs.get(t)
    if tag and rid:
        callback.tracker.set_tags(rid, {M.TAG_COST_SAVED: f"{saved:.2f}"})


def _space_size(space: Any) -> float:
    n = space.grid_size() if space.is_finite and len(space) <= 12 else math.inf
    return n


def _summarise(result: JobResult, cb: Any, constants: dict[str, Any], tracker: Tracker) -> None:
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


def canonical_order(config: dict[str, Any]) -> dict[str, Any]:
    """SFT parameters, then RL parameters, in the order the job spec documents them."""
    from autopipe.spec import RL_PARAMS, SFT_PARAMS

    order = [f"sft.{k}" for k in SFT_PARAMS] + [f"rl.{k}" for k in RL_PARAMS]
    rank = {k: i for i, k in enumerate(order)}
    return dict(sorted(config.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def read_best(
    tracker: Tracker, job: str | None = None, run_id: str | None = None
) -> dict[str, Any]:
    """The best configuration of a job (its latest run with one) or of a parent run id."""
    from autopipe.errors import TrackingError

    if run_id:
        text = tracker.read_text(run_id, M.ARTIFACT_BEST)
        if text is None and not tracker.run_exists(run_id):
            raise TrackingError(
                f"--run-id {run_id}: no such run in the tracking store at {tracker.uri}"
            )
        if text is None:
            raise TrackingError(
                f"--run-id {run_id}: the run has no {M.ARTIFACT_BEST} (unfinished or not a job run)"
            )
        return yaml.safe_load(text)
    assert job is not None
    runs = tracker.find_job_runs(job)
    if not runs:
        raise TrackingError(
            f"--job {job!r}: no run of this job in the tracking store at {tracker.uri}"
        )
    for r in runs:
        text = tracker.read_text(r.info.run_id, M.ARTIFACT_BEST)
        if text is not None:
            doc = yaml.safe_load(text)
            doc.setdefault("parent_run_id", r.info.run_id)
            return doc
    raise TrackingError(f"--job {job!r}: no run of this job has finished a trial yet")


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
            + ", ".join(f"{k}={_short(v)}" for k, v in res.prior_top.items())
        )
    if res.best_config is not None:
        lines.append(f"best {M.OBJECTIVE} = {res.best_objective:.4f} (trial {res.best_trial_id})")
        lines.append(yaml.safe_dump({"config": res.best_config}, sort_keys=False).rstrip())
    else:
        lines.append("no trial finished at full fidelity with a score")
    return "\n".join(lines)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
