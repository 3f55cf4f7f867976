"""The early predictor: features of learning-curve prefixes and an XGBoost regressor ensemble that
predicts the z-scored final objective from them, with its evaluation against curve baselines.
Nothing here imports Ray or decides when to stop a trial (that is the scheduler's job)."""

from __future__ import annotations

from autopipe.predictor.early import EarlyPredictor, PredictorConfig
from autopipe.predictor.features import PrefixFeaturizer

__all__ = ["EarlyPredictor", "PredictorConfig", "PrefixFeaturizer"]
