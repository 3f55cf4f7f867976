"""Names of everything a trial reports and the tracking layer records: the producer (trial
workers) and the consumers (scheduler, predictor, MLflow reader, history export) agree by import,
not by string literal. This module holds names only, no logic."""

from __future__ import annotations

# ---------------------------------------------------------------- reported by every trial report
STAGE = "stage"  # "sft" | "rl" | "eval" | "done"
GLOBAL_STEP = "global_step"  # optimizer steps done so far, SFT and RL together
FRACTION = "fraction"  # share of the trial's full fidelity done, in (0, 1]
ELAPSED_S = "elapsed_s"  # wall seconds since the trial started (its cost so far)
OBJECTIVE = "objective"  # the tuned metric: held-out exact-match accuracy; NaN until evaluated

# ---------------------------------------------------------------- curve signals (the early signals)
TRAIN_LOSS = "train_loss"
EVAL_LOSS = "eval_loss"
GRAD_NORM = "grad_norm"
LEARNING_RATE = "learning_rate"
ENTROPY = "entropy"  # mean token entropy of the model's next-token distribution
REWARD_MEAN = "reward_mean"
REWARD_STD = "reward_std"
KL = "kl"
COMPLETION_LENGTH = "completion_length"

CURVE_SIGNALS: tuple[str, ...] = (
    TRAIN_LOSS,
    EVAL_LOSS,
    GRAD_NORM,
    LEARNING_RATE,
    ENTROPY,
    REWARD_MEAN,
    REWARD_STD,
    KL,
    COMPLETION_LENGTH,
)

# ---------------------------------------------------------------- evaluation results
ACCURACY = "accuracy"  # sampled exact match (T=0.8, k samples per prompt): the objective
ACCURACY_GREEDY = "accuracy_greedy"
PASS_AT_K = "pass_at_k"
ACCURACY_AFTER_SFT = "accuracy_after_sft"  # sampled exact match right after SFT, before RL

EVAL_METRICS: tuple[str, ...] = (ACCURACY, ACCURACY_GREEDY, PASS_AT_K, ACCURACY_AFTER_SFT)

# ---------------------------------------------------------------- resources (rank 0's worker)
SFT_S = "sft_s"  # wall seconds inside the SFT trainer (this run's part, not a resumed prefix)
RL_S = "rl_s"  # wall seconds inside the RL trainer
GPU_MEM_PEAK_MB = "gpu_mem_peak_mb"  # peak CUDA memory allocated since the trial started (GPU only)

RESOURCE_METRICS: tuple[str, ...] = (SFT_S, RL_S, GPU_MEM_PEAK_MB)

# ---------------------------------------------------------------- trial outcome
COST_S = "cost_s"  # trial-seconds spent (wall seconds x workers)
FAILED = "failed"  # 1.0 in the last report of a trial that failed inside its worker
FAILURE_REASON = "failure_reason"  # str, set with FAILED

EARLY_STOPPED = "early_stopped"  # 1.0 in the report a trial makes when it stops at its early point
PROXY = "proxy"  # predicted final score of an early-stopped trial (recorded by the driver)
PROXY_VAR = "proxy_var"  # its variance (the GP's observation noise)
CHECKPOINT_PATH = (
    "checkpoint_path"  # added by Ray Tune's TuneReportCallback to a report with a checkpoint
)

STAGES = ("sft", "rl", "eval", "done")

# ---------------------------------------------------------------- MLflow conventions
# One experiment per job name; one parent run per job execution, one child run per trial.
TAG_ROLE = "autopipe.role"  # "job" on the parent run, "trial" on child runs
TAG_JOB = "autopipe.job"  # job name
TAG_DATASET = "autopipe.dataset"  # dataset id (built-in task name or file content hash)
TAG_META_PREFIX = "autopipe.meta."  # + meta-feature name -> value (as text)
TAG_STATUS = "autopipe.status"  # see TRIAL_STATUSES
TAG_FIDELITY = "autopipe.fidelity"  # fraction of the full trial reached
TAG_TRIAL_ID = "autopipe.trial_id"  # Ray Tune trial id
TAG_FAILURE = "autopipe.failure"  # failure reason of a failed trial
TAG_SEARCH = "autopipe.search"  # search algorithm of the job
TAG_PROMOTED_FROM = (
    "autopipe.promoted_from"  # on a promoted run: the early-stopped trial it resumed
)
TAG_COST_SAVED = "autopipe.cost_saved_s"  # on a promoted run: trial-seconds not recomputed
TAG_TUNE_PATH = "autopipe.tune_path"  # on the parent run: its Ray Tune experiment (--resume)
PARAM_PREFIX = ""  # child-run params are the configuration's own (dotted) names
ARTIFACT_SPACE = "space.json"  # on the parent run: Space.to_json() of the job's search space
ARTIFACT_SPEC = "job.yaml"  # on the parent run: the validated job spec
ARTIFACT_TRANSFER = "transfer.json"  # on the parent run: where the prior/predictor came from
ARTIFACT_BEST = "best_config.yaml"  # on the parent run: the job's best configuration
ARTIFACT_META = "meta_features.json"  # on the parent run: the dataset's meta-features

STATUS_COMPLETED = "completed"
STATUS_EARLY_STOPPED = "early-stopped"
STATUS_FAILED = "failed"
STATUS_KILLED = "killed"
STATUS_RUNNING = "running"
TRIAL_STATUSES = (STATUS_COMPLETED, STATUS_EARLY_STOPPED, STATUS_FAILED, STATUS_KILLED)

# ---------------------------------------------------------------- offline histories (run tables)
# A run's outcome in a history (the run-table format, ../shared/data/FORMAT.md). A job's trials
# map to it when a history is read from MLflow: completed -> ok, failed by a divergence rule
# (non-finite loss, KL growth, reward collapse) -> diverged, any other failure -> failed;
# early-stopped and killed trials are not runs of a history.
RUN_OK = "ok"
RUN_DIVERGED = "diverged"
RUN_FAILED = "failed"
RUN_STATUSES = (RUN_OK, RUN_DIVERGED, RUN_FAILED)
