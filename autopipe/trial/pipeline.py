"""One trial of the post-training pipeline: TRL ``SFTTrainer``, then ``GRPOTrainer`` or
``DPOTrainer``, then exact-match evaluation on the held-out split.

This module is Ray-free: progress goes to a ``Reporter`` callable, so the same code runs inside a
Ray Train worker (``autopipe.trial.worker``) or directly (benchmarks, tests). It never imports
BoTorch, XGBoost or MLflow.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autopipe import metrics as M
from autopipe.errors import TrialError
from autopipe.tasks import (
    TaskData,
    is_correct,
    make_reward_funcs,
    wrong_answer,
)

# metrics: dict of metric name -> value; checkpoint: a local directory to persist, or None
Reporter = Callable[[dict[str, Any], "str | None"], None]

log = logging.getLogger(__name__)

# TRL log keys -> our metric names (producer side of autopipe.metrics)
_LOG_KEYS = {
    "loss": M.TRAIN_LOSS,
    "eval_loss": M.EVAL_LOSS,
    "grad_norm": M.GRAD_NORM,
    "learning_rate": M.LEARNING_RATE,
    "entropy": M.ENTROPY,
    "reward": M.REWARD_MEAN,
    "reward_std": M.REWARD_STD,
    "kl": M.KL,
    "completions/mean_length": M.COMPLETION_LENGTH,
    "rewards/margins": M.REWARD_MEAN,  # DPO: reward margin chosen - rejected
}


# Fault injection for reliability tests and chaos drills: "KIND:PARAM=VALUE[;...]" makes trials
# whose configuration has PARAM == VALUE fail. KIND "raise" raises an exception in the worker
# (the trial errors), "nan" turns the reported train loss non-finite (the trial is failed by the
# divergence check), "crash" kills the worker process after its first RL report unless the
# trial was resumed from a checkpoint (a worker lost mid-trial, retried from its SFT checkpoint).
FAULT_ENV = "AUTOPIPE_FAULT"


def injected_fault(cfg: dict[str, Any], spec: str | None = None) -> str | None:
    spec = os.environ.get(FAULT_ENV, "") if spec is None else spec
    for item in filter(None, (x.strip() for x in spec.split(";"))):
        kind, _, cond = item.partition(":")
        key, _, value = cond.partition("=")
        if key in cfg and str(cfg[key]) == value and kind in ("raise", "nan", "crash"):
            return kind
    return None


@dataclass
class TrialSettings:
    """Everything a trial needs besides its configuration (from the job spec)."""

    model_name: str = "tiny-llama"
    model_path: str | None = None
    max_length: int = 64
    max_completion_length: int = 16
    dtype: str = "float32"
    eval_samples: int = 4
    eval_temperature: float = 0.8
    reward_format_weight: float = 0.1
    rewards: list[tuple[str, float]] | None = None  # (name, weight) of autopipe.rewards
    deepspeed: int | None = None
    # "cuda": the trial was given GPUs; "cpu": it was not (a CPU trial on a GPU machine must not
    # put tensors on a GPU its gloo process group cannot reduce); "auto": CUDA when present
    device: str = "auto"
    threads: int | None = None
    seed: int = 0
    reports_per_stage: int = 10
    eval_loss_examples: int = 64
    early_stop_fraction: float = 1.0  # stop after this fraction of the full trial (1.0 = never)


@dataclass
class TrialOutcome:
    status: str  # metrics.STATUS_*
    objective: float
    metrics: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None


def use_cuda(settings: TrialSettings) -> bool:
    """Whether this trial trains on CUDA (see ``TrialSettings.device``)."""
    import torch

    if settings.device == "cpu":
        return False
    available = torch.cuda.is_available()
    if settings.device == "cuda" and not available:
        raise TrialError(
            "the trial was given GPUs (resources.gpus_per_worker > 0) but its worker sees no "
            "CUDA device"
        )
    return available


def _sft_steps(cfg: dict[str, Any], n_train: int, world: int) -> int:
    if "sft.steps" in cfg:
        return int(cfg["sft.steps"])
    per_step = max(1, int(cfg["sft.batch_size"]) * world)
    return max(1, math.ceil(float(cfg["sft.epochs"]) * n_train / per_step))


def plan_steps(cfg: dict[str, Any], n_train: int, world: int = 1) -> tuple[int, int]:
    """``(sft_steps, rl_steps)`` of a full trial."""
    rl = int(cfg.get("rl.steps", 0)) if cfg.get("rl.algorithm") else 0
    return _sft_steps(cfg, n_train, world), rl


class _Progress:
    """Shared by the trainer callbacks: turns TRL logs into reports with fractions."""

    def __init__(
        self, report: Reporter, total_steps: int, t0: float, world: int, cuda: bool = False
    ) -> None:
        self.report = report
        self.cuda = cuda
        self.total = max(1, total_steps)
        self.t0 = t0
        self.world = world
        self.offset = 0
        self.stage = "sft"
        self.last: dict[str, float] = {}
        self.objective = float("nan")
        self.fault: str | None = None
        self.stage_s: dict[str, float] = {}

    def base(self, step: int) -> dict[str, Any]:
        g = self.offset + step
        return {
            M.STAGE: self.stage,
            M.GLOBAL_STEP: g,
            M.FRACTION: min(1.0, g / self.total),
            M.ELAPSED_S: time.time() - self.t0,
            M.COST_S: (time.time() - self.t0) * self.world,
            M.OBJECTIVE: self.objective,
        }

    def resources(self) -> dict[str, float]:
        """Stage wall times so far and, on a GPU, the peak memory allocated since the start."""
        import torch

        out = dict(self.stage_s)
        if self.cuda:
            out[M.GPU_MEM_PEAK_MB] = torch.cuda.max_memory_allocated() / 2**20
        return out

    def on_log(self, logs: dict[str, Any], step: int) -> None:
        out = self.base(step)
        for k, v in logs.items():
            name = _LOG_KEYS.get(k)
            if name is None or not isinstance(v, (int, float)):
                continue
            out[name] = float(v)
        if self.fault == "nan" and M.TRAIN_LOSS in out:
            out[M.TRAIN_LOSS] = float("nan")
        if M.TRAIN_LOSS in out and not math.isfinite(out[M.TRAIN_LOSS]):
            raise TrialError(
                f"non-finite train loss ({out[M.TRAIN_LOSS]}) at step {out[M.GLOBAL_STEP]}"
            )
        self.last.update({k: v for k, v in out.items() if isinstance(v, float)})
        self.report(out, None)
        if self.fault == "crash" and self.stage == "rl":
            os._exit(17)  # injected: the worker process dies mid-RL without any cleanup


def _callback(progress: _Progress) -> Any:
    from transformers import TrainerCallback

    class ReportCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            if logs and ("loss" in logs or "eval_loss" in logs or "reward" in logs):
                progress.on_log(logs, state.global_step)

    return ReportCallback()


def _train(trainer: Any) -> Any:  # RL trainers
    """Train without the console printer (reports go through the Reporter) and unwrap."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return trained_model(trainer)


def _timed_rl(progress: _Progress, trainer: Any) -> Any:
    t = time.time()
    model = _train(trainer)
    progress.stage_s[M.RL_S] = time.time() - t
    return model


def _is_zero3(model: Any) -> bool:
    return any(hasattr(p, "ds_id") for p in model.parameters())


def trained_model(trainer: Any) -> Any:
    """The trainer's model as a plain module with every weight in place.

    Under DeepSpeed ZeRO-3 the unwrapped model's parameters are partitioned (each holds an
    empty tensor; DeepSpeed's hooks gather them per forward), so saving or evaluating it would
    see no weights. Every rank gathers the full weights and copies them into a fresh model on
    the same device, outside ZeRO-3's construction hook, and the DeepSpeed engine is let go.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not _is_zero3(model):
        return model
    import deepspeed
    from transformers import AutoModelForCausalLM
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    device = trainer.args.device
    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    config = model.config
    unset_hf_deepspeed_config()  # else from_config would partition the fresh model again
    trainer.accelerator.free_memory()
    fresh = AutoModelForCausalLM.from_config(config, dtype=next(iter(state.values())).dtype)
    fresh.load_state_dict(state, strict=True)
    fresh.tie_weights()
    if getattr(model, "generation_config", None) is not None:
        fresh.generation_config = model.generation_config
    return fresh.to(device)


def _common_args(
    settings: TrialSettings, out_dir: str, steps: int, lr: float, batch: int, seed: int
) -> dict[str, Any]:
    cuda = use_cuda(settings)
    every = max(1, steps // max(1, settings.reports_per_stage))
    args: dict[str, Any] = dict(
        output_dir=out_dir,
        max_steps=steps,
        learning_rate=lr,
        per_device_train_batch_size=batch,
        logging_steps=every,
        save_strategy="no",
        report_to=[],
        bf16=settings.dtype == "bfloat16" and cuda,
        fp16=False,
        gradient_checkpointing=False,
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not cuda,
        ddp_find_unused_parameters=False,
    )
    if settings.deepspeed:
        args["deepspeed"] = deepspeed_config(settings.deepspeed)
    else:
        # accelerate leaves this set after a DeepSpeed trainer; a later trial in the same
        # process would silently run under DeepSpeed too
        os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
    return args


def deepspeed_config(stage: int) -> dict[str, Any]:
    """A ZeRO config whose sizes the HF integration fills in ("auto")."""
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": {"stage": stage, "overlap_comm": True, "contiguous_gradients": True},
        "bf16": {"enabled": "auto"},
    }
    if stage == 3:
        cfg["zero_optimization"].update(
            {
                "stage3_gather_16bit_weights_on_model_save": True,
                "reduce_bucket_size": "auto",
                # HF fills these from the model's hidden size (10 h and 0.9 h^2): only norms and
                # biases stay whole on every rank, the weight matrices are partitioned
                "stage3_param_persistence_threshold": "auto",
                "stage3_prefetch_bucket_size": "auto",
            }
        )
    return cfg


def _dist() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def _threads(n: int | None):  # type: ignore[no-untyped-def]
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def evaluate(
    model: Any, tokenizer: Any, data: TaskData, settings: TrialSettings, seed: int
) -> dict[str, float]:
    """Exact match on the held-out split: sampled (the objective), greedy and pass@k.

    With several workers each rank scores its shard and the counts are summed.
    """
    import torch

    rank, world = _dist()
    examples = data.eval[rank::world]
    device = next(model.parameters()).device
    model.eval()
    k = settings.eval_samples
    n_ok_sampled = n_ok_greedy = n_pass = 0
    gen = torch.Generator(device="cpu").manual_seed(seed)
    batch = 64
    with torch.no_grad():
        for i in range(0, len(examples), batch):
            chunk = examples[i : i + batch]
            enc = tokenizer([e.prompt for e in chunk], return_tensors="pt", padding=True)
            enc = {
                key: v.to(device)
                for key, v in enc.items()
                if key in ("input_ids", "attention_mask")
            }
            plen = enc["input_ids"].shape[1]
            common = dict(
                max_new_tokens=settings.max_completion_length,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            greedy = model.generate(**enc, do_sample=False, **common)
            # Sampling draws from torch's default generator: fork it so evaluation is seeded
            # without touching the caller's random state.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                sampled = model.generate(
                    **enc,
                    do_sample=True,
                    temperature=max(settings.eval_temperature, 1e-3),
                    top_k=0,
                    top_p=1.0,
                    num_return_sequences=k,
                    **common,
                )
            g_text = tokenizer.batch_decode(greedy[:, plen:], skip_special_tokens=True)
            s_text = tokenizer.batch_decode(sampled[:, plen:], skip_special_tokens=True)
            for j, ex in enumerate(chunk):
                n_ok_greedy += is_correct(g_text[j], ex.answer, data.answer_kind, data.choices)
                oks = [
                    is_correct(s_text[j * k + r], ex.answer, data.answer_kind, data.choices)
                    for r in range(k)
                ]
                n_ok_sampled += sum(oks)
                n_pass += any(oks)
    counts = torch.tensor([n_ok_sampled, n_ok_greedy, n_pass, len(examples)], dtype=torch.float64)
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(counts)
    n = max(1.0, float(counts[3]))
    model.train()
    return {
        M.ACCURACY: float(counts[0]) / (n * k),
        M.ACCURACY_GREEDY: float(counts[1]) / n,
        M.PASS_AT_K: float(counts[2]) / n,
    }


def _sft_dataset(data: TaskData) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": e.prompt, "completion": e.answer} for e in data.train])


def _eval_loss_dataset(data: TaskData, n: int) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": e.prompt, "completion": e.answer} for e in data.eval[:n]])


def run_sft(
    model: Any,
    tokenizer: Any,
    data: TaskData,
    cfg: dict[str, Any],
    settings: TrialSettings,
    progress: _Progress,
    steps: int,
    work_dir: str,
    stop_step: int | None = None,
    resume_from: str | None = None,
) -> tuple[Any, str | None]:
    """SFT with TRL over ``steps`` steps (the learning-rate schedule always spans all of them).

    With ``stop_step`` < ``steps`` training stops there after saving a resumable Trainer
    checkpoint (weights, optimizer, scheduler, RNG), returned as the second element; with
    ``resume_from`` such a checkpoint is continued, not recomputed. Returns the trained model
    (merged, if LoRA) and the checkpoint directory or ``None``.
    """
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    lora_rank = int(cfg.get("sft.lora_rank", 0) or 0)
    peft_config = None
    if lora_rank > 0:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=lora_rank,
            lora_alpha=2 * lora_rank,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    out_dir = os.path.join(work_dir, "sft")
    args = _common_args(
        settings, out_dir, steps, float(cfg["sft.lr"]), int(cfg["sft.batch_size"]), settings.seed
    )
    every = args["logging_steps"]
    args.update(
        # a float < 1 is a ratio of the total steps in transformers 5
        warmup_steps=min(float(cfg.get("sft.warmup_ratio", 0.0)), 0.999),
        weight_decay=float(cfg.get("sft.weight_decay", 0.0)),
        lr_scheduler_type="cosine",
        max_length=settings.max_length,
        completion_only_loss=True,
        packing=False,
        eval_strategy="steps",
        eval_steps=every * 2,
        per_device_eval_batch_size=64,
        dataset_num_proc=None,
    )
    callbacks = [_callback(progress)]
    if stop_step is not None and stop_step < steps:

        class StopAt(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
                if state.global_step >= stop_step:
                    control.should_save = True
                    control.should_training_stop = True

        callbacks.append(StopAt())
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**args),
        train_dataset=_sft_dataset(data),
        eval_dataset=_eval_loss_dataset(data, settings.eval_loss_examples),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    t = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    progress.stage_s[M.SFT_S] = time.time() - t
    checkpoint = None
    if trainer.state.global_step < steps:
        checkpoint = os.path.join(out_dir, f"checkpoint-{trainer.state.global_step}")
        if not os.path.isdir(checkpoint):
            raise TrialError(
                f"SFT stopped at step {trainer.state.global_step} without a checkpoint"
            )
    model = trained_model(trainer)
    if lora_rank > 0:
        model = model.merge_and_unload()
    del trainer
    return model, checkpoint


def run_grpo(
    model_dir: str,
    tokenizer: Any,
    data: TaskData,
    cfg: dict[str, Any],
    settings: TrialSettings,
    progress: _Progress,
    steps: int,
    work_dir: str,
) -> Any:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    g = int(cfg.get("rl.num_generations", 8))
    batch = int(cfg.get("rl.batch_size", 32))
    batch = max(g, (batch // g) * g)  # completions per step: a multiple of the group size
    args = _common_args(
        settings, os.path.join(work_dir, "rl"), steps, float(cfg["rl.lr"]), batch, settings.seed
    )
    args.update(
        num_generations=g,
        beta=float(cfg.get("rl.beta", 0.0)),
        temperature=float(cfg.get("rl.temperature", 1.0)),
        top_k=0,
        max_completion_length=settings.max_completion_length,
        scale_rewards="batch",
        lr_scheduler_type="constant",
        warmup_steps=0,
        remove_unused_columns=False,
        shuffle_dataset=True,
    )
    if settings.rewards is not None:  # named in the spec (eval.rewards)
        from autopipe.rewards import build

        funcs, args["reward_weights"] = build(settings.rewards, data.answer_kind, data.choices)
    else:
        funcs = make_reward_funcs(data.answer_kind, data.choices, settings.reward_format_weight)
        if len(funcs) > 1:
            args["reward_weights"] = [1.0, 1.0]
    ds = Dataset.from_list([{"prompt": e.prompt, "answer": e.answer} for e in data.rl])
    trainer = GRPOTrainer(
        model=model_dir,
        reward_funcs=funcs,
        args=GRPOConfig(**args),
        train_dataset=ds,
        processing_class=tokenizer,
        callbacks=[_callback(progress)],
    )
    model = _timed_rl(progress, trainer)
    del trainer
    return model


def run_dpo(
    model_dir: str,
    tokenizer: Any,
    data: TaskData,
    cfg: dict[str, Any],
    settings: TrialSettings,
    progress: _Progress,
    steps: int,
    work_dir: str,
) -> Any:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    rng = random.Random(settings.seed)
    rows = [
        {
            "prompt": e.prompt,
            "chosen": e.answer,
            "rejected": wrong_answer(e, data.answer_kind, data.choices, rng),
        }
        for e in data.rl
    ]
    args = _common_args(
        settings,
        os.path.join(work_dir, "rl"),
        steps,
        float(cfg["rl.lr"]),
        int(cfg.get("rl.batch_size", 32)),
        settings.seed,
    )
    args.update(
        beta=max(float(cfg.get("rl.beta", 0.1)), 1e-3),
        max_length=settings.max_length,
        lr_scheduler_type="constant",
    )
    trainer = DPOTrainer(
        model=model_dir,
        args=DPOConfig(**args),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[_callback(progress)],
    )
    model = _timed_rl(progress, trainer)
    del trainer
    return model


def _save(model: Any, tokenizer: Any, path: str) -> str:
    """Every rank saves its own copy into its own work dir: after DDP the weights are identical,
    and workers on other nodes cannot read rank 0's disk. Only rank 0's copy is reported.

    ``save_pretrained`` writes on rank 0 only when torch.distributed is up (transformers 5), so
    the other ranks lift that check for this call: every rank then writes the same files, with
    the same tensor names (a ZeRO-3 load reads the names on every rank and the values on rank 0
    only; different names on two ranks desynchronise its collectives).
    """
    rank, _ = _dist()
    if rank != 0:
        model.should_save_on_this_rank = lambda is_main_process: True
    try:
        model.save_pretrained(path, safe_serialization=True)
    finally:
        if rank != 0:
            del model.should_save_on_this_rank
    tokenizer.save_pretrained(path)
    _barrier()
    return path


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def release_memory() -> None:
    """Free model and optimizer memory between trials in one process: collect the reference
    cycles trainers leave (callbacks, accelerate state), return freed heap pages to the OS
    (glibc), and on CUDA empty the allocator's cache and log what stays allocated."""
    gc.collect()
    _malloc_trim()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        log.info(
            "CUDA memory after release: %d bytes allocated, %d reserved",
            torch.cuda.memory_allocated(),
            torch.cuda.memory_reserved(),
        )


def _malloc_trim() -> None:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not name.startswith("libc.so"):  # glibc only (not musl, not macOS)
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        return


def early_stop_step(
    sft_steps: int, rl_steps: int, fraction: float, at_boundary: bool = False
) -> int | None:
    """The SFT step at which a trial stops early, or ``None`` to run to the end.

    AutoPipe stops inside SFT; an early point at or beyond the end of SFT stops at the SFT/RL
    boundary (step ``sft_steps``), where the SFT model is the resumption point. ``at_boundary``
    moves any early point there (checkpoints inside SFT that cannot be resumed).
    """
    if fraction >= 1.0:
        return None
    if at_boundary:
        return sft_steps
    step = max(1, math.ceil(fraction * (sft_steps + rl_steps)))
    return min(step, sft_steps)


def _is_trainer_checkpoint(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "trainer_state.json"))


def run_trial(
    cfg: dict[str, Any],
    data: TaskData,
    settings: TrialSettings,
    report: Reporter,
    work_dir: str | None = None,
    resume_from: str | None = None,
) -> TrialOutcome:
    """Run SFT -> RL -> evaluation for one configuration and report as it goes.

    ``settings.early_stop_fraction`` < 1 stops the trial at that fraction of its steps (inside
    SFT, or at the SFT/RL boundary) with a resumable checkpoint in its last report, flagged
    ``early_stopped``. ``resume_from`` (such a checkpoint) continues a stopped trial to full
    fidelity without recomputing its prefix. Known failures (non-finite loss, out of memory) end
    the trial with status ``failed`` and a final report carrying ``failed=1`` and the reason;
    other exceptions propagate.
    """
    import torch

    from autopipe.models import build_model

    t0 = time.time()
    rank, world = _dist()
    owns_dir = work_dir is None
    work = work_dir or tempfile.mkdtemp(prefix="autopipe-trial-")
    sft_steps, rl_steps = plan_steps(cfg, len(data.train), world)
    progress = _Progress(report, sft_steps + rl_steps, t0, world)
    algo = cfg.get("rl.algorithm")
    # Inside SFT a DeepSpeed checkpoint is one ZeRO shard per rank, and only rank 0's reaches
    # the trial's checkpoint: with several workers the early point moves to the SFT/RL boundary,
    # where the checkpoint is the whole SFT model.
    stop_step = (
        None
        if resume_from
        else early_stop_step(
            sft_steps,
            rl_steps,
            settings.early_stop_fraction,
            at_boundary=bool(settings.deepspeed) and world > 1,
        )
    )
    progress.fault = injected_fault(cfg)
    if progress.fault == "crash" and resume_from is not None:
        progress.fault = None  # the retry of a crashed trial runs clean
    if progress.fault == "raise":
        raise RuntimeError(f"injected fault ({FAULT_ENV}) for this configuration")
    try:
        progress.cuda = cuda = use_cuda(settings)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        with _threads(settings.threads):
            model, tokenizer = build_model(
                settings.model_name,
                settings.model_path,
                data.alphabet(),
                settings.max_length + settings.max_completion_length,
                settings.seed,
                settings.dtype,
            )
            # ---------------------------------------------------------------- SFT
            if resume_from and not _is_trainer_checkpoint(resume_from):
                # Stopped at the SFT/RL boundary: the checkpoint is the SFT model itself.
                from transformers import AutoModelForCausalLM

                del model
                model = AutoModelForCausalLM.from_pretrained(
                    resume_from, dtype=getattr(torch, settings.dtype)
                )
                if cuda:
                    model = model.to(f"cuda:{torch.cuda.current_device()}")
                sft_checkpoint = None
            else:
                if cuda:
                    model = model.to(f"cuda:{torch.cuda.current_device()}")
                model, sft_checkpoint = run_sft(
                    model,
                    tokenizer,
                    data,
                    cfg,
                    settings,
                    progress,
                    sft_steps,
                    work,
                    stop_step=stop_step,
                    resume_from=resume_from,
                )
            if sft_checkpoint is not None:  # stopped inside SFT: no evaluation, a resumable state
                out = progress.base(stop_step or 0)
                out.update({M.STAGE: "sft", M.EARLY_STOPPED: 1.0, M.OBJECTIVE: float("nan")})
                out.update(progress.resources())
                report(out, sft_checkpoint)
                return TrialOutcome(M.STATUS_EARLY_STOPPED, float("nan"), out)
            progress.offset = sft_steps
            ev = evaluate(model, tokenizer, data, settings, settings.seed)
            progress.objective = ev[M.ACCURACY]
            sft_dir = _save(model, tokenizer, os.path.join(work, "sft_model"))
            boundary = progress.base(0)
            boundary.update({M.STAGE: "sft", M.ACCURACY_AFTER_SFT: ev[M.ACCURACY], **ev})
            boundary.update(progress.resources())
            after_sft = ev[M.ACCURACY]
            if stop_step is not None and rl_steps > 0:  # the early point is the SFT/RL boundary
                boundary[M.EARLY_STOPPED] = 1.0
                report(boundary, sft_dir)
                return TrialOutcome(M.STATUS_EARLY_STOPPED, ev[M.ACCURACY], boundary)
            report(boundary, sft_dir)
            # ---------------------------------------------------------------- RL
            if algo and rl_steps > 0:
                progress.stage = "rl"
                del model
                release_memory()
                runner = run_grpo if algo == "grpo" else run_dpo
                model = runner(sft_dir, tokenizer, data, cfg, settings, progress, rl_steps, work)
                progress.offset = sft_steps + rl_steps
                ev = evaluate(model, tokenizer, data, settings, settings.seed + 1)
            # ---------------------------------------------------------------- final
            progress.stage = "done"
            progress.objective = ev[M.ACCURACY]
            final_dir = _save(model, tokenizer, os.path.join(work, "final_model"))
            out = progress.base(0)
            out[M.FRACTION] = 1.0
            out.update(ev)
            out[M.ACCURACY_AFTER_SFT] = after_sft
            out.update(progress.resources())
            report(out, final_dir)
            return TrialOutcome(M.STATUS_COMPLETED, ev[M.ACCURACY], out)
    except (TrialError, torch.OutOfMemoryError, MemoryError) as e:
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        out = progress.base(0)
        out.update({M.FAILED: 1.0, M.FAILURE_REASON: reason, M.OBJECTIVE: float("nan")})
        report(out, None)
        return TrialOutcome(M.STATUS_FAILED, float("nan"), out, failure=reason)
    finally:
        with contextlib.suppress(NameError):
            del model
        release_memory()
        if owns_dir:
            shutil.rmtree(work, ignore_errors=True)


def trial_dir_size(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
