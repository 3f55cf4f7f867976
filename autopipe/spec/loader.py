"""Reading a job spec: size-capped, UTF-8, YAML without aliases or duplicate keys, then the
schema; every problem is one :class:`~autopipe.errors.SpecError` line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from autopipe.errors import SpaceError, SpecError
from autopipe.spec.messages import short_value, validation_message
from autopipe.spec.schema import MAX_SPEC_BYTES, JobSpec


def parse_spec(data: Any, base_dir: Path | None = None) -> JobSpec:
    """Validate an already-parsed YAML document."""
    if not isinstance(data, dict):
        raise SpecError(
            f"the job spec must be a YAML mapping with a name and a dataset, but got {short_value(data)}"
        )
    for k in data:
        if not isinstance(k, str):
            raise SpecError(f"job spec keys must be strings, but got {k!r}")
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(validation_message(e)) from None
    object.__setattr__(spec, "_base_dir", base_dir or Path.cwd())
    try:
        spec.to_space()
    except SpaceError as e:
        raise SpecError(str(e)) from None
    return spec


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases (no 'billion laughs') and duplicate keys."""

    def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
        if self.check_event(yaml.AliasEvent):
            ev = self.peek_event()
            raise SpecError(
                f"the job spec must not use YAML aliases, but got *{ev.anchor} "
                f"(line {ev.start_mark.line + 1})"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                # YAML 1.1 reads yes/no/on/off/true and numbers as non-strings
                raise SpecError(
                    f"job spec keys must be strings, but got {key!r} "
                    f"(line {key_node.start_mark.line + 1}; quote it)"
                )
            if key in seen:
                raise SpecError(
                    f"the job spec has the key {key!r} twice (line {key_node.start_mark.line + 1})"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_spec(path: str | os.PathLike[str]) -> JobSpec:
    """Read and validate a job spec file; raises :class:`SpecError` with a one-line message."""
    p = Path(path)
    if not p.exists():
        raise SpecError(f"job spec file {str(p)!r} does not exist")
    if not p.is_file():
        what = "a directory" if p.is_dir() else "not a regular file"
        raise SpecError(f"job spec {str(p)!r} must be a file, but it is {what}")
    size = p.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            f"job spec {str(p)!r} must be at most {MAX_SPEC_BYTES} bytes, but is {size}"
        )
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(
            f"job spec {str(p)!r} must be UTF-8 text, but byte {e.start} is not"
        ) from None
    try:
        data = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"job spec {str(p)!r} is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise SpecError(f"job spec {str(p)!r} is nested too deeply") from None
    return parse_spec(data, base_dir=p.resolve().parent)
