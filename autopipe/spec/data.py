"""The job's dataset checked as its trials will read it, before anything starts (``autopipe
validate`` and ``autopipe tune`` both run this): the records and their fields, the sizes of the
three splits against ``dataset.n_*``, an evaluation split big enough to score on
(``dataset.min_eval``), and examples that fit ``model.max_length`` /
``model.max_completion_length`` in the job's own tokenizer. Every problem is one
:class:`~autopipe.errors.SpecError` line naming the field; examples that do not fit while most
do are counted in a warning (the trainers truncate or drop them)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from autopipe.errors import DataError, SpecError
from autopipe.spec.schema import JobSpec

log = logging.getLogger(__name__)

# NOTE: below half of the examples fitting, a job trains on a sliver of what it was given (or,
# at none, every trial fails deep in its worker: "num_samples=0"); above it, the rest are
# counted in a warning.
MIN_FIT_SHARE = 0.5


@dataclass
class DatasetReport:
    """What the trials will get: split sizes, and how many examples fit the model's lengths."""

    name: str
    sizes: dict[str, int]  # "train" / "rl" / "eval" -> examples
    fits: dict[str, tuple[int, int]] = field(default_factory=dict)  # check -> (fit, of)
    warnings: list[str] = field(default_factory=list)

    def line(self) -> str:
        s = self.sizes
        return f"dataset {self.name}: {s['train']} SFT / {s['rl']} RL / {s['eval']} eval examples"


def check_dataset(spec: JobSpec, tokenizer: Any = None) -> DatasetReport:
    """Load the dataset as a trial does and check it; ``tokenizer`` (default: the job's model's,
    built without its weights) measures lengths."""
    from autopipe.trial.tasks import load_dataset

    ds = spec.dataset
    try:
        data = load_dataset(ds, spec.base_dir)
    except DataError as e:
        raise SpecError(str(e)) from None
    sizes = {"train": len(data.train), "rl": len(data.rl), "eval": len(data.eval)}
    report = DatasetReport(data.name, sizes)
    _check_sizes(spec, sizes)
    if tokenizer is None:
        from autopipe.trial.models import build_tokenizer

        model_path = str(spec.resolve(spec.model.path)) if spec.model.path else None
        try:
            tokenizer = build_tokenizer(spec.model.name, model_path, data.alphabet())
        except DataError as e:
            raise SpecError(str(e)) from None
        except (OSError, ValueError) as e:  # a model folder without a usable tokenizer
            raise SpecError(
                f"model: cannot load its tokenizer ({str(e).splitlines()[0]})"
            ) from None
    _check_lengths(spec, data, tokenizer, report)
    for w in report.warnings:
        log.warning("%s", w)
    return report


def _check_sizes(spec: JobSpec, sizes: dict[str, int]) -> None:
    ds = spec.dataset
    asked = {"train": ds.n_train, "rl": ds.n_rl, "eval": ds.n_eval}
    source = f"dataset.path {ds.path!r}" if ds.path else f"dataset.task {ds.task!r}"
    short = [k for k in ("train", "rl", "eval") if sizes[k] < asked[k]]
    if short:
        fields = ", ".join(f"dataset.n_{k} {asked[k]}" for k in short)
        got = ", ".join(f"{sizes[k]} {k}" for k in short)
        fifth = " (a file's evaluation split is at most a fifth of its records)"
        raise SpecError(
            f"{source} is smaller than asked: {fields}, but its splits hold {got} "
            f"(n_train + n_rl + n_eval = {sum(asked.values())} examples; lower dataset.n_* to "
            f"what the data holds){fifth if ds.path and 'eval' in short else ''}"
        )
    if sizes["eval"] < ds.min_eval:
        raise SpecError(
            f"the evaluation split of {source} has {sizes['eval']} prompts, fewer than "
            f"dataset.min_eval {ds.min_eval}: accuracy on so few prompts is mostly noise; raise "
            "dataset.n_eval, or lower dataset.min_eval explicitly to accept it"
        )


def _check_lengths(spec: JobSpec, data: Any, tokenizer: Any, report: DatasetReport) -> None:
    m = spec.model

    def n_tokens(texts: Sequence[str], special: bool) -> list[int]:
        ids = tokenizer(list(texts), add_special_tokens=special)["input_ids"]
        return [len(x) for x in ids]

    # SFT: prompt and answer together, plus the end-of-sequence token TRL appends
    prompts = n_tokens([e.prompt for e in data.train], True)
    answers = n_tokens([e.answer for e in data.train], False)
    sft = [p + a + 1 for p, a in zip(prompts, answers, strict=True)]
    _fit(report, "SFT examples (prompt + answer)", sft, m.max_length, "model.max_length")
    # generation (RL, evaluation): the answer must fit the tokens a completion may have
    gen = n_tokens([e.answer for e in data.eval], False)
    _fit(
        report,
        "evaluation answers",
        gen,
        m.max_completion_length,
        "model.max_completion_length",
    )


def _fit(report: DatasetReport, what: str, lengths: list[int], limit: int, key: str) -> None:
    if not lengths:
        return
    fit = sum(n <= limit for n in lengths)
    report.fits[key] = (fit, len(lengths))
    if fit == len(lengths):
        return
    need = sorted(lengths)[max(0, math.ceil(0.95 * len(lengths)) - 1)]
    if fit < MIN_FIT_SHARE * len(lengths):
        raise SpecError(
            f"{key} {limit} fits {fit} of {len(lengths)} {what} in the model's tokenizer; 95 % "
            f"of them need up to {need} tokens: set {key} to at least {need}"
        )
    report.warnings.append(
        f"{key} {limit} fits {fit} of {len(lengths)} {what}; the others are truncated "
        f"({key} {need} would fit 95 %)"
    )
