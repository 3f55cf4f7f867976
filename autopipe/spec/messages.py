"""pydantic validation errors turned into one line that names the field, the rule and the value
received (the best of a union's alternatives, the valid keys of a section, YAML's
number-as-text pitfalls).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)


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
    msg = f"{loc} {err['msg'][0].lower()}{err['msg'][1:]}, but got {short_value(inp)}"
    return msg + text_number_hint(inp)


_YAML_TEXT_NUMBER = re.compile(r"[-+]?\d+[eE][-+]?\d+")


def text_number_hint(v: Any) -> str:
    """PyYAML (YAML 1.1) reads ``1e-4`` as text, a float needs a dot in its mantissa: say so."""
    if not (isinstance(v, str) and _YAML_TEXT_NUMBER.fullmatch(v.strip())):
        return ""
    mant, exp = re.split("[eE]", v.strip(), maxsplit=1)
    return f" (YAML reads {v!r} as text; write {mant}.0e{exp})"


def short_value(v: Any) -> str:
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
            f"{{choices}}, but got {short_value(inp)}"
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
    """The one line of a job spec's validation error."""
    from autopipe.spec.schema import JobSpec

    errors = exc.errors(include_url=False)
    msg = _union_message(errors)
    if msg is not None:
        return msg
    err = _pick_error(errors)
    msg = _format_error(err)
    if err["type"] == "extra_forbidden":
        msg += _valid_keys_hint(JobSpec, tuple(x for x in err["loc"] if not _is_union_tag(x)))
    return msg
