"""The job spec: one YAML file per tuning job. :mod:`.schema` defines its sections and rules,
:mod:`.loader` reads a file, :mod:`.messages` turns validation errors into one line naming the
field, the rule and the value, :mod:`.build` turns the ``space`` section into a
:class:`~autopipe.space.Space`, :mod:`.paths` checks the files a spec names and :mod:`.checks`
runs every check ``autopipe validate`` and ``autopipe tune`` make before anything starts.
Nothing here starts Ray, touches MLflow or trains."""

from __future__ import annotations

from autopipe.spec.build import build_space
from autopipe.spec.checks import preflight
from autopipe.spec.loader import load_spec, parse_spec
from autopipe.spec.paths import HISTORY_KEY_FILES, check_paths, check_storage
from autopipe.spec.schema import (
    RL_PARAMS,
    SFT_PARAMS,
    BudgetSpec,
    DatasetSpec,
    JobSpec,
    ModelSpec,
    canonical_order,
)

__all__ = [
    "HISTORY_KEY_FILES",
    "RL_PARAMS",
    "SFT_PARAMS",
    "BudgetSpec",
    "DatasetSpec",
    "JobSpec",
    "ModelSpec",
    "build_space",
    "preflight",
    "canonical_order",
    "check_paths",
    "check_storage",
    "load_spec",
    "parse_spec",
]
