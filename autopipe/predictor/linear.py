"""The linear base of each ensemble member: a ridge regression on standardized, clipped prefix
features (and the prior's z-score) from which the member's trees are boosted.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from autopipe.errors import DataError

# NOTE: the linear base's standardized inputs are clipped to +-3 so a diverged run's prefix (a
# loss of 5 among 2s) cannot set its slopes; on scan_llm at f = 0.25 (5-fold, seeds 0-2) the
# direct variant's Spearman was 0.936 unclipped, 0.940 clipped, 0.957 with trees only.
LINEAR_CLIP = 3.0


# --------------------------------------------------------------------------- linear base
@dataclass
class LinearBase:
    """A ridge regression that a member's trees start from (their ``base_margin``).

    It reads the columns ``cols`` of the assembled rows (the prefix features, their peer ranks
    and, for the residual variant, the prior's z-score), standardized by the training rows' mean
    ``mu`` and std ``sd`` (NaN -> 0, the mean; clipped to +-:data:`LINEAR_CLIP`), with penalty
    ``alpha * rows``. Why: trees split a raw eval loss at thresholds learned on other tasks' loss
    levels, so a new task's trials often share a leaf and the trees cannot order them; a linear
    term orders them at the resolution of the raw values (see ``PredictorConfig.linear_alpha``
    for what it measured)."""

    mu: np.ndarray
    sd: np.ndarray
    w: np.ndarray
    b: float
    cols: np.ndarray  # the columns of the assembled rows it reads

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, alpha: float, cols: np.ndarray) -> LinearBase:
        cols = np.asarray(cols, dtype=np.int64)
        X = np.asarray(X, dtype=float)[:, cols]
        y = np.asarray(y, dtype=float)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            mu = np.nanmean(X, axis=0)
            sd = np.nanstd(X, axis=0)
        mu = np.where(np.isfinite(mu), mu, 0.0)
        sd = np.where(np.isfinite(sd) & (sd > 1e-12), sd, 1.0)
        Z = _standardize(X, mu, sd)
        A = Z.T @ Z + alpha * len(Z) * np.eye(Z.shape[1])
        w = np.linalg.solve(A, Z.T @ (y - y.mean()))
        return cls(mu=mu, sd=sd, w=w, b=float(y.mean()), cols=cols)

    def predict(self, X: np.ndarray) -> np.ndarray:
        Xc = np.asarray(X, dtype=float)[:, self.cols]
        return self.b + _standardize(Xc, self.mu, self.sd) @ self.w

    def to_json(self) -> dict[str, Any]:
        return {
            "cols": self.cols.tolist(),
            "mu": self.mu.tolist(),
            "sd": self.sd.tolist(),
            "w": self.w.tolist(),
            "b": self.b,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LinearBase:
        try:
            arr = {k: np.asarray(d[k], dtype=float).reshape(-1) for k in ("mu", "sd", "w")}
            cols = np.asarray(d["cols"], dtype=np.int64).reshape(-1)
            b = float(d["b"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(
                f"linear base must have numeric cols, mu, sd, w and b, but got {e!r}"
            ) from None
        if not (len(arr["mu"]) == len(arr["sd"]) == len(arr["w"]) == len(cols)):
            raise DataError("linear base: cols, mu, sd and w must have one length")
        return cls(b=b, cols=cols, **arr)


def _standardize(X: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        Z = (X - mu) / sd
    return np.clip(np.where(np.isfinite(Z), Z, 0.0), -LINEAR_CLIP, LINEAR_CLIP)
