"""Gaussian-process math for the model-based searchers: Matérn-5/2 ARD hyperparameters fitted with
BoTorch, and a posterior over a fixed candidate matrix that grows one observation at a time
(rank-one Cholesky updates) so that scoring tens of thousands of candidates stays cheap.
This module knows nothing about Ray, search spaces, priors or trial ids.

Notation: ``p`` features per configuration; ``X_c`` is ``(N, p)`` candidate features, ``X`` is
``(n, p)`` observed features, ``r`` is ``(n,)`` GP targets (residuals, maximized), ``noise`` is
``(n,)`` per-observation noise variance in the units of ``r``; ``L`` is the ``(n, n)`` lower
Cholesky factor of ``K(X, X) + diag(noise)`` and ``Vt = L^-1 K(X, X_c)`` is ``(n, N)`` (stored
row-major in float32 with spare rows, so that its first ``n`` rows are contiguous), so that the posterior
variance at the candidates is ``outputscale - colsum(Vt**2)``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

DTYPE = torch.float64
# NOTE: the (n, N) candidate-side factor and variances are stored in float32: scoring is then
# memory-bound matrix-vector products at half the traffic (35,000 x 200: 1.3 ms vs 2.6 ms per
# product, benchmarks/searcher_latency.py); the n x n algebra stays float64.
CDTYPE = torch.float32
SQRT5 = math.sqrt(5.0)
# NOTE: noise floor and Cholesky jitter (in standardized units); 1e-6 keeps the 400-observation
# factorizations of benchmarks/searcher_latency.py positive definite without visibly smoothing.
NOISE_FLOOR = 1e-6
JITTERS = (0.0, 1e-8, 1e-6, 1e-4)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the previous count after.

    The matrices here are small (n <= a few hundred) or memory-bound matrix-vector products; on a
    loaded 2-core node (Ray workers beside the driver) spinning intra-op threads made one
    Cholesky backward 40x slower (20 ms vs 0.5 ms) and a 35-observation fit 7 s instead of 0.2 s.
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Hyper:
    """Matérn-5/2 ARD hyperparameters: ``lengthscale`` ``(p,)`` and ``outputscale`` (a variance)."""

    lengthscale: np.ndarray
    outputscale: float

    @classmethod
    def default(cls, p: int) -> Hyper:
        """The mode of the dimension-scaled log-normal lengthscale prior used in :func:`fit_hyper`."""
        loc, scale = _lengthscale_prior(p)
        return cls(np.full(p, math.exp(loc - scale**2)), 1.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "lengthscale": [float(v) for v in self.lengthscale],
            "outputscale": self.outputscale,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Hyper:
        return cls(np.asarray(d["lengthscale"], dtype=float), float(d["outputscale"]))


def _lengthscale_prior(p: int) -> tuple[float, float]:
    # Hvarfner et al. (2024), BoTorch's default since 0.12: LogNormal(sqrt(2) + log(p) / 2, sqrt(3)).
    return math.sqrt(2.0) + 0.5 * math.log(p), math.sqrt(3.0)


def matern52(A: torch.Tensor, B: torch.Tensor, outputscale: float) -> torch.Tensor:
    """Kernel matrix ``(len(A), len(B))`` of inputs already divided by the lengthscales."""
    d = torch.cdist(A, B, compute_mode="donot_use_mm_for_euclid_dist")
    r = SQRT5 * d
    return outputscale * (1.0 + r + r * r / 3.0) * torch.exp(-r)


# ---------------------------------------------------------------------------------------- fitting
def fit_hyper(
    X: np.ndarray, r: np.ndarray, noise: np.ndarray, init: Hyper, max_iter: int
) -> tuple[Hyper, bool]:
    """Maximize the marginal likelihood (plus hyperpriors) of a zero-mean Matérn-5/2 ARD GP with
    fixed per-observation ``noise``, starting from ``init`` with at most ``max_iter`` L-BFGS-B
    steps. Returns ``(hyper, ok)``; on a named numerical failure returns ``(init, False)``.

    Uses BoTorch's scipy fitting routine directly (one deterministic attempt) rather than
    ``fit_gpytorch_mll``, whose retries draw restarts from torch's global generator.
    """
    from botorch.exceptions.errors import ModelFittingError
    from botorch.models import SingleTaskGP
    from botorch.optim.fit import fit_gpytorch_mll_scipy
    from gpytorch.kernels import MaternKernel, ScaleKernel
    from gpytorch.means import ZeroMean
    from gpytorch.mlls import ExactMarginalLogLikelihood
    from gpytorch.priors import GammaPrior, LogNormalPrior
    from linear_operator.utils.errors import NotPSDError

    p = X.shape[1]
    loc, scale = _lengthscale_prior(p)
    covar = ScaleKernel(
        MaternKernel(nu=2.5, ard_num_dims=p, lengthscale_prior=LogNormalPrior(loc, scale)),
        outputscale_prior=GammaPrior(2.0, 0.15),
    )
    tX = torch.as_tensor(X, dtype=DTYPE)
    tY = torch.as_tensor(r, dtype=DTYPE).unsqueeze(-1)
    tV = torch.as_tensor(np.maximum(noise, NOISE_FLOOR), dtype=DTYPE).unsqueeze(-1)
    model = SingleTaskGP(
        tX, tY, tV, covar_module=covar, mean_module=ZeroMean(), outcome_transform=None
    )
    covar.base_kernel.lengthscale = torch.as_tensor(init.lengthscale, dtype=DTYPE).reshape(1, p)
    covar.outputscale = torch.as_tensor(init.outputscale, dtype=DTYPE)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    mll.train()
    try:
        with warnings.catch_warnings():
            # L-BFGS-B "iteration limit reached" is the intended cap, not a failure.
            warnings.simplefilter("ignore")
            fit_gpytorch_mll_scipy(mll, options={"maxiter": max_iter})
    except (NotPSDError, ModelFittingError) as e:
        log.warning("GP hyperparameter fit failed (%s); keeping the previous hyperparameters", e)
        return init, False
    ls = covar.base_kernel.lengthscale.detach().reshape(-1).numpy().astype(float)
    os_ = float(covar.outputscale.detach())
    if not (np.all(np.isfinite(ls)) and math.isfinite(os_) and os_ > 0):
        log.warning("GP hyperparameter fit returned non-finite values; keeping the previous ones")
        return init, False
    return Hyper(ls, os_), True


# -------------------------------------------------------------------------------------- posterior
class CandidatePosterior:
    """GP posterior at ``N`` candidates for fixed hyperparameters.

    Observations are only appended (:meth:`append`, O(N n)); :meth:`rebuild` refactorizes from
    scratch after a hyperparameter change (O(N n^2)). Candidates can be replaced
    (:meth:`set_candidates`). Targets are passed at query time, so changing them (a new offset,
    a new prior weight) costs O(N n) and no refactorization.
    """

    def __init__(self, X_c: np.ndarray, hyper: Hyper) -> None:
        self.hyper = hyper
        self._inv_ls = torch.as_tensor(1.0 / hyper.lengthscale, dtype=DTYPE)
        self.n = 0
        p = len(hyper.lengthscale)
        self._X = torch.empty((0, p), dtype=DTYPE)  # scaled observed inputs
        self._noise = torch.empty(0, dtype=DTYPE)
        self._L = torch.empty((0, 0), dtype=DTYPE)
        self.set_candidates(X_c)

    # ------------------------------------------------------------------ building
    def _scale(self, X: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(X, dtype=DTYPE) * self._inv_ls

    def set_candidates(self, X_c: np.ndarray) -> None:
        """Replace the candidate matrix ``(N, p)``; O(N n^2)."""
        self._Xc = self._scale(X_c)
        self._refresh_v()

    def _refresh_v(self) -> None:
        self._Vt = torch.zeros((max(16, 2 * self.n), len(self._Xc)), dtype=CDTYPE)
        var = torch.full((len(self._Xc),), self.hyper.outputscale, dtype=DTYPE)
        if self.n:
            K = matern52(self._X, self._Xc, self.hyper.outputscale)
            Vt = torch.linalg.solve_triangular(self._L, K, upper=False)
            var -= (Vt * Vt).sum(0)
            self._Vt[: self.n] = Vt
        self._var = var.to(CDTYPE)

    def rebuild(self, X: np.ndarray, noise: np.ndarray) -> None:
        """Factorize ``n`` observations at once."""
        self._X = self._scale(X)
        self._noise = torch.as_tensor(np.maximum(noise, NOISE_FLOOR), dtype=DTYPE)
        self.n = len(self._X)
        K = matern52(self._X, self._X, self.hyper.outputscale) + torch.diag(self._noise)
        self._L = _cholesky(K)
        self._refresh_v()

    def append(self, x: np.ndarray, noise: float) -> None:
        """Condition on one more observation at ``x`` ``(p,)`` (rank-one Cholesky update)."""
        xs = self._scale(np.asarray(x, dtype=float).reshape(1, -1))
        nz = max(float(noise), NOISE_FLOOR)
        os_ = self.hyper.outputscale
        n = self.n
        k_tr = matern52(self._X, xs, os_).reshape(-1)
        if n:
            l_vec = torch.linalg.solve_triangular(self._L, k_tr.unsqueeze(-1), upper=False)[:, 0]
        else:
            l_vec = torch.zeros(0, dtype=DTYPE)
        d2 = os_ + nz - float(l_vec @ l_vec)
        d = math.sqrt(max(d2, NOISE_FLOOR))
        L = torch.zeros((n + 1, n + 1), dtype=DTYPE)
        L[:n, :n] = self._L
        L[n, :n] = l_vec
        L[n, n] = d
        self._L = L
        k_c = matern52(self._Xc, xs, os_).reshape(-1)
        v = ((k_c - self._project(l_vec)) / d if n else k_c / d).to(CDTYPE)
        if n + 1 > self._Vt.shape[0]:
            grown = torch.zeros((2 * self._Vt.shape[0], len(self._Xc)), dtype=CDTYPE)
            grown[:n] = self._Vt[:n]
            self._Vt = grown
        self._Vt[n] = v
        self._var = self._var - v * v
        self._X = torch.cat([self._X, xs])
        self._noise = torch.cat([self._noise, torch.tensor([nz], dtype=DTYPE)])
        self.n = n + 1

    # ------------------------------------------------------------------ queries
    def _project(self, w: torch.Tensor) -> torch.Tensor:
        """``w @ Vt[:n]`` ``(N,)`` in float64 for a float64 ``w`` ``(n,)``."""
        return (w.to(CDTYPE) @ self._Vt[: self.n]).to(DTYPE)

    def _alpha(self, r: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(r, dtype=DTYPE)
        if len(t) != self.n:
            raise ValueError(f"r must have the {self.n} observed targets, but got {len(t)}")
        return torch.linalg.solve_triangular(self._L, t.unsqueeze(-1), upper=False)[:, 0]

    def candidates(
        self, r: np.ndarray, X_pending: np.ndarray | None = None, pending_noise: float = 1e-3
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and standard deviation ``(N,)`` at the candidates given targets ``r``.

        ``X_pending`` ``(q, p)`` are running trials: the variance is also conditioned on them
        (kriging believer: believing the posterior mean at a pending point leaves the mean
        unchanged and shrinks the variance around it), so concurrent suggestions spread out.
        """
        with torch.no_grad():
            if self.n:
                mu = self._project(self._alpha(r))
            else:
                mu = torch.zeros(len(self._Xc), dtype=DTYPE)
            var = self._var.to(DTYPE)
            if X_pending is not None and len(X_pending):
                var = var - self._pending_reduction(X_pending, pending_noise)
            return mu, var.clamp_min(0.0).sqrt()

    def _pending_reduction(self, X_pending: np.ndarray, noise: float) -> torch.Tensor:
        os_ = self.hyper.outputscale
        Xp = self._scale(X_pending)
        cov_cp = matern52(self._Xc, Xp, os_)
        cov_pp = matern52(Xp, Xp, os_)
        if self.n:
            Vp = torch.linalg.solve_triangular(
                self._L, matern52(self._X, Xp, os_), upper=False
            )  # (n, q)
            # One matrix-vector product per running trial: faster than a skinny GEMM here.
            cov_cp = cov_cp - torch.stack([self._project(Vp[:, j]) for j in range(len(Xp))], 1)
            cov_pp = cov_pp - Vp.T @ Vp
        cov_pp = cov_pp + max(noise, NOISE_FLOOR) * torch.eye(len(Xp), dtype=DTYPE)
        Lp = _cholesky(cov_pp)
        W = torch.linalg.solve_triangular(Lp, cov_cp.T, upper=False)  # (q, N)
        return (W * W).sum(0)

    def at(self, X_q: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation ``(q,)`` at arbitrary points ``X_q``."""
        with torch.no_grad():
            Xq = self._scale(X_q)
            os_ = self.hyper.outputscale
            if not self.n:
                return np.zeros(len(Xq)), np.full(len(Xq), math.sqrt(os_))
            W = torch.linalg.solve_triangular(self._L, matern52(self._X, Xq, os_), upper=False)
            mu = W.T @ self._alpha(r)
            var = (os_ - (W * W).sum(0)).clamp_min(0.0)
            return mu.numpy(), var.sqrt().numpy()


def _cholesky(K: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor, adding diagonal jitter only when the plain one fails."""
    eye = torch.eye(len(K), dtype=DTYPE)
    for jitter in JITTERS:
        L, info = torch.linalg.cholesky_ex(K + jitter * eye if jitter else K)
        if int(info) == 0:
            if jitter:
                log.warning("GP covariance needed jitter %.0e to factorize", jitter)
            return L
    from linear_operator.utils.errors import NotPSDError

    raise NotPSDError(f"GP covariance of size {len(K)} is not positive definite even with jitter")


# ------------------------------------------------------------------------------------ acquisition
def log_expected_improvement(mu: torch.Tensor, sigma: torch.Tensor, best: float) -> torch.Tensor:
    """``log E[max(f - best, 0)]`` for ``f ~ N(mu, sigma^2)``, accurate far into the tail
    (Ament et al. 2023): ``log sigma + log h(u)``, ``h(u) = phi(u) + u Phi(u)``, ``u = (mu-best)/sigma``.
    """
    sigma = sigma.clamp_min(1e-12)
    u = (mu - best) / sigma
    log_phi = -0.5 * u * u - 0.5 * math.log(2 * math.pi)
    # Upper branch: direct formula. Lower branch (u < -1): h(u) = phi(u) (1 - |u| R(|u|)) with
    # Mills' ratio R(z) = sqrt(pi/2) erfcx(z / sqrt 2), written with log1p to avoid cancellation.
    direct = torch.log(
        (torch.exp(log_phi) + u * torch.special.ndtr(u)).clamp_min(torch.finfo(DTYPE).tiny)
    )
    z = (-u).clamp_min(1.0)
    mills = math.sqrt(math.pi / 2) * torch.special.erfcx(z / math.sqrt(2.0))
    tail = log_phi + torch.log1p(-(z * mills).clamp_max(1.0 - 1e-16))
    return torch.log(sigma) + torch.where(u < -1.0, tail, direct)
