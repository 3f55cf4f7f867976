"""Offline history: the in-memory model of past runs, readers of run tables and MLflow
experiments, and dataset meta-features. Nothing here fits a model or talks to Ray."""

from __future__ import annotations

from autopipe.history.data import History, concat_histories
from autopipe.history.runtable import read_run_table, write_run_table

__all__ = ["History", "concat_histories", "read_run_table", "write_run_table"]
