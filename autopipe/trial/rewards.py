"""GRPO reward functions by name: a small registry of built-ins (``exact_match``, ``format``) and
explicit ``module:function`` references that the job spec's author wrote. Nothing else is looked
up: no entry points, no ``eval``, no search of installed packages.

A ``module:function`` reward is called by TRL as ``f(prompts=..., completions=..., answer=...,
**columns)`` and returns one float per completion (``autopipe.trial.tasks.completion_text`` turns a
completion into text). This module resolves and checks names; it does not train anything.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from typing import Any

from autopipe.errors import SpecError
from autopipe.trial.tasks import completion_text, format_ok, is_correct

RewardFunc = Callable[..., list[float]]


def _exact_match(kind: str, choices: Sequence[str] | None) -> RewardFunc:
    def exact_match(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
        return [
            1.0 if is_correct(completion_text(c), a, kind, choices) else 0.0
            for c, a in zip(completions, answer, strict=True)
        ]

    return exact_match


def _format(kind: str, choices: Sequence[str] | None) -> RewardFunc:
    def answer_format(completions: list[Any], **_: Any) -> list[float]:
        return [1.0 if format_ok(completion_text(c), kind, choices) else 0.0 for c in completions]

    return answer_format


# Built-in rewards: name -> factory(answer kind, choices) -> reward function (0 or 1 per
# completion; the spec's weight scales it).
BUILTIN: dict[str, Callable[[str, Sequence[str] | None], RewardFunc]] = {
    "exact_match": _exact_match,
    "format": _format,
}
_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$", re.ASCII)


def _describe() -> str:
    return f"a built-in reward {sorted(BUILTIN)} or 'module:function'"


def load(name: str, where: str = "eval.rewards") -> RewardFunc | None:
    """The function of ``name`` if it is ``module:function`` (imported now), ``None`` for a
    built-in; any other name, or one that cannot be imported or called, is a SpecError."""
    if name in BUILTIN:
        return None
    if not _REF.match(name):
        raise SpecError(f"{where} must be {_describe()}, but got {name!r}")
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # the user's module: any import-time failure is theirs to see
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise SpecError(
            f"{where}: cannot import module {module_name!r} of reward {name!r} "
            f"({type(e).__name__}: {first})"
        ) from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise SpecError(f"{where}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise SpecError(f"{where}: {name!r} must be a function, but got {type(fn).__name__}")
    return fn


def build(
    rewards: Sequence[tuple[str, float]], kind: str, choices: Sequence[str] | None
) -> tuple[list[RewardFunc], list[float]]:
    """Reward functions and their weights for GRPO, in the spec's order."""
    funcs: list[RewardFunc] = []
    weights: list[float] = []
    for i, (name, weight) in enumerate(rewards):
        fn = load(name, f"eval.rewards[{i}]")
        funcs.append(BUILTIN[name](kind, choices) if fn is None else fn)
        weights.append(float(weight))
    return funcs, weights
