"""Where a history comes from: a run table folder or an MLflow experiment (``mlflow:NAME``),
named by the same source strings everywhere (the CLI's ``--history``/``--from``, a job's
``history.run_tables`` / ``history.mlflow_experiments``)."""

from __future__ import annotations

from autopipe.history.data import History


def load_history(source: str, tracking_uri: str | None = None) -> History:
    """A run table folder or ``mlflow:EXPERIMENT`` -> History."""
    from autopipe.history.mlflow_reader import parse_source, read_mlflow_experiment
    from autopipe.history.runtable import read_run_table

    kind, where = parse_source(source)
    if kind == "mlflow":
        return read_mlflow_experiment(where, tracking_uri=tracking_uri)
    return read_run_table(where)
