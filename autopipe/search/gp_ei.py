"""The GP-EI baseline: the same candidates, warm start (scrambled Sobol) and GP as AutoPipe, with
no prior and log Expected Improvement over the best posterior mean among evaluated
configurations. Ray-free; it exists to be compared with AutoPipe, not to use a history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from autopipe.search.gp import CandidatePosterior, log_expected_improvement
from autopipe.search.model_based import ModelBasedCore, Targets
from autopipe.space import Space


class GPEICore(ModelBasedCore):
    """Plain GP-BO: Matérn-5/2 ARD GP on standardized values, log EI; running trials shrink the
    variance around them (kriging believer) and are excluded, so concurrent suggestions differ."""

    name = "gp-ei"

    def __init__(
        self,
        space: Space,
        seed: int = 0,
        budget: int | None = None,
        warm_start: int = 5,
        max_fit_iter: int = 50,
        candidates: Sequence[Mapping[str, Any]] | None = None,
        **unused: Any,
    ) -> None:
        if unused:
            from autopipe.errors import SpecError

            valid = ["budget", "candidates", "max_fit_iter", "warm_start"]
            raise SpecError(
                f"search options of 'gp-ei' must be among {valid}, but got {sorted(unused)}"
            )
        super().__init__(
            space,
            seed,
            budget=budget,
            warm_start=warm_start,
            max_fit_iter=max_fit_iter,
            candidates=candidates,
        )

    def _acquire(
        self, post: CandidatePosterior, mu: torch.Tensor, sigma: torch.Tensor, targets: Targets
    ) -> torch.Tensor:
        finite, mean_obs = self._observed_mean(post, targets)
        if not finite:
            return sigma.clone()  # nothing to improve on yet: pure exploration
        b = targets[3]
        # EI of z = b + r against the best posterior mean of z among evaluated configurations
        # (robust to noisy observations, unlike the best observed value).
        return log_expected_improvement(b + mu, sigma, float(mean_obs.max()))
