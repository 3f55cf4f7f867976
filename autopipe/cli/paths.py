"""Checks of the CLI's output paths, run before any work so that a path that cannot be written is
a one-line error naming its flag, not a traceback after minutes of fitting."""

from __future__ import annotations

import os
from pathlib import Path

from autopipe.errors import DataError


def _writable_parent(path: Path, flag: str) -> None:
    """The first existing ancestor of ``path`` must be a writable folder."""
    for anc in path.absolute().parents:
        if anc.exists():
            if not anc.is_dir():
                raise DataError(f"{flag} {path}: {anc} is a file, expected a folder there")
            if not os.access(anc, os.W_OK | os.X_OK):
                raise DataError(f"{flag} {path}: {anc} is not writable")
            return


def check_out_file(path: str | os.PathLike[str] | None, flag: str) -> None:
    """``path`` (if given) can be written as a file: it is not a folder and its folder exists or
    can be created."""
    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{flag} {p} is a folder, expected a file path")
    _writable_parent(p, flag)


def check_out_dir(
    path: str | os.PathLike[str], flag: str, *, empty: bool = False, force: bool = False
) -> None:
    """``path`` can be used as an output folder: it is not a file and it, or its first existing
    ancestor, is writable. With ``empty``, an existing folder must be empty unless ``force``."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise DataError(f"{flag} {p} is a file, expected a folder")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise DataError(f"{flag} {p} is not writable")
        if empty and not force and any(p.iterdir()):
            raise DataError(
                f"{flag} {p} is not empty; expected a new or empty folder (--force replaces "
                "the run table files in it)"
            )
        return
    _writable_parent(p, flag)


def load_prior(path: str | os.PathLike[str], flag: str = "--prior") -> object:
    """A saved ranking prior named by a CLI flag; a problem with it is one line naming the flag."""
    from autopipe.prior.ranker import RankingPrior

    p = Path(path)
    if not p.is_dir():
        raise DataError(
            f"{flag} {p}: no such folder; expected one written by `autopipe prior fit --out DIR`"
        )
    try:
        return RankingPrior.load(p)
    except DataError as e:
        raise DataError(f"{flag} {p}: {e}") from None
