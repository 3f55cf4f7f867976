"""Known-answer checks of the GP helpers and candidate machinery: the cached posterior against
BoTorch's, rank-one appends against a full factorization, pending trials, log EI against the
closed form, the warm-start designs, robust standardization, and import hygiene."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from autopipe.search.candidates import greedy_maxmin, sobol_configs
from autopipe.search.gp import CandidatePosterior, Hyper, fit_hyper, log_expected_improvement
from autopipe.search.model_based import robust_standardization

from .helpers import finite_space, mixed_space


def _data(n: int = 25, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((n, 3))
    r = np.sin(5 * X[:, 0]) + X[:, 1]
    return X, r, np.full(n, 1e-3), rng.random((400, 3))


def test_posterior_matches_botorch() -> None:
    from botorch.models import SingleTaskGP
    from gpytorch.kernels import MaternKernel, ScaleKernel
    from gpytorch.means import ZeroMean

    X, r, noise, Xc = _data()
    hyper = Hyper(np.array([0.3, 0.6, 1.5]), 1.7)
    post = CandidatePosterior(Xc, hyper)
    post.rebuild(X, noise)
    mu, sd = post.candidates(r)
    k = ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=3))
    k.base_kernel.lengthscale = torch.tensor(hyper.lengthscale)[None]
    k.outputscale = torch.tensor(hyper.outputscale)
    model = SingleTaskGP(
        torch.tensor(X),
        torch.tensor(r)[:, None],
        torch.tensor(noise)[:, None],
        covar_module=k,
        mean_module=ZeroMean(),
        outcome_transform=None,
    )
    model.eval()
    with torch.no_grad():
        ref = model.posterior(torch.tensor(Xc))
    # float32 candidate-side storage: agreement to ~1e-5 on outputs of size ~1.
    assert torch.allclose(mu, ref.mean[:, 0], atol=1e-4)
    assert torch.allclose(sd, ref.variance[:, 0].sqrt(), atol=1e-4)


def test_rank_one_appends_equal_a_full_factorization() -> None:
    X, r, noise, Xc = _data()
    hyper = Hyper(np.array([0.3, 0.6, 1.5]), 1.7)
    full, inc = CandidatePosterior(Xc, hyper), CandidatePosterior(Xc, hyper)
    full.rebuild(X, noise)
    for x, nz in zip(X, noise, strict=True):
        inc.append(x, nz)
    (m1, s1), (m2, s2) = full.candidates(r), inc.candidates(r)
    assert float((m1 - m2).abs().max()) < 1e-4
    assert float((s1 - s2).abs().max()) < 1e-4


def test_pending_trials_shrink_variance_where_they_run_not_the_mean() -> None:
    X, r, noise, Xc = _data()
    post = CandidatePosterior(Xc, Hyper(np.array([0.3, 0.6, 1.5]), 1.7))
    post.rebuild(X, noise)
    mu0, sd0 = post.candidates(r)
    mu1, sd1 = post.candidates(r, Xc[:2], 1e-3)
    assert torch.equal(mu0, mu1)  # kriging believer: the mean is unchanged
    assert float(sd1[:2].max()) < 0.05 < float(sd0[:2].min())  # ~noise where the trials run
    assert bool((sd1 <= sd0 + 1e-6).all())  # conditioning never adds variance


def test_fit_recovers_short_lengthscale_on_the_relevant_input() -> None:
    X, r, noise, _ = _data(n=40)
    hyper, ok = fit_hyper(X, r, noise, Hyper.default(3), max_iter=100)
    assert ok
    # r varies fast in x0, slowly in x1 and not at all in x2.
    assert hyper.lengthscale[0] < hyper.lengthscale[1] < hyper.lengthscale[2]


def test_log_ei_matches_closed_form_and_stays_finite_in_the_tail() -> None:
    from scipy.stats import norm

    mu = torch.linspace(-3, 3, 13, dtype=torch.float64)
    sd = torch.full((13,), 0.7, dtype=torch.float64)
    u = mu.numpy() / 0.7
    ref = np.log(0.7 * (norm.pdf(u) + u * norm.cdf(u)))
    assert np.allclose(log_expected_improvement(mu, sd, 0.0).numpy(), ref, atol=1e-9)
    tail = log_expected_improvement(
        torch.tensor([-40.0, -80.0], dtype=torch.float64), torch.ones(2, dtype=torch.float64), 0.0
    )
    # Finite and decreasing where the naive formula underflows to log(0).
    assert bool(torch.isfinite(tail).all()) and float(tail[0]) > float(tail[1])


def test_greedy_maxmin_spreads_over_the_top_candidates() -> None:
    X = np.array([[0.0, 0.0], [0.01, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    s = np.array([5.0, 4.9, 4.0, 3.0, -9.0])
    rows = greedy_maxmin(X, s, 2, np.ones(5, bool), top=4, rng=np.random.default_rng(0))
    # The first is one of the two best; the second the farthest top candidate, never the
    # near-duplicate of the first nor the low-scored centre.
    assert rows[0] in (0, 1) and rows[1] == 2


def test_sobol_warm_start_is_distinct_valid_and_seeded() -> None:
    space = finite_space()
    a, b = sobol_configs(space, 6, seed=0), sobol_configs(space, 6, seed=1)
    assert len({space.config_key(c) for c in a}) == 6  # distinct
    for c in a:
        space.validate(c)
    assert a != b  # scrambling follows the seed
    assert all(mixed_space().validate(c) for c in sobol_configs(mixed_space(), 4, seed=0))


def test_robust_standardization() -> None:
    y = np.array([0.50, 0.52, 0.48, 0.51, 0.0])  # one diverged run
    m, scale = robust_standardization(y)
    assert m == 0.50 and 0.01 < scale < 0.05  # the outlier barely moves the scale
    assert robust_standardization(np.array([0.3, 0.3, 0.3])) == (0.3, 1.0)  # no spread yet
    assert robust_standardization(np.array([])) == (0.0, 1.0)


def test_importing_the_registry_imports_no_torch() -> None:
    code = "import sys, autopipe.search; print('torch' in sys.modules, 'botorch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
