"""Offline history: past runs in memory (``data``), readers of run tables and MLflow
experiments, dataset meta-features, where a history comes from (``sources``), what a job transfers
from it (``transfer``: the prior and predictor it fits or loads) and their saved files. Nothing
here talks to Ray."""

from __future__ import annotations

from autopipe.history.data import History, concat_histories
from autopipe.history.runtable import read_run_table, write_run_table

__all__ = ["History", "concat_histories", "read_run_table", "write_run_table"]
