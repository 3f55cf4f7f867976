"""Trainer plumbing shared by the SFT and RL stages: the device, the TRL arguments every stage
sets, the DeepSpeed ZeRO config, the distributed rank and barrier, torch threads, and the
trained model unwrapped (ZeRO-3 gathered) and saved.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from autopipe import metrics as M
from autopipe.errors import TrialError
from autopipe.trial.progress import Progress
from autopipe.trial.settings import TrialSettings


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


def common_args(
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


def dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextlib.contextmanager
def torch_threads(n: int | None):  # type: ignore[no-untyped-def]
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train_quietly(trainer: Any) -> Any:  # RL trainers
    """Train without the console printer (reports go through the Reporter) and unwrap."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return trained_model(trainer)


def timed_rl(progress: Progress, trainer: Any) -> Any:
    t = time.time()
    model = train_quietly(trainer)
    progress.stage_s[M.RL_S] = time.time() - t
    return model


def save_model(model: Any, tokenizer: Any, path: str) -> str:
    """Every rank saves its own copy into its own work dir: after DDP the weights are identical,
    and workers on other nodes cannot read rank 0's disk. Only rank 0's copy is reported.

    ``save_pretrained`` writes on rank 0 only when torch.distributed is up (transformers 5), so
    the other ranks lift that check for this call: every rank then writes the same files, with
    the same tensor names (a ZeRO-3 load reads the names on every rank and the values on rank 0
    only; different names on two ranks desynchronise its collectives).
    """
    rank, _ = dist_info()
    if rank != 0:
        model.should_save_on_this_rank = lambda is_main_process: True
    try:
        model.save_pretrained(path, safe_serialization=True)
    finally:
        if rank != 0:
            del model.should_save_on_this_rank
    tokenizer.save_pretrained(path)
    barrier()
    return path


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
