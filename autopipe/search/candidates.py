"""The finite candidate sets that model-based searchers score: the whole grid of a small finite
space, or a prior-ranked sample pool plus perturbations of the incumbents; plus the two warm-start
designs (greedy max-min among the prior's top, scrambled Sobol). It converts configurations only
through :mod:`autopipe.space`; it does not fit models, choose among candidates or know about Ray.

Notation: ``X`` is ``(N, p)`` features from ``Space.encode_columns``; ``s`` is ``(N,)`` prior
z-scores (zeros without a prior); ``u`` is ``(d,)`` a point in the unit cube.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from autopipe.space import Space, SpaceError

# NOTE: the limit: enumerate finite spaces up to 100,000 configurations; the 35,000-point
# grid of benchmarks/searcher_latency.py scores in ~10 ms per suggestion.
MAX_GRID = 100_000
# NOTE: continuous pools: 8192 raw samples ranked by the prior, keep the top 1536 and 512 random
# others (so the GP can leave the prior's favourite region); 3 incumbents x 64 perturbations.
# Sized for ~10 ms per suggestion in benchmarks/searcher_latency.py (mixed-space row).
N_RAW = 8192
N_TOP = 1536
N_RANDOM = 512
N_INCUMBENTS = 3
N_PERTURB = 64
PERTURB_SD = 0.08  # unit-cube step of a numeric parameter
PERTURB_FLIP = 0.2  # chance to resample a categorical parameter


class Prior(Protocol):
    """What the searchers need from a prior: z-scores of encoded configurations on one task
    (``autopipe.prior.ranker.RankingPrior`` satisfies it). A prior may also have
    ``log_cost_features(meta, X_cfg)``, the configurations' predicted log cost relative to a
    typical one (or ``None``), which cost-aware search uses; without it the costs are unknown."""

    def score_features(self, meta: Mapping[str, float] | None, X_cfg: np.ndarray) -> np.ndarray: ...


def encode(space: Space, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Features ``(n, p)`` of configurations (columnar, fast for large sets)."""
    if not configs:
        return np.zeros((0, space.n_features))
    return space.encode_columns({n: [c.get(n) for c in configs] for n in space.names})


class CandidateSet:
    """Candidates with their features and prior scores; deterministic given ``seed``.

    ``grid`` mode (finite space of at most :data:`MAX_GRID` points, or an explicit list
    ``configs``: only these may be proposed) holds every configuration and never changes. ``pool`` mode holds a fixed base pool and a replaceable block of perturbations
    of the incumbents (:meth:`set_block`); prior scores of a new block are put on the base pool's
    scale by an affine fit on the base pool rescored together with the block, because the prior
    z-scores within whatever set it is given.
    """

    def __init__(
        self,
        space: Space,
        seed: int,
        prior: Prior | None = None,
        meta: Mapping[str, float] | None = None,
        configs: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self.space = space
        self.prior = prior
        self.meta = dict(meta or {})
        self.explicit = configs is not None
        if configs is not None:
            if not configs:
                raise SpaceError("search.options.candidates must list at least one configuration")
            self.grid = True
            base = _dedupe(
                space,
                [
                    space.validate(c, f"search.options.candidates[{i}]")
                    for i, c in enumerate(configs)
                ],
            )
        elif space.is_finite and space.grid_size() <= MAX_GRID:
            self.grid = True
            base = list(space.iter_grid())
        else:
            self.grid = False
            rng = np.random.default_rng([seed, 101])
            raw = space.sample_many(N_RAW, rng)
            if prior is not None:
                s_raw = self._score(encode(space, raw))
                order = np.argsort(-s_raw, kind="stable")
                rest = order[N_TOP:]
                pick = np.concatenate(
                    [order[:N_TOP], rng.choice(rest, min(N_RANDOM, len(rest)), replace=False)]
                )
            else:
                pick = np.arange(N_TOP + N_RANDOM)
            base = _dedupe(space, [raw[int(i)] for i in pick])
        self._base = base
        self._X_base = encode(space, base)
        self._s_base = self._score(self._X_base)
        # relative log cost per candidate, centred on the base's median; None: no cost model
        lc = self._log_cost(self._X_base)
        self.has_cost = lc is not None
        self._lc_center = float(np.median(lc)) if lc is not None and len(lc) else 0.0
        self._lc_base = self._centred(lc, len(base))
        self.block: list[dict[str, Any]] = []
        self._X_block = np.zeros((0, space.n_features))
        self._s_block = np.zeros(0)
        self._lc_block = np.zeros(0)
        self._key_base = {space.config_key(c): i for i, c in enumerate(base)}
        self._refresh()

    def _score(self, X: np.ndarray) -> np.ndarray:
        if self.prior is None:
            return np.zeros(len(X))
        s = np.asarray(self.prior.score_features(self.meta, X), dtype=float)
        return np.where(np.isfinite(s), s, 0.0)

    def _log_cost(self, X: np.ndarray) -> np.ndarray | None:
        f = getattr(self.prior, "log_cost_features", None)
        if f is None:
            return None
        lc = f(self.meta, X)
        return None if lc is None else np.asarray(lc, dtype=float)

    def _centred(self, lc: np.ndarray | None, n: int) -> np.ndarray:
        if lc is None:
            return np.zeros(n)
        return np.where(np.isfinite(lc), lc - self._lc_center, 0.0)

    def _refresh(self) -> None:
        self.configs = self._base + self.block
        self.X = np.vstack([self._X_base, self._X_block]) if self.block else self._X_base
        self.s = np.concatenate([self._s_base, self._s_block]) if self.block else self._s_base
        # log cost relative to the median candidate (zeros without a cost model)
        self.log_cost = (
            np.concatenate([self._lc_base, self._lc_block]) if self.block else self._lc_base
        )
        self._key_block = {
            self.space.config_key(c): len(self._base) + i for i, c in enumerate(self.block)
        }

    def __len__(self) -> int:
        return len(self.configs)

    def index(self, config: Mapping[str, Any]) -> int | None:
        """Row of ``config`` among the candidates, or ``None``."""
        return self.index_key(self.space.config_key(config))

    def index_key(self, key: tuple) -> int | None:
        """Row of the configuration with ``Space.config_key`` ``key``, or ``None``."""
        i = self._key_base.get(key)
        return i if i is not None else self._key_block.get(key)

    def score_configs(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Prior z-scores of arbitrary configurations on the candidates' scale."""
        out = np.zeros(len(configs))
        new = []
        for j, c in enumerate(configs):
            i = self.index(c)
            if i is None:
                new.append(j)
            else:
                out[j] = self.s[i]
        if new and self.prior is not None:
            out[new] = self._score_on_base_scale(encode(self.space, [configs[j] for j in new]))
        return out

    def _score_on_base_scale(self, X_new: np.ndarray) -> np.ndarray:
        joint = self._score(np.vstack([self._X_base, X_new]))
        n = len(self._X_base)
        A = np.column_stack([joint[:n], np.ones(n)])
        coef, *_ = np.linalg.lstsq(A, self._s_base, rcond=None)
        return coef[0] * joint[n:] + coef[1]

    # ------------------------------------------------------------------ pool mode
    def set_block(self, block: Sequence[Mapping[str, Any]]) -> None:
        """Replace the perturbation block (``pool`` mode only); duplicates of the base dropped."""
        if self.grid:
            raise ValueError("a grid candidate set has no perturbation block")
        keep = [
            dict(c)
            for c in _dedupe(self.space, block)
            if self.space.config_key(c) not in self._key_base
        ]
        self.block = keep
        self._X_block = encode(self.space, keep)
        self._s_block = (
            self._score_on_base_scale(self._X_block)
            if keep and self.prior is not None
            else np.zeros(len(keep))
        )
        self._lc_block = self._centred(self._log_cost(self._X_block) if keep else None, len(keep))
        self._refresh()

    def perturb(
        self, incumbents: Sequence[Mapping[str, Any]], rng: np.random.Generator
    ) -> list[dict[str, Any]]:
        """:data:`N_PERTURB` random neighbours of each incumbent: Gaussian steps of
        :data:`PERTURB_SD` in the unit cube, categoricals resampled with chance :data:`PERTURB_FLIP`."""
        out: list[dict[str, Any]] = []
        cat = np.array([p.is_categorical for p in self.space.params])
        for inc in incumbents:
            u0 = self.space.to_unit(inc)
            for _ in range(N_PERTURB):
                u = np.clip(u0 + rng.normal(0.0, PERTURB_SD, size=len(u0)), 0.0, 1.0)
                flip = cat & (rng.random(len(u0)) < PERTURB_FLIP)
                u[flip] = rng.random(int(flip.sum()))
                # Inactive parameters sit at 0.5 in u: a flipped parent may activate them, and
                # from_unit drops them again where they stay inactive.
                out.append(self.space.from_unit(u))
        return out


# ------------------------------------------------------------------------------------ warm starts
def greedy_maxmin(
    X: np.ndarray,
    s: np.ndarray,
    k: int,
    allowed: np.ndarray,
    top: int,
    rng: np.random.Generator,
) -> list[int]:
    """``k`` rows among the ``top`` best-scored allowed rows: the first drawn uniformly among the
    ``k`` best (so seeds give different replicates), then repeatedly the row farthest (Euclidean,
    in feature space) from those chosen, ties broken at random."""
    rows = np.flatnonzero(allowed)
    if len(rows) == 0 or k <= 0:
        return []
    rows = rows[np.argsort(-s[rows], kind="stable")[:top]]
    first = int(rng.integers(min(k, len(rows))))
    chosen = [int(rows[first])]
    d = np.linalg.norm(X[rows] - X[rows[first]], axis=1)
    while len(chosen) < min(k, len(rows)):
        far = np.flatnonzero(d >= d.max() - 1e-12)
        if d.max() <= 0:
            break  # only duplicates of chosen rows remain
        j = int(far[rng.integers(len(far))])
        chosen.append(int(rows[j]))
        d = np.minimum(d, np.linalg.norm(X[rows] - X[rows[j]], axis=1))
    return chosen


def sobol_configs(space: Space, k: int, seed: int) -> list[dict[str, Any]]:
    """Up to ``k`` distinct configurations from a scrambled Sobol sequence of the unit cube."""
    from scipy.stats import qmc

    if k <= 0:
        return []
    m = max(2, math.ceil(math.log2(4 * k)))
    u = qmc.Sobol(
        d=len(space), scramble=True, seed=np.random.default_rng([seed, 103])
    ).random_base2(m)
    return _dedupe(space, [space.from_unit(row) for row in u])[:k]


def _dedupe(space: Space, configs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple] = set()
    out = []
    for c in configs:
        key = space.config_key(c)
        if key not in seen:
            seen.add(key)
            out.append(dict(c))
    return out
