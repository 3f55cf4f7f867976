"""The proxy score of an early-stopped trial, as the scheduler's ledger calls it: a fitted
:class:`~autopipe.predictor.early.EarlyPredictor` (and, for its residual variant, the prior's
z-score of the configuration) wrapped into a ``ProxyFn``. Ray-free; it fits nothing and decides
nothing (the stop policy does); the tuning job and the replay benchmark both build it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from autopipe.errors import DataError
from autopipe.predictor.early import RESIDUAL, EarlyPredictor
from autopipe.space import Space

# NOTE: the reference sample the prior's z-score of a configuration is normalized in; 2,000
# points keep the z-score of one configuration stable to ~0.02 (the size load_proxy always used).
N_REFERENCE = 2000


def make_proxy(
    predictor: EarlyPredictor,
    prior: Any,
    space: Space,
    meta: Mapping[str, float] | None,
    seed: int,
) -> Any:
    """``proxy(reports, config, peers) -> (score, variance)`` of a trial of the task ``meta``.

    A residual predictor needs ``prior`` (a ``RankingPrior``): the prior z-normalizes within the
    set it scores, so a configuration is scored together with a fixed sample of ``N_REFERENCE``
    configurations of ``space`` drawn with ``seed``. ``peers`` (the job's other trials' reports)
    are passed on to the predictor. Raises :class:`DataError` for a residual predictor without
    a prior.
    """
    if predictor.variant == RESIDUAL and prior is None:
        raise DataError("the predictor is the residual variant and needs a prior, but got none")
    use_prior = predictor.variant == RESIDUAL
    meta = dict(meta or {})
    x_ref = (
        space.encode(space.sample_many(N_REFERENCE, np.random.default_rng(seed)))
        if use_prior
        else None
    )

    def proxy(
        reports: list[dict[str, Any]],
        config: dict[str, Any],
        peers: list[list[dict[str, Any]]] | None = None,
    ) -> tuple[float, float | None]:
        prior_z = None
        if use_prior:
            cfg = {k: v for k, v in config.items() if k in space.names}
            x = np.vstack([x_ref, space.encode([cfg])])
            prior_z = float(prior.score_features(meta, x)[-1])
        return predictor.predict_reports(reports, config, meta, prior_z, peers=peers)

    return proxy
