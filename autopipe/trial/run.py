"""One trial of the post-training pipeline: SFT, then GRPO or DPO, then exact-match evaluation
on the held-out split, reporting as it goes, stopping early with a resumable checkpoint and
resuming from one.

Ray-free: progress goes to a ``Reporter`` callable, so the same code runs inside a Ray Train
worker (:mod:`autopipe.trial.worker`) or directly (benchmarks, tests). It never imports
BoTorch, XGBoost or MLflow.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from typing import Any

from autopipe import metrics as M
from autopipe.errors import TrialError
from autopipe.trial.evaluation import evaluate
from autopipe.trial.faults import FAULT_ENV, injected_fault
from autopipe.trial.memory import release_memory
from autopipe.trial.progress import Progress
from autopipe.trial.rl import run_dpo, run_grpo
from autopipe.trial.settings import (
    Reporter,
    TrialOutcome,
    TrialSettings,
    early_stop_step,
    plan_steps,
)
from autopipe.trial.sft import run_sft
from autopipe.trial.tasks import TaskData
from autopipe.trial.training import dist_info, save_model, torch_threads, use_cuda


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

    from autopipe.trial.models import build_model

    t0 = time.time()
    rank, world = dist_info()
    owns_dir = work_dir is None
    work = work_dir or tempfile.mkdtemp(prefix="autopipe-trial-")
    sft_steps, rl_steps = plan_steps(cfg, len(data.train), world)
    progress = Progress(report, sft_steps + rl_steps, t0, world)
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
        with torch_threads(settings.threads):
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
            sft_dir = save_model(model, tokenizer, os.path.join(work, "sft_model"))
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
            final_dir = save_model(model, tokenizer, os.path.join(work, "final_model"))
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
