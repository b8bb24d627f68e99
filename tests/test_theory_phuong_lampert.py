"""Closed forms of Phuong & Lampert (2019) against independent references: explicit matrix
formulas, long gradient-descent runs, adaptive quadrature and Monte Carlo."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special

from kdlib.data.phuong_lampert import AngularDistribution, sample_angular
from kdlib.losses import binary_cross_entropy
from kdlib.models import DeepLinearStudent, LinearStudent
from kdlib.theory import phuong_lampert as theory
from kdlib.train import train

DT = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensor programs: one CPU thread avoids spin-waiting on a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _data(replicas=3, n=4, d=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(replicas, n, d, generator=gen, dtype=DT)
    w_star = torch.randn(d, generator=gen, dtype=DT)
    return x, w_star


def test_span_projection_matches_explicit_formula():
    x, w_star = _data()
    got = theory.span_projection(x, w_star)
    for r in range(x.shape[0]):
        a = x[r].T  # (d, n), full column rank
        expected = a @ torch.linalg.solve(a.T @ a, a.T @ w_star)
        torch.testing.assert_close(got[r], expected, atol=1e-12, rtol=0)


def test_span_projection_is_identity_when_inputs_span_the_space():
    x, w_star = _data(n=12, d=5)
    torch.testing.assert_close(theory.span_projection(x, w_star), w_star.expand(3, 5))


def test_span_projection_ignores_masked_rows():
    x, w_star = _data(n=6, d=9)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0], dtype=DT)
    torch.testing.assert_close(
        theory.span_projection(x, w_star, mask), theory.span_projection(x[:, :3], w_star)
    )


@pytest.mark.parametrize("with_init", [False, True])
def test_linear_limit_matches_long_gradient_descent(with_init):
    x, w_star = _data(replicas=2, n=3, d=6, seed=1)
    w0 = torch.randn(2, 6, generator=torch.Generator().manual_seed(5), dtype=DT)
    model = LinearStudent(2, 6, dtype=DT)
    if with_init:
        with torch.no_grad():
            model.weight.copy_(w0[..., None])
    probs = torch.sigmoid(x @ w_star)
    lr = theory.gd_step_size(x)
    train(model, lambda m, _: binary_cross_entropy(m(x), probs), 1500, lr, progress=False)
    expected = theory.linear_student_limit(x, w_star, w0 if with_init else None)
    torch.testing.assert_close(model.weight[..., 0].detach(), expected, atol=1e-9, rtol=0)


def test_deep_limit_with_depth_one_is_the_linear_limit():
    x, w_star = _data(seed=2)
    w0 = torch.randn(3, 7, generator=torch.Generator().manual_seed(3), dtype=DT)
    torch.testing.assert_close(
        theory.deep_linear_limit(x, w_star, w0, depth=1),
        theory.linear_student_limit(x, w_star, w0),
    )


def test_deep_limit_matches_small_step_gradient_descent():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 2, 5, generator=gen, dtype=DT)
    w_star = torch.randn(5, generator=gen, dtype=DT)
    probs = torch.sigmoid(x @ w_star)
    model = DeepLinearStudent(
        1, 5, depth=2, width=4, init_scale=0.3, init="balanced", seed=9, dtype=DT
    )
    with torch.no_grad():
        w0 = model.end_to_end()[..., 0]
        if (w0 @ (x[0].T @ (0.5 - probs[0]))) > 0:  # start with L(w0) < L(0)
            model.layers[-1].mul_(-1)
        w0 = model.end_to_end()[..., 0].clone()
    lr = float(theory.gd_step_size(x)[0]) / 4
    train(model, lambda m, _: binary_cross_entropy(m(x), probs), 3000, lr, progress=False)
    got = model.end_to_end()[..., 0].detach()
    expected = theory.deep_linear_limit(x, w_star, w0, depth=2)
    assert torch.linalg.norm(got - expected) / torch.linalg.norm(expected) < 5e-3
    # and the out-of-span remainder is far from zero: the zero-init limit would be wrong
    projection = theory.linear_student_limit(x, w_star)
    assert torch.linalg.norm(got - projection) > 10 * torch.linalg.norm(got - expected)


def test_deep_limit_rejects_zero_init():
    x, w_star = _data()
    with pytest.raises(ValueError, match="non-zero"):
        theory.deep_linear_limit(x, w_star, torch.zeros(3, 7, dtype=DT), depth=2)


def test_contraction_factor_hand_solvable():
    # one input in one dimension: H = sigma'(z) x^2, eta = 4 / x^2, rho = |1 - 4 sigma'(z)|
    x = torch.tensor([[[2.0]]], dtype=DT)
    w = torch.tensor([[0.7]], dtype=DT)
    lr = theory.gd_step_size(x)
    torch.testing.assert_close(lr, torch.tensor([1.0], dtype=DT))
    z = torch.tensor(1.4, dtype=DT)
    expected = abs(1 - 4 * torch.sigmoid(z) * torch.sigmoid(-z))
    torch.testing.assert_close(theory.gd_contraction(x, w, lr)[0], expected)


def test_slowest_direction_is_an_eigenvector_of_the_error_map():
    x, w_star = _data(n=3, d=5, seed=6)
    w = theory.linear_student_limit(x, w_star)
    lr = theory.gd_step_size(x)
    rho, u = theory.gd_linearisation(x, w, lr)
    z = (x @ w[..., None])[..., 0]
    curv = torch.sigmoid(z) * torch.sigmoid(-z)
    hessian = (x.transpose(1, 2) * curv[:, None, :]) @ x / x.shape[1]
    step = u - lr[:, None] * (hessian @ u[..., None])[..., 0]
    torch.testing.assert_close(step.norm(dim=-1), rho)
    assert torch.all(u.norm(dim=-1) > 0.999)


def _risk_by_quadrature(gamma, d, dist):
    """Independent reference: integrate over the boundary angle phi instead of |t|."""

    def miss(phi):  # P[t < -tan(phi)/tan(gamma)], t a coordinate on the sphere of R^{d-1}
        c = min(math.tan(phi) / math.tan(gamma), 1.0)
        return 0.5 * special.betainc((d - 2) / 2, 0.5, 1 - c * c)

    if dist.kind == "polynomial":
        u_max = min(1.0, (2 * gamma / math.pi) ** dist.kappa)
        value = integrate.quad(
            lambda u: miss(math.pi / 2 * u ** (1 / dist.kappa)), 0, u_max, epsabs=1e-13, limit=200
        )
        return value[0]
    if gamma <= dist.margin:
        return 0.0
    width = math.pi / 2 - dist.margin
    return integrate.quad(lambda p: miss(p) / width, dist.margin, gamma, epsabs=1e-13)[0]


@pytest.mark.parametrize("d", [3, 10, 200])
@pytest.mark.parametrize(
    "dist",
    [
        AngularDistribution("polynomial", kappa=0.5),
        AngularDistribution("polynomial", kappa=2.0),
        AngularDistribution("margin", margin=0.2),
    ],
)
def test_transfer_risk_matches_adaptive_quadrature(d, dist):
    gammas = np.array([0.01, 0.1, 0.4, 0.9, 1.4])
    got = theory.transfer_risk_of_angle(gammas, d, dist)
    expected = np.array([_risk_by_quadrature(g, d, dist) for g in gammas])
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-6)


def test_transfer_risk_matches_monte_carlo():
    dist = AngularDistribution("polynomial", kappa=1.5)
    d, gamma = 20, 0.4
    x, _ = sample_angular(1, 200_000, d, dist, torch.Generator().manual_seed(0))
    w = torch.zeros(d, dtype=DT)
    w[0], w[3] = math.cos(gamma), math.sin(gamma)
    measured = ((x[0] @ w > 0) != (x[0, :, 0] > 0)).double().mean().item()
    predicted = float(theory.transfer_risk_of_angle(gamma, d, dist))
    assert abs(measured - predicted) < 4 * math.sqrt(predicted / 200_000)


def test_transfer_risk_symmetry_and_monotonicity():
    dist = AngularDistribution("polynomial", kappa=1.0)
    gammas = np.linspace(0, math.pi, 41)
    risk = theory.transfer_risk_of_angle(gammas, 12, dist)
    assert risk[0] == 0 and risk[-1] == 1
    np.testing.assert_allclose(risk + risk[::-1], 1.0, atol=1e-12)
    assert np.all(np.diff(risk) >= 0)
    assert risk[20] == pytest.approx(0.5)


def test_risk_bound_hand_values():
    dist = AngularDistribution("polynomial", kappa=1.0)
    # n = 1: F(t) + F(pi/2 - t) = 2t/pi + 1 - 2t/pi = 1 for every t
    assert theory.risk_bound(1, dist) == pytest.approx(1.0)
    bounds = theory.risk_bound([1, 2, 4, 16, 256], dist)
    assert np.all(np.diff(bounds) < 0)
    # n = 2, kappa = 1: min_u u + (1 - u)^2 at u = 1/2 gives 3/4
    assert theory.risk_bound(2, dist) == pytest.approx(0.75, abs=1e-6)


@pytest.mark.parametrize("kappa", [0.5, 1.0, 2.0])
def test_risk_bound_below_corollary_rate(kappa):
    dist = AngularDistribution("polynomial", kappa=kappa)
    sizes = np.array([3, 10, 100, 1000, 10000])
    assert np.all(theory.risk_bound(sizes, dist) <= theory.polynomial_rate(sizes, kappa))


def test_margin_bound_below_corollary_and_equal_for_large_n():
    dist = AngularDistribution("margin", margin=0.3)
    sizes = np.array([1, 5, 20, 80])
    bound, rate = theory.risk_bound(sizes, dist), theory.margin_rate(sizes, 0.3)
    assert np.all(bound <= rate * (1 + 1e-12))
    np.testing.assert_allclose(bound[2:], rate[2:], rtol=1e-9)


def test_risk_bound_holds_for_the_projection_in_monte_carlo():
    """The bound is an upper bound on E[F(angle of the closest input to the axis)], itself an
    upper bound on the risk: check the middle quantity by sampling."""
    dist = AngularDistribution("polynomial", kappa=1.0)
    n = 8
    _, phi = sample_angular(20000, n, 5, dist, torch.Generator().manual_seed(1))
    closest = (math.pi / 2 - phi).min(dim=1).values.numpy()
    middle = dist.boundary_cdf(closest).mean()
    assert middle <= theory.risk_bound(n, dist)


def test_input_validation():
    x, w_star = _data()
    with pytest.raises(ValueError):
        theory.span_projection(x[0], w_star)
    with pytest.raises(ValueError):
        theory.span_projection(x, w_star[:3])
    with pytest.raises(ValueError):
        theory.deep_linear_limit(x, w_star, w_star, depth=0)
    dist = AngularDistribution()
    with pytest.raises(ValueError):
        theory.transfer_risk_of_angle([-0.1], 10, dist)
    with pytest.raises(ValueError):
        theory.transfer_risk_of_angle([0.1], 2, dist)
    with pytest.raises(TypeError):
        theory.transfer_risk_of_angle([0.1], 10, "kappa=1")
    with pytest.raises(ValueError):
        theory.risk_bound(0, dist)
    with pytest.raises(ValueError):
        theory.polynomial_rate(2, 1.0)
    with pytest.raises(ValueError):
        theory.margin_rate(3, 1.0)
