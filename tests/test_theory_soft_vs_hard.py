"""The NTK margin estimator and the width bounds of Mandal, Lin & Srikant (2025)."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import LinearConstraint, minimize

from kdlib.claims import fit_slope
from kdlib.models import TwoLayerReLU
from kdlib.ntk import empirical_ntk, ntk_features, relu_ntk
from kdlib.theory import soft_vs_hard as th
from kdlib.theory.soft_vs_hard import _project_simplex


def _planted(gamma: float, n: int, d: int, seed: int):
    """Linearly separable unit-ball data whose max margin (no bias) is exactly ``gamma``.

    ``y_i x_i = gamma w + z_i`` with ``z_i`` orthogonal to the unit vector ``w``; two support
    points carry ``z`` and ``-z`` (so no unit vector beats ``gamma`` on both), the others sit
    farther out along ``w``.
    """
    rng = np.random.default_rng(seed)
    w = np.zeros(d)
    w[0] = 1.0
    z = rng.normal(size=(n, d))
    z[:, 0] = 0.0
    z *= 0.5 / np.linalg.norm(z, axis=1, keepdims=True)
    z[1] = -z[0]
    along = np.full(n, gamma)
    along[2:] += rng.uniform(0.05, 0.3, size=n - 2)
    signed = along[:, None] * w + z
    y = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    y[0], y[1] = 1.0, -1.0
    return signed * y[:, None], y


def test_orthogonal_pair_has_margin_one_half_by_hand():
    # K(x, x) = 1/2 and K(x1, x2) = 0 for orthogonal unit vectors: gamma^2 = min q^2/2 + (1-q)^2/2
    est = th.ntk_margin(torch.eye(2, dtype=torch.float64), torch.tensor([1.0, -1.0]))
    assert est.converged
    assert est.gamma == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_two_points_match_the_closed_form(seed):
    # labels (+1, -1): gamma^2 = min_q a q^2 + b (1-q)^2 + 2 c q (1-q) = (ab - c^2) / (a + b + 2c)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    k = relu_ntk(th.normalize_rows(x)).numpy()
    a, b, c = k[0, 0], k[1, 1], k[0, 1]
    expected = math.sqrt((a * b - c * c) / (a + b + 2 * c))
    est = th.ntk_margin(x, torch.tensor([1.0, -1.0]), rtol=1e-8)
    assert est.gamma == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("gamma", [0.3, 0.1, 0.02])
def test_planted_linear_margin_is_recovered(gamma):
    x, y = _planted(gamma, n=30, d=6, seed=int(gamma * 1000))
    est = th.kernel_margin(x @ x.T, y, rtol=1e-7, max_iter=200000)
    assert est.converged
    assert est.gamma == pytest.approx(gamma, rel=1e-5)
    assert est.lower <= gamma * (1 + 1e-9) and est.upper >= gamma * (1 - 1e-9)


def _scipy_margin(gram: np.ndarray, y: np.ndarray) -> float:
    """Independent reference: the hard-margin SVM without bias in kernel form (scipy's
    trust-region interior-point solver),
    ``min alpha^T K alpha  s.t.  y_i (K alpha)_i >= 1``, so ``gamma = (alpha^T K alpha)^{-1/2}``."""
    constraint = LinearConstraint(y[:, None] * gram, lb=1.0, ub=np.inf)
    res = minimize(
        lambda a: a @ gram @ a,
        x0=y / np.abs(gram @ y).min(),
        jac=lambda a: 2 * gram @ a,
        hess=lambda a: 2 * gram,
        constraints=[constraint],
        method="trust-constr",
        options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 5000},
    )
    assert res.constr_violation < 1e-8, res.message
    return 1.0 / math.sqrt(res.fun)


@pytest.mark.parametrize("seed", range(3))
def test_ntk_margin_agrees_with_scipy_slsqp(seed):
    gen = torch.Generator().manual_seed(seed)
    x = th.normalize_rows(torch.randn(24, 5, generator=gen, dtype=torch.float64))
    y = torch.sign(x[:, 0] * x[:, 1] + 0.1)  # an XOR-like, non-linear labelling
    gram = relu_ntk(x).numpy()
    reference = _scipy_margin(gram, y.numpy())
    est = th.ntk_margin(x, y, rtol=1e-8, max_iter=200000)
    assert est.gamma == pytest.approx(reference, rel=1e-4)


def test_certificate_bounds_and_max_margin_function():
    gen = torch.Generator().manual_seed(7)
    x = th.normalize_rows(torch.randn(40, 8, generator=gen, dtype=torch.float64))
    y = torch.sign(torch.randn(40, generator=gen, dtype=torch.float64))
    est = th.ntk_margin(x, y, rtol=1e-6)
    gram = relu_ntk(x).numpy()
    coef = est.coef
    assert coef @ gram @ coef == pytest.approx(1.0, rel=1e-9)  # unit RKHS norm
    margins = y.numpy() * (gram @ coef)
    assert margins.min() == pytest.approx(est.lower, rel=1e-7)
    assert est.lower <= est.gamma <= est.upper <= est.lower * (1 + 1e-6)
    assert np.all(est.weights >= 0) and est.weights.sum() == pytest.approx(1.0)


def test_non_separable_data_have_zero_margin():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    est = th.ntk_margin(x, torch.tensor([1.0, -1.0, 1.0]))
    assert est.gamma == 0.0 and est.upper == pytest.approx(0.0, abs=1e-6)


def test_batched_equals_one_problem_at_a_time_and_01_labels_are_accepted():
    gen = torch.Generator().manual_seed(3)
    x = th.normalize_rows(torch.randn(3, 15, 4, generator=gen, dtype=torch.float64))
    y01 = (torch.rand(3, 15, generator=gen) < 0.5).double()
    grams = torch.stack([relu_ntk(xi) for xi in x])
    batched = th.kernel_margin(grams, y01, rtol=1e-8)
    for i in range(3):
        single = th.kernel_margin(grams[i], 2 * y01[i] - 1, rtol=1e-8)
        assert batched.gamma[i] == pytest.approx(single.gamma, rel=1e-6)


def test_estimates_solved_in_parts_concatenate_in_order():
    gen = torch.Generator().manual_seed(4)
    x = th.normalize_rows(torch.randn(4, 12, 3, generator=gen, dtype=torch.float64))
    y = torch.where(x[..., 0] > 0, 1.0, -1.0).double()
    grams = torch.stack([relu_ntk(xi) for xi in x])
    whole = th.kernel_margin(grams, y, rtol=1e-8)
    parts = [th.kernel_margin(grams[:1], y[:1], rtol=1e-8), th.kernel_margin(grams[1:], y[1:])]
    joined = th.MarginEstimate.concatenate(parts)
    assert joined.gamma.shape == (4,) and joined.weights.shape == (4, 12)
    np.testing.assert_allclose(joined.gamma, whole.gamma, rtol=2e-4)
    assert joined.iterations == max(p.iterations for p in parts)
    assert joined.converged == (parts[0].converged and parts[1].converged)
    with pytest.raises(ValueError, match="parts"):
        th.MarginEstimate.concatenate([])
    with pytest.raises(ValueError, match="batched"):
        th.MarginEstimate.concatenate([th.kernel_margin(grams[0], y[0])])


def test_empirical_ntk_margin_tends_to_the_limiting_margin():
    gen = torch.Generator().manual_seed(11)
    x = th.normalize_rows(torch.randn(20, 3, generator=gen, dtype=torch.float64))
    y = torch.sign(x[:, 0] + 0.3 * x[:, 1] ** 2 - 0.1)
    limit = th.ntk_margin(x, y, rtol=1e-7).gamma
    net = TwoLayerReLU(4, 3, 40000, seed=5, dtype=torch.float64)
    finite = th.kernel_margin(empirical_ntk(net, x), y.expand(4, -1), rtol=1e-7).gamma
    # the empirical kernel's entries deviate by O(m^{-1/2}) = 0.5%; allow 5x that
    np.testing.assert_allclose(finite, limit, rtol=0.025)


def test_warm_start_from_the_limiting_kernel_gives_the_same_certified_margin():
    gen = torch.Generator().manual_seed(12)
    x = th.normalize_rows(torch.randn(120, 5, generator=gen, dtype=torch.float64))
    y = torch.sign(x[:, 0] + 0.5 * x[:, 1] * x[:, 2] - 0.05)
    limit = th.ntk_margin(x, y)
    net = TwoLayerReLU(3, 5, 4096, seed=6, dtype=torch.float64)
    gram, labels = empirical_ntk(net, x), y.expand(3, -1)
    cold = th.kernel_margin(gram, labels)
    warm = th.kernel_margin(gram, labels, init=np.tile(limit.weights, (3, 1)))
    assert cold.converged and warm.converged
    assert np.all(warm.lower <= cold.upper) and np.all(cold.lower <= warm.upper)  # same optimum
    np.testing.assert_allclose(warm.gamma, cold.gamma, rtol=2e-4)
    assert warm.iterations <= cold.iterations
    # one problem, and an init that is only proportional to a point of the simplex
    single = th.kernel_margin(gram[0], labels[0], init=7.0 * torch.as_tensor(limit.weights))
    assert single.gamma == pytest.approx(cold.gamma[0], rel=2e-4)


@pytest.mark.parametrize(
    "init, match",
    [
        (np.ones(4), "init must have shape"),
        (np.array([1.0, -1.0, 1.0]), "non-negative"),
        (np.array([1.0, np.nan, 1.0]), "finite"),
        (np.zeros(3), "positive entry"),
    ],
)
def test_kernel_margin_rejects_a_bad_warm_start(init, match):
    with pytest.raises(ValueError, match=match):
        th.kernel_margin(
            torch.eye(3, dtype=torch.float64), torch.tensor([1.0, -1.0, 1.0]), init=init
        )


def test_simplex_projection_is_the_euclidean_projection():
    v = torch.randn(50, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    p = _project_simplex(v)
    assert torch.all(p >= 0) and torch.allclose(p.sum(-1), torch.ones(50, dtype=torch.float64))
    # variational inequality: (v - p) . (e_j - p) <= 0 for every vertex e_j
    residual = v - p
    vertex_terms = residual - (residual * p).sum(-1, keepdim=True)
    assert vertex_terms.max() <= 1e-12
    inside = torch.softmax(v, dim=-1)
    assert torch.allclose(_project_simplex(inside), inside)


def test_kernel_margin_validates_its_inputs():
    good = torch.eye(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="symmetric"):
        th.kernel_margin(torch.triu(torch.ones(3, 3)), torch.ones(3))
    with pytest.raises(ValueError, match="labels must have shape"):
        th.kernel_margin(good, torch.ones(4))
    with pytest.raises(ValueError, match="labels must be in"):
        th.kernel_margin(good, torch.tensor([1.0, 2.0, -1.0]))
    with pytest.raises(ValueError, match="rtol"):
        th.kernel_margin(good, torch.ones(3), rtol=0)
    with pytest.raises(ValueError, match="gram must have shape"):
        th.kernel_margin(torch.ones(3), torch.ones(3))


def test_width_bounds_have_the_stated_exponents_and_ratio():
    gammas = np.logspace(-2, -0.5, 7)
    eps = 0.05
    soft = th.soft_label_width(gammas, eps)
    hard = th.hard_label_width(gammas, eps)
    assert fit_slope(gammas, soft) == pytest.approx(th.SOFT_WIDTH_EXPONENT)
    assert fit_slope(gammas, hard) == pytest.approx(th.HARD_WIDTH_EXPONENT)
    np.testing.assert_allclose(hard / soft, th.width_ratio(gammas, eps))
    assert th.soft_label_width(0.5, 0.1) == pytest.approx(1 / (0.25 * 0.1))
    assert th.hard_label_width(0.5, 0.1, constant=2.0) == pytest.approx(2 * math.log(10) / 0.0625)
    epsilons = np.array([0.2, 0.1, 0.05, 0.01])
    assert fit_slope(epsilons, th.soft_label_width(0.1, epsilons)) == pytest.approx(-1.0)


@pytest.mark.parametrize("bad", [{"gamma": 0.0}, {"gamma": 1.5}, {"eps": 0.0}, {"eps": 1.0}])
def test_width_bounds_validate_gamma_and_eps(bad):
    args = {"gamma": 0.1, "eps": 0.1, **bad}
    with pytest.raises(ValueError, match="gamma|eps"):
        th.soft_label_width(**args)


def test_pointwise_margin_of_orthogonal_pair_matches_the_hand_computation():
    # z.x1 and z.x2 are independent signs: E||g|| = (sqrt(q^2 + (1-q)^2) + 1) / 4, min at q = 1/2
    exact = (1 / math.sqrt(2) + 1) / 4
    est = th.sup_norm_margin(
        torch.eye(2, dtype=torch.float64), torch.tensor([1.0, -1.0]), n_directions=40000
    )
    assert est.converged and est.lower <= est.upper
    # sample-average error: std of ||g|| is about 0.2, so 3 standard errors is 0.003
    assert est.gamma == pytest.approx(exact, abs=0.003)


def test_pointwise_margin_is_at_most_the_rkhs_margin():
    gen = torch.Generator().manual_seed(2)
    x = th.normalize_rows(torch.randn(8, 3, generator=gen, dtype=torch.float64))
    y = torch.sign(x[:, 0] + 0.2)
    rkhs = th.ntk_margin(x, y, rtol=1e-8).gamma
    pointwise = th.sup_norm_margin(x, y, n_directions=4000, rtol=1e-2, max_iter=4000)
    assert pointwise.lower <= pointwise.upper
    assert pointwise.upper <= rkhs * 1.03  # Jensen, up to the sampling error of the average


# -- the kernel-limit teacher --------------------------------------------------------------------


def _unit_points(n: int, d: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = th.normalize_rows(torch.randn(n, d, generator=gen, dtype=torch.float64))
    y = (torch.randn(n, generator=gen) > 0).double()
    return x, y


def test_kernel_teacher_first_step_by_hand():
    x, y = _unit_points(12, 4, seed=0)
    gram = relu_ntk(x)
    out = th.kernel_teacher(gram, y, steps=1, lr=3.0)
    # from f_0 = 0: alpha_1 = -(lr / n) (sigmoid(0) - y) = (lr / n) (y - 1/2)
    alpha = 3.0 / 12 * (y - 0.5)
    torch.testing.assert_close(out.coef[0], alpha)
    torch.testing.assert_close(out.logits[0], gram @ alpha)
    torch.testing.assert_close(out.rkhs_norm[0], torch.sqrt(alpha @ gram @ alpha))
    zero = th.kernel_teacher(gram, y, steps=0, lr=3.0)
    assert torch.all(zero.logits == 0) and math.isclose(float(zero.loss), math.log(2))


def test_kernel_teacher_is_gradient_descent_on_the_linearised_network():
    """With the empirical NTK of a finite network, the kernel recursion must equal autograd
    gradient descent on that network's linearisation W(0) + Delta (an independent reference)."""
    x, y = _unit_points(16, 5, seed=1)
    net = TwoLayerReLU(1, 5, 64, symmetric_init=True, seed=2, dtype=torch.float64)
    features = ntk_features(net, x)[0]  # (n, P): f_lin(x) = features @ delta
    delta = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
    for _ in range(40):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(features @ delta, y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta -= 2.0 * grad
    out = th.kernel_teacher(empirical_ntk(net, x), y, steps=40, lr=2.0)
    torch.testing.assert_close(out.logits[0], (features @ delta).detach())
    torch.testing.assert_close(out.rkhs_norm[0], delta.detach().norm())
    final = torch.nn.functional.binary_cross_entropy_with_logits(features @ delta.detach(), y)
    torch.testing.assert_close(out.loss[0], final)


def test_wide_networks_approach_the_kernel_teacher():
    x, y = _unit_points(20, 6, seed=3)
    x_test, _ = _unit_points(10, 6, seed=4)
    out = th.kernel_teacher(relu_ntk(x), y, steps=60, lr=2.0, cross_gram=relu_ntk(x_test, x))
    errors, distances = [], []
    for width in (256, 16384):
        net = TwoLayerReLU(4, 6, width, symmetric_init=True, seed=width, dtype=torch.float64)
        start = net.hidden.detach().clone()
        for _ in range(60):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                net(x)[..., 0], y.expand(4, -1), reduction="none"
            )
            (grad,) = torch.autograd.grad(loss.mean(-1).sum(), net.hidden)
            with torch.no_grad():
                net.hidden -= 2.0 * grad
        with torch.no_grad():
            errors.append(float((net(x_test)[..., 0] - out.test_logits).abs().mean()))
            distances.append((net.hidden - start).flatten(1).norm(dim=1))
    assert errors[1] < errors[0] / 3  # 64 times the width: m^{-1/2} predicts a factor of 8
    assert errors[1] < 0.02
    torch.testing.assert_close(distances[1], out.rkhs_norm.expand(4), rtol=0.02, atol=0)


def test_kernel_teacher_is_batched_and_validates_its_inputs():
    x, y = _unit_points(8, 3, seed=5)
    gram = relu_ntk(x)
    one = th.kernel_teacher(gram, y, steps=5, lr=1.0)
    both = th.kernel_teacher(torch.stack([gram, gram]), torch.stack([y, 1 - y]), 5, 1.0)
    torch.testing.assert_close(both.logits[0], one.logits[0])
    torch.testing.assert_close(both.logits[1], -one.logits[0])  # flipped labels, mirrored
    with pytest.raises(ValueError, match="steps"):
        th.kernel_teacher(gram, y, steps=-1, lr=1.0)
    with pytest.raises(ValueError, match="lr"):
        th.kernel_teacher(gram, y, steps=1, lr=0.0)
    with pytest.raises(ValueError, match="square"):
        th.kernel_teacher(gram[:, :4], y, steps=1, lr=1.0)
    with pytest.raises(ValueError, match="labels must have shape"):
        th.kernel_teacher(gram, y[:4], steps=1, lr=1.0)
    with pytest.raises(ValueError, match="hard labels"):
        th.kernel_teacher(gram, y * 0.5, steps=1, lr=1.0)
    with pytest.raises(ValueError, match="cross_gram"):
        th.kernel_teacher(gram, y, steps=1, lr=1.0, cross_gram=gram[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        th.kernel_teacher(gram * float("nan"), y, steps=1, lr=1.0)
