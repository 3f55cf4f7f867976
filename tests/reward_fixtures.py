"""Reward functions for tests of ``eval.rewards: [module:function]`` (importable by workers as
``tests.reward_fixtures``)."""

from __future__ import annotations

from typing import Any

CALLS: list[int] = []  # batch sizes seen by half_reward, in call order (in-process trials only)
NOT_A_FUNCTION = 3


def half_reward(completions: list[Any], answer: list[str], **_: Any) -> list[float]:
    """0.5 for every completion, whatever it says: the logged reward is 0.5 * weight."""
    assert len(completions) == len(answer)
    CALLS.append(len(completions))
    return [0.5] * len(completions)
