"""The ``space`` section of a job spec turned into a :class:`~autopipe.space.Space`: searched
parameters, constants and the GRPO-only conditions. Values are checked against each
parameter's rule (one line naming the field).
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import (
    BaseModel,
)

from autopipe.errors import SpaceError
from autopipe.space import Condition, Param, Space
from autopipe.spec.messages import text_number_hint
from autopipe.spec.schema import (
    GRPO_ONLY,
    RL_ALGORITHMS,
    RL_PARAMS,
    SFT_PARAMS,
    Choice,
    Grid,
    Range,
    SpaceSpec,
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
            + text_number_hint(v)
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
