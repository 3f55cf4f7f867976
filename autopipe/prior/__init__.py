"""The dataset-conditioned ranking prior (an XGBoost pairwise-ranker ensemble) and its
leave-one-dataset-out evaluation. Nothing here imports Ray."""

from __future__ import annotations

from autopipe.prior.ranker import RankerConfig, RankingPrior

__all__ = ["RankerConfig", "RankingPrior"]
