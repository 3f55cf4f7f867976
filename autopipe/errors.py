"""AutoPipe's error hierarchy: every error a user can cause is an ``AutoPipeError`` whose message
is one line naming the field, the rule and the value received. The CLI turns these into exit
code 2 without a traceback; anything else is a bug and keeps its traceback."""

from __future__ import annotations


class AutoPipeError(Exception):
    """Base class of user-facing errors (bad input, unreachable services)."""

    exit_code = 2


class SpecError(AutoPipeError):
    """A job spec is missing, unreadable or invalid."""


class SpaceError(AutoPipeError):
    """A search space or a configuration does not fit its space."""


class DataError(AutoPipeError):
    """A dataset, run table or history cannot be read or is malformed."""


class TrackingError(AutoPipeError):
    """The MLflow tracking store cannot be reached or holds no such run."""


class ClusterError(AutoPipeError):
    """A Ray cluster cannot be reached, or a job cannot be submitted to it."""


class TrialError(Exception):
    """A trial failed for a known reason (non-finite loss, out of memory); the job goes on."""


def one_line(e: BaseException) -> str:
    """An error's first line, as the CLI prints it (its type's name when it has no text)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
