"""A fitted prior's or predictor's folder: its XGBoost booster files, written in one layout, and
the JSON sidecar that describes them, read with one-line errors naming the file. Nothing is
pickled."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autopipe.errors import DataError


def read_sidecar(root: str | Path, name: str, fmt: str, what: str) -> dict[str, Any]:
    """The sidecar ``root/name`` as a dict; its ``format`` must be ``fmt``."""
    file = Path(root) / name
    if not file.is_file():
        raise DataError(f"{file}: {what} sidecar is missing")
    try:
        d = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{file}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(d, dict) or d.get("format") != fmt:
        got = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise DataError(f"{file}: format must be {fmt!r}, but got {got!r}")
    return d


def save_boosters(root: str | Path, boosters: Sequence[Any]) -> list[str]:
    """Create the folder ``root`` and write each XGBoost booster (anything with ``save_model``)
    as ``root/model_<k>.ubj`` (the names saved folders have always had); returns the file names in
    order, for the sidecar's ``models``."""
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"model_{k}.ubj" for k in range(len(boosters))]
    for m, name in zip(boosters, names, strict=True):
        m.save_model(str(folder / name))
    return names
