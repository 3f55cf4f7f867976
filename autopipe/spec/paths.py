"""Checks of the files and folders a job spec names (dataset, model, histories, storage), as
the job's driver will read them. Reads and creates nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from autopipe.errors import SpecError
from autopipe.spec.schema import JobSpec

DATASET_SUFFIXES = {".jsonl": "jsonl", ".parquet": "parquet", ".json": "pubmedqa"}


def check_paths(spec: JobSpec, local: bool = True) -> None:
    """Check the local files and folders a spec names, as the job's driver will read them:
    ``dataset.path``, ``model.path``, ``history.run_tables`` / ``prior`` / ``predictor`` and a
    local ``storage``. Reads and creates nothing; raises :class:`SpecError` (one line), also for
    a path the OS cannot even look up (too long, no permission on a parent).

    ``local=False`` (a job driven on an existing cluster, ``--address``): ``model.path`` and
    ``storage`` are the worker nodes' business and may exist only there; they are not checked.

    Not part of :func:`parse_spec`: ``autopipe submit`` validates specs whose model and storage
    paths exist only on the cluster. ``autopipe validate`` and ``autopipe tune`` call it.
    """
    try:
        _check_paths(spec, local)
    except OSError as e:
        raise SpecError(
            f"a path the spec names cannot be looked up: {e.strerror or e} "
            f"({str(e.filename)[:120]!r})"
        ) from None


def _check_paths(spec: JobSpec, local: bool) -> None:
    ds = spec.dataset
    if ds.path is not None:
        # resolved as autopipe.trial.tasks.load_dataset does (``~``, ``$VARS``, relative to the spec's
        # folder)
        p = spec.resolve(ds.path)
        if not p.exists():
            raise SpecError(f"dataset.path {str(p)!r} does not exist")
        if p.is_dir():
            raise SpecError(
                f"dataset.path {str(p)!r} must be a file (JSONL, parquet or PubMedQA JSON), "
                "but it is a directory"
            )
        if ds.format is None and p.suffix.lower() not in DATASET_SUFFIXES:
            raise SpecError(
                f"dataset.format must be jsonl, parquet or pubmedqa (cannot tell from the suffix "
                f"{p.suffix.lower()!r} of dataset.path), but got none"
            )
    if spec.model.path and local:
        # resolved as the trial workers get it (tune.trainable.trial_settings -> build_model)
        p = spec.resolve(spec.model.path)
        if not p.exists():
            raise SpecError(f"model.path {str(p)!r} does not exist")
        if not p.is_dir():
            raise SpecError(
                f"model.path {str(p)!r} must be a Hugging Face model folder, but it is a file"
            )
    folders = [(f"history.run_tables[{i}]", rt) for i, rt in enumerate(spec.history.run_tables)]
    folders += [
        (f"history.{k}", v)
        for k, v in (("prior", spec.history.prior), ("predictor", spec.history.predictor))
        if v
    ]
    for where, raw in folders:
        p = spec.resolve(raw)
        if not p.exists():
            raise SpecError(f"{where} {str(p)!r} does not exist")
        if not p.is_dir():
            raise SpecError(f"{where} {str(p)!r} must be a folder, but it is a file")
        key = HISTORY_KEY_FILES[where.split("[")[0]]
        if not (p / key).is_file():
            what = {
                "runs.parquet": "a run table (autopipe history export)",
                "prior.json": "a fitted prior (autopipe prior fit)",
                "predictor.json": "a fitted predictor (autopipe predictor fit)",
            }[key]
            raise SpecError(f"{where} {str(p)!r} must be {what}, but it has no {key}")
    if local and spec.storage and "://" not in spec.storage:
        check_storage(spec.resolve(spec.storage))


# The file that makes a folder what history.* names (autopipe.history.runtable.RUNS_FILE and the
# prior's / predictor's SIDECAR; not imported here, this module stays free of XGBoost/pandas).
HISTORY_KEY_FILES = {
    "history.run_tables": "runs.parquet",
    "history.prior": "prior.json",
    "history.predictor": "predictor.json",
}


def check_storage(path: Path) -> None:
    """``storage`` must be a writable folder, or a path that can be created as one."""
    p = Path(os.path.abspath(path))
    if p.exists():
        if not p.is_dir():
            raise SpecError(
                f"storage {str(p)!r} must be a folder (or a URI such as s3://...), but it is a file"
            )
        if not os.access(p, os.W_OK | os.X_OK):
            raise SpecError(f"storage {str(p)!r} must be a writable folder, but it is not writable")
        return
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SpecError(f"storage {str(p)!r} cannot be created: {str(parent)!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SpecError(
            f"storage {str(p)!r} cannot be created: no write permission in {str(parent)!r}"
        )
