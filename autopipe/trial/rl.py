"""The RL stage from the SFT model: TRL ``GRPOTrainer`` with the task's rewards, or
``DPOTrainer`` on (correct, wrong) answer pairs.
"""

from __future__ import annotations

import os
import random
from typing import Any

from autopipe.trial.progress import Progress, report_callback
from autopipe.trial.settings import TrialSettings
from autopipe.trial.tasks import TaskData, make_reward_funcs, wrong_answer
from autopipe.trial.training import common_args, timed_rl


def run_grpo(
    model_dir: str,
    tokenizer: Any,
    data: TaskData,
    cfg: dict[str, Any],
    settings: TrialSettings,
    progress: Progress,
    steps: int,
    work_dir: str,
) -> Any:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    g = int(cfg.get("rl.num_generations", 8))
    batch = int(cfg.get("rl.batch_size", 32))
    batch = max(g, (batch // g) * g)  # completions per step: a multiple of the group size
    args = common_args(
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
        from autopipe.trial.rewards import build

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
        callbacks=[report_callback(progress)],
    )
    model = timed_rl(progress, trainer)
    del trainer
    return model


def run_dpo(
    model_dir: str,
    tokenizer: Any,
    data: TaskData,
    cfg: dict[str, Any],
    settings: TrialSettings,
    progress: Progress,
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
    args = common_args(
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
        callbacks=[report_callback(progress)],
    )
    model = timed_rl(progress, trainer)
    del trainer
    return model
