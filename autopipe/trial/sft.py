"""The SFT stage: TRL ``SFTTrainer`` (full fine-tuning or LoRA, merged), with a resumable
checkpoint when the trial stops early inside SFT.
"""

from __future__ import annotations

import os
import time
from typing import Any

from autopipe import metrics as M
from autopipe.errors import TrialError
from autopipe.trial import training
from autopipe.trial.progress import Progress, report_callback
from autopipe.trial.settings import TrialSettings
from autopipe.trial.tasks import TaskData
from autopipe.trial.training import common_args


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
    progress: Progress,
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
    args = common_args(
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
    callbacks = [report_callback(progress)]
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
    model = training.trained_model(trainer)  # looked up at call time: tests wrap it
    if lora_rank > 0:
        model = model.merge_and_unload()
    del trainer
    return model, checkpoint
