"""Fault injection for reliability tests and chaos drills (``AUTOPIPE_FAULT``)."""

from __future__ import annotations

import os
from typing import Any

# Fault injection for reliability tests and chaos drills: "KIND:PARAM=VALUE[;...]" makes trials
# whose configuration has PARAM == VALUE fail. KIND "raise" raises an exception in the worker
# (the trial errors), "nan" turns the reported train loss non-finite (the trial is failed by the
# divergence check), "crash" kills the worker process after its first RL report unless the
# trial was resumed from a checkpoint (a worker lost mid-trial, retried from its SFT checkpoint),
# "crash-always" kills it after its first RL report on every attempt (a worker that keeps dying:
# the trial fails once budget.max_failures retries are spent).
FAULT_ENV = "AUTOPIPE_FAULT"
FAULT_KINDS = ("raise", "nan", "crash", "crash-always")


def injected_fault(cfg: dict[str, Any], spec: str | None = None) -> str | None:
    spec = os.environ.get(FAULT_ENV, "") if spec is None else spec
    for item in filter(None, (x.strip() for x in spec.split(";"))):
        kind, _, cond = item.partition(":")
        key, _, value = cond.partition("=")
        if key in cfg and str(cfg[key]) == value and kind in FAULT_KINDS:
            return kind
    return None
