"""The lifecycle shared by the model-based cores (AutoPipe, :mod:`.autopipe`, and the GP-EI
baseline, :mod:`.gp_ei`): a warm start, then a GP over a candidate set, refits, pending trials,
failed trials, the posterior-mean recommendation and the shortlist. Ray-free; subclasses choose
the prior weight, the acquisition and the warm-start design.

Notation (all in the core's maximization sense): ``y`` raw observed values; ``z = clip((y - m) /
scale)`` standardized values; ``s`` prior z-scores; ``lam`` the prior's weight in the residual
(the guard's trust ``tau``; 1 without the guard, 0 without a prior); ``b`` the dataset offset, the
inverse-variance weighted mean of ``z - lam s``; ``r = z - lam s - b`` the GP targets ``(n,)``;
``mu``/``sigma`` the GP posterior of ``r`` at the ``N`` candidates. The model predicts
``z(x) = lam s(x) + b + mu(x)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from autopipe.errors import SpecError
from autopipe.search.base import ProposalCore, distinct_configs
from autopipe.search.candidates import (
    N_INCUMBENTS,
    CandidateSet,
    Prior,
    encode,
    greedy_maxmin,
    sobol_configs,
)
from autopipe.search.gp import CandidatePosterior, Hyper, fit_hyper, single_thread
from autopipe.space import Space

log = logging.getLogger(__name__)

Targets = tuple[np.ndarray, np.ndarray, np.ndarray, float, float]  # (z, s, r, b, lam), see above

EXTRA_VERSION = 1
# NOTE: a full evaluation's noise variance in standardized units (the spread of observed values
# is ~1 there); small, but large enough to keep 400 near-duplicate grid points factorizable in
# benchmarks/searcher_latency.py.
DEFAULT_NOISE_Z = 1e-3
# Standardized values are clipped so one diverged run (accuracy 0 among 0.6s) cannot dominate the
# GP's scale; not tuned, a guard against outliers.
Z_CLIP = 4.0
# NOTE: hyperparameters are refitted after each of the first 10 observations, then whenever the
# number of observations has grown by 25% since the last fit (warm-started, capped L-BFGS-B).
# Between fits new observations are rank-one updates. Set by benchmarks/searcher_latency.py: at
# 200-400 observations this refits 3 times in 200 suggestions (p95 stays a rank-one step).
REFIT_EVERY_UNTIL = 10
REFIT_GROWTH = 1.25
MIN_FIT = 3  # fewer observations than this: default hyperparameters, no fit
DEFAULT_HORIZON = 50  # schedules' horizon (trials) when no budget is given


def robust_standardization(y: np.ndarray) -> tuple[float, float]:
    """``(m, scale)`` of observed values: the median and 1.4826 x MAD (the normal-consistent
    robust spread), falling back to the standard deviation when more than half the values tie,
    and to 1 with fewer than two distinct values (no scale information yet)."""
    if len(y) == 0:
        return 0.0, 1.0
    m = float(np.median(y))
    mad = 1.4826 * float(np.median(np.abs(y - m)))
    if mad > 0:
        return m, mad
    sd = float(np.std(y, ddof=1)) if len(y) > 1 else 0.0
    return m, sd if sd > 0 else 1.0


class ModelBasedCore(ProposalCore):
    """A warm start, then a GP over a candidate set: the shared lifecycle of AutoPipe and GP-EI.

    Subclasses set the prior weight (:meth:`_prior_weight`), the acquisition (:meth:`_acquire`)
    and the warm-start design (:meth:`_warm_design`). Failed trials (value ``None``, NaN, inf) are
    never proposed again and enter the GP at the worst standardized value seen, so the search also
    moves away from their neighbourhood.
    """

    name = "model-based"
    OPTIONS = {
        "budget": "int?",
        "warm_start": "int",
        "max_fit_iter": "int",
        "candidates": "configs",
    }

    @classmethod
    def check_values(
        cls,
        budget: int | None = None,
        warm_start: int = 5,
        max_fit_iter: int = 50,
        **_: Any,
    ) -> None:
        """Raise :class:`SpecError` for an option value out of range; cheap, so ``autopipe
        validate`` runs it before a job starts (other keyword arguments are ignored)."""
        if budget is not None and int(budget) < 1:
            raise SpecError(f"search budget must be >= 1 trials, but got {budget}")
        if int(warm_start) < 0:
            raise SpecError(f"search.options.warm_start must be >= 0, but got {warm_start}")
        if int(max_fit_iter) < 1:
            raise SpecError(f"search.options.max_fit_iter must be >= 1, but got {max_fit_iter}")

    def __init__(
        self,
        space: Space,
        seed: int = 0,
        *,
        prior: Prior | None = None,
        meta: Mapping[str, float] | None = None,
        budget: int | None = None,
        warm_start: int = 5,
        max_fit_iter: int = 50,
        candidates: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        self.check_values(budget=budget, warm_start=warm_start, max_fit_iter=max_fit_iter)
        super().__init__(space, seed)
        self.prior = prior
        self.budget = None if budget is None else int(budget)
        self.warm_start = int(warm_start)
        self.max_fit_iter = int(max_fit_iter)
        # ``candidates``: propose only among these configurations (e.g. the ones a replayed table
        # ran); otherwise the whole grid of a small finite space, or a prior-ranked pool
        self.cands = CandidateSet(space, self.seed, prior, meta, candidates)
        self.n_proposed = 0
        self.n_fit_failures = 0
        self._perturb_rng = np.random.default_rng([self.seed, 202])
        self._warm: list[dict[str, Any]] | None = None
        self._trial_s: dict[str, float] = {}
        self._taken: set[tuple] = set()
        self._block_for: list[str] = []
        self.hyper = Hyper.default(space.n_features)
        self._std = (0.0, 1.0)
        self._fit_n = 0
        self._post: CandidatePosterior | None = None
        self._x_cache: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ contract
    def propose(self, trial_id: str) -> dict[str, Any] | None:
        with single_thread():
            choice = self._choose()
        if choice is None:
            return None
        cfg, s = choice
        self.pending[trial_id] = cfg
        self._trial_s[trial_id] = float(s)
        self._taken.add(self.space.config_key(cfg))
        self.n_proposed += 1
        return dict(cfg)

    def _propose(self) -> dict[str, Any] | None:
        choice = self._choose()
        return None if choice is None else choice[0]

    @property
    def progress(self) -> float:
        """Share of the budget proposed so far, in [0, 1] (the schedules' clock)."""
        return min(self.n_proposed / float(self.budget or DEFAULT_HORIZON), 1.0)

    def recommend(self) -> tuple[dict[str, Any], float] | None:
        """The evaluated configuration with the best posterior mean and that mean in the
        objective's units; ``None`` before the first finite observation."""
        if all(o[2] is None for o in self.observed):
            return None
        with single_thread():
            finite, pred = self._observed_mean(*self._sync_model())
        j = int(np.argmax(pred))
        m, scale = self._std
        return dict(self.observed[finite[j]][1]), m + scale * float(pred[j])

    def shortlist(self, k: int) -> list[dict[str, Any]]:
        """The recommendation (best posterior mean), then the best observed values.

        NOTE: a proxy's noise variance is large against the spread of the proxies a search
        concentrates near the prior's top, so the posterior mean stays close to the prior there;
        the proxies' own order keeps the predictor's ranking. On the tinypost replay (promote 3,
        15 early-stopped evaluations, 10 tasks x 3 seeds) the best full result among this list
        had mean regret 0.103, among the top 3 posterior means 0.186."""
        if k < 1:
            raise ValueError(f"k must be >= 1, but got {k}")
        rec = self.recommend()
        if rec is None:
            return []
        return distinct_configs(self.space, [rec[0], *super().shortlist(k)], k)

    def best(self) -> tuple[dict[str, Any], float] | None:
        """The recommended configuration (:meth:`recommend`) with its observed value."""
        rec = self.recommend()
        if rec is None:
            return None
        key = self.space.config_key(rec[0])
        for _, c, v, _ in self.observed:
            if v is not None and self.space.config_key(c) == key:
                return rec[0], float(v)
        return None

    # ------------------------------------------------------------------ choice
    def _choose(self) -> tuple[dict[str, Any], float] | None:
        if self.n_proposed < self.warm_start:
            cfg = self._next_warm()
            if cfg is not None:
                return cfg, float(self.cands.score_configs([cfg])[0])
        if not self.cands.grid:
            self._refresh_block()
        taken = self._taken_mask()
        if taken.all():
            if self.cands.grid:
                return None  # every configuration of the finite space has been proposed
            return self._random_untaken()
        post, targets = self._sync_model()
        mu, sigma = post.candidates(targets[2], self._pending_features(), DEFAULT_NOISE_Z)
        acq = self._acquire(post, mu, sigma, targets)
        acq[torch.as_tensor(taken)] = -math.inf
        i = int(torch.argmax(acq))
        if not math.isfinite(float(acq[i])):
            return None if self.cands.grid else self._random_untaken()
        return dict(self.cands.configs[i]), float(self.cands.s[i])

    def _next_warm(self) -> dict[str, Any] | None:
        if self._warm is None:
            self._warm = self._warm_design()
        for cfg in self._warm:
            if self.space.config_key(cfg) not in self._taken:
                return dict(cfg)
        return None

    def _random_untaken(self) -> tuple[dict[str, Any], float] | None:
        for _ in range(1000):
            cfg = self.space.sample(self.rng)
            if self.space.config_key(cfg) not in self._taken:
                return cfg, float(self.cands.score_configs([cfg])[0])
        return None

    def _taken_mask(self) -> np.ndarray:
        mask = np.zeros(len(self.cands), dtype=bool)
        for key in self._taken:
            i = self.cands.index_key(key)
            if i is not None:
                mask[i] = True
        return mask

    def _features(self, trial_id: str, cfg: Mapping[str, Any]) -> np.ndarray:
        x = self._x_cache.get(trial_id)
        if x is None:
            x = self._x_cache[trial_id] = encode(self.space, [cfg])[0]
        return x

    def _pending_features(self) -> np.ndarray | None:
        if not self.pending:
            return None
        return np.vstack([self._features(t, c) for t, c in self.pending.items()])

    def _refresh_block(self) -> None:
        """Pool mode: perturb the incumbents (best observed values) when they change."""
        ok = [(o[2], -k, o[0]) for k, o in enumerate(self.observed) if o[2] is not None]
        ids = [t for *_, t in sorted(ok, reverse=True)[:N_INCUMBENTS]]
        if ids == self._block_for:
            return
        cfg_of = {o[0]: o[1] for o in self.observed}
        self.cands.set_block(self.cands.perturb([cfg_of[t] for t in ids], self._perturb_rng))
        self._block_for = ids
        if self._post is not None:
            self._post.set_candidates(self.cands.X)

    # ------------------------------------------------------------------ model
    def _noise_z(self, noise_var: float | None) -> float:
        if noise_var is None or not math.isfinite(noise_var) or noise_var < 0:
            return DEFAULT_NOISE_Z
        return float(noise_var) / self._std[1] ** 2

    def _targets(self) -> Targets:
        """``(z, s, r, b, lam)`` over all observations (failed ones at the worst ``z``)."""
        m, scale = self._std
        n = len(self.observed)
        ok = np.array([o[2] is not None for o in self.observed], dtype=bool)
        z = np.zeros(n)
        if ok.any():
            y = np.array([o[2] for o in self.observed if o[2] is not None], dtype=float)
            z[ok] = np.clip((y - m) / scale, -Z_CLIP, Z_CLIP)
            z[~ok] = z[ok].min()
        else:
            z[:] = -1.0
        s = np.array([self._trial_s.get(o[0], 0.0) for o in self.observed], dtype=float)
        lam = self._prior_weight(z[ok], s[ok])
        if ok.any():
            w = 1.0 / np.array([self._noise_z(o[3]) for o in self.observed], dtype=float)[ok]
            b = float(np.sum(w * (z[ok] - lam * s[ok])) / np.sum(w))
        else:
            b = 0.0
        return z, s, z - lam * s - b, b, lam

    def _due_refit(self, n: int) -> bool:
        f = self._fit_n
        nxt = f + 1 if f < REFIT_EVERY_UNTIL else math.ceil(REFIT_GROWTH * f)
        return n > f and n >= nxt

    def _sync_model(self) -> tuple[CandidatePosterior, Targets]:
        """Bring the posterior up to date with the observations: a full refit when one is due
        (:data:`REFIT_GROWTH`), else rank-one appends with the frozen standardization."""
        obs = self.observed
        n = len(obs)
        if self._post is None:
            # Fresh or restored: replay the last fit's factorization, then the appends since, so
            # a restored core computes exactly what the original did.
            self._post = CandidatePosterior(self.cands.X, self.hyper)
            if self._fit_n:
                X = np.vstack([self._features(o[0], o[1]) for o in obs[: self._fit_n]])
                self._post.rebuild(X, np.array([self._noise_z(o[3]) for o in obs[: self._fit_n]]))
        if self._due_refit(n):
            finite = np.array([o[2] for o in obs if o[2] is not None], dtype=float)
            self._std = robust_standardization(finite)
            X = np.vstack([self._features(o[0], o[1]) for o in obs])
            noise = np.array([self._noise_z(o[3]) for o in obs])
            if n >= MIN_FIT and len(finite) >= 2:
                _, _, r, _, _ = self._targets()
                self.hyper, ok = fit_hyper(X, r, noise, self.hyper, self.max_fit_iter)
                self.n_fit_failures += 0 if ok else 1
            self._post = CandidatePosterior(self.cands.X, self.hyper)
            self._post.rebuild(X, noise)
            self._fit_n = n
        for o in obs[self._post.n :]:
            self._post.append(self._features(o[0], o[1]), self._noise_z(o[3]))
        return self._post, self._targets()

    # ------------------------------------------------------------------ hooks
    def _prior_weight(self, z_ok: np.ndarray, s_ok: np.ndarray) -> float:
        return 0.0

    def _acquire(
        self, post: CandidatePosterior, mu: torch.Tensor, sigma: torch.Tensor, targets: Targets
    ) -> torch.Tensor:
        """Acquisition ``(N,)`` at the candidates from the posterior ``mu``/``sigma`` of ``r``."""
        raise NotImplementedError  # abstract: subclasses define the acquisition

    def _observed_mean(
        self, post: CandidatePosterior, targets: Targets
    ) -> tuple[list[int], np.ndarray]:
        """Indices of finite observations and the model's mean of ``z`` there."""
        z, s, r, b, lam = targets
        finite = [i for i, o in enumerate(self.observed) if o[2] is not None]
        if not finite:
            return finite, np.zeros(0)
        X = np.vstack([self._features(self.observed[i][0], self.observed[i][1]) for i in finite])
        mu, _ = post.at(X, r)
        return finite, lam * s[finite] + b + mu

    def _warm_design(self) -> list[dict[str, Any]]:
        if self.cands.explicit:
            # a given list: the most spread-out of its configurations (Sobol points of the space
            # would not be on it)
            n = len(self.cands)
            rows = greedy_maxmin(
                self.cands.X, np.zeros(n), self.warm_start, ~self._taken_mask(), n, self.rng
            )
            return [dict(self.cands.configs[i]) for i in rows]
        return sobol_configs(self.space, self.warm_start, self.seed)

    def _s_tensor(self) -> torch.Tensor:
        return torch.as_tensor(self.cands.s, dtype=torch.float64)

    # ------------------------------------------------------------------ state
    def _extra_state(self) -> dict[str, Any]:
        return {
            "version": EXTRA_VERSION,
            "n_proposed": self.n_proposed,
            "n_fit_failures": self.n_fit_failures,
            "perturb_rng": self._perturb_rng.bit_generator.state,
            "warm": self._warm,
            "trial_s": self._trial_s,
            "block": self.cands.block if not self.cands.grid else [],
            "block_for": self._block_for,
            "hyper": self.hyper.to_json(),
            "std": list(self._std),
            "fit_n": self._fit_n,
        }

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        if extra.get("version") != EXTRA_VERSION:
            raise ValueError(
                f"{self.name} state must be version {EXTRA_VERSION}, but got {extra.get('version')}"
            )
        self.n_proposed = int(extra["n_proposed"])
        self.n_fit_failures = int(extra["n_fit_failures"])
        self._perturb_rng.bit_generator.state = extra["perturb_rng"]
        self._warm = None if extra["warm"] is None else [dict(c) for c in extra["warm"]]
        self._trial_s = {str(k): float(v) for k, v in extra["trial_s"].items()}
        if not self.cands.grid:
            self.cands.set_block(extra["block"])
        self._block_for = [str(t) for t in extra["block_for"]]
        self.hyper = Hyper.from_json(extra["hyper"])
        self._std = (float(extra["std"][0]), float(extra["std"][1]))
        self._fit_n = int(extra["fit_n"])
        self._post = None
        self._x_cache = {}
        self._taken = {self.space.config_key(c) for c in self.pending.values()}
        self._taken |= {self.space.config_key(o[1]) for o in self.observed}
