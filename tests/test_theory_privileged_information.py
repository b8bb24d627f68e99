"""Closed forms of the kernel-regime analysis of knowledge transfer with privileged information,
checked against independent references: hand-solvable Gram matrices, the recursion iterated step
by step, and gradient descent on an explicit linear model with ``H = J J^T``."""

import math

import pytest
import torch

from kdlib.theory import privileged_information as th


@pytest.fixture(autouse=True)
def _float64():
    """Every tensor in this module is float64 (restored afterwards for the other tests)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return x / x.norm(dim=1, keepdim=True)


def _linear_gd(features, target, lr, steps, test_features=None):
    """Gradient descent on ``1/(2n) |J theta - ytilde|^2`` from ``theta = 0``: the kernel model
    with Gram matrix ``J J^T``, written out independently of the closed forms."""
    n = features.shape[0]
    theta = torch.zeros(features.shape[1])
    outputs = [features @ theta]
    for _ in range(steps):
        theta = theta - lr * features.T @ (features @ theta - target) / n
        outputs.append(features @ theta)
    test = None if test_features is None else test_features @ theta
    return torch.stack(outputs), theta, test


def test_gram_matrix_hand_solved_cases():
    x = torch.eye(3)  # orthogonal: off-diagonal <x,x'> = 0; diagonal theta = 0 -> 1/2
    torch.testing.assert_close(th.gram_matrix(x), 0.5 * torch.eye(3))
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # theta = pi -> (pi - pi) = 0
    torch.testing.assert_close(th.gram_matrix(opposite), torch.tensor([[0.5, 0.0], [0.0, 0.5]]))
    sixty = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2]])  # cos = 1/2, theta = pi/3
    expected = 0.5 * (math.pi - math.pi / 3) / (2 * math.pi)
    assert th.gram_matrix(sixty)[0, 1].item() == pytest.approx(expected)


def test_gram_matrix_matches_monte_carlo_features():
    x = _unit(6, 4, 0)
    w = torch.randn(200_000, 4, generator=torch.Generator().manual_seed(1))
    gates = (x @ w.T > 0).double()
    monte_carlo = (gates @ gates.T / w.shape[0]) * (x @ x.T)
    torch.testing.assert_close(th.gram_matrix(x), monte_carlo, atol=5e-3, rtol=0)


def test_spectrum_descending_and_reconstructs():
    gram = th.gram_matrix(_unit(8, 3, 2))
    values, vectors = th.spectrum(gram)
    assert torch.all(values[:-1] >= values[1:])
    torch.testing.assert_close(vectors @ torch.diag(values) @ vectors.T, gram)


def test_mixed_target_is_the_minimiser_of_the_mixed_loss():
    gen = torch.Generator().manual_seed(3)
    y, phi = torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    for rho in (0.0, 0.3, 1.0):
        u = torch.zeros(5, requires_grad=True)
        opt = torch.optim.LBFGS([u], max_iter=100, tolerance_grad=1e-12)

        def closure(rho=rho, u=u, opt=opt):
            opt.zero_grad()
            loss = (1 - rho) * ((u - y) ** 2).sum() + rho * ((u - phi) ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        torch.testing.assert_close(u.detach(), th.mixed_target(y, phi, rho), atol=1e-8, rtol=0)
    both = th.mixed_target(y, phi, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(both[0], y)
    torch.testing.assert_close(both[1], phi)


def test_kernel_outputs_equal_the_iterated_recursion():
    x = _unit(10, 5, 4)
    gram = th.gram_matrix(x)
    lr = th.stable_learning_rate(gram, 0.8)
    target = torch.randn(2, 10, generator=torch.Generator().manual_seed(5))
    start = torch.randn(2, 10, generator=torch.Generator().manual_seed(6))
    u, iterated = start.clone(), [start.clone()]
    for _ in range(30):
        u = u - lr * (u - target) @ gram / 10
        iterated.append(u.clone())
    closed = th.kernel_outputs(gram, target, range(31), lr, initial=start)
    torch.testing.assert_close(closed, torch.stack(iterated), atol=1e-10, rtol=0)


def test_each_eigen_residual_decays_at_its_own_rate():
    gram = th.gram_matrix(_unit(7, 3, 7))
    values, _ = th.spectrum(gram)
    lr = th.stable_learning_rate(gram, 0.5)
    target = torch.randn(7, generator=torch.Generator().manual_seed(8))
    coeffs = th.eigen_residuals(gram, target, [0, 1, 5], lr)
    torch.testing.assert_close(coeffs[1] / coeffs[0], 1 - lr * values / 7)
    torch.testing.assert_close(coeffs[2] / coeffs[0], (1 - lr * values / 7) ** 5)


def test_asymptotic_training_errors():
    gen = torch.Generator().manual_seed(9)
    y, phi = torch.randn(6, generator=gen), torch.randn(6, generator=gen)
    rho = torch.tensor([0.0, 0.4, 1.0])
    against_data, against_teacher = th.asymptotic_training_error(y, phi, rho)
    target = th.mixed_target(y, phi, rho)
    torch.testing.assert_close(against_data, th.training_error(target, y))
    torch.testing.assert_close(against_teacher, th.training_error(target, phi))
    gram = th.gram_matrix(_unit(6, 4, 10))
    converged = th.kernel_outputs(gram, target, [20_000], th.stable_learning_rate(gram))[0]
    torch.testing.assert_close(th.training_error(converged, y), against_data, atol=1e-8, rtol=0)


def test_iterations_to_tolerance_equals_brute_force():
    gram = th.gram_matrix(_unit(9, 4, 11))
    lr = th.stable_learning_rate(gram, 0.9)
    targets = torch.randn(3, 9, generator=torch.Generator().manual_seed(12))
    for tol in (0.5, 0.1, 0.01):
        found = th.iterations_to_tolerance(gram, targets, lr, tol)
        for target, t_found in zip(targets, found, strict=True):
            u, t = torch.zeros(9), 0
            while ((u - target) ** 2).sum() > tol * (target**2).sum():
                u = u - lr * gram @ (u - target) / 9
                t += 1
            assert int(t_found) == t


def test_iterations_upper_bound_is_an_upper_bound():
    for seed in range(5):
        gram = th.gram_matrix(_unit(12, 3, 20 + seed))
        values, vectors = th.spectrum(gram)
        lr = th.stable_learning_rate(gram)
        target = torch.randn(12, generator=torch.Generator().manual_seed(seed))
        energy = (target @ vectors) ** 2
        for tol in (0.2, 0.05):
            exact = th.iterations_to_tolerance(gram, target, lr, tol)
            bound = th.iterations_upper_bound(values, energy, lr, 12, tol)
            assert exact <= bound


def test_aligned_target_needs_fewer_iterations():
    gram = th.gram_matrix(_unit(10, 3, 30))
    values, vectors = th.spectrum(gram)
    lr = th.stable_learning_rate(gram, 0.9)
    top, bottom = vectors[:, 0], vectors[:, -1]
    fast = th.iterations_to_tolerance(gram, top, lr, 0.01)
    slow = th.iterations_to_tolerance(gram, bottom, lr, 0.01)
    assert fast < slow
    # a pure eigenvector decays geometrically: t = ceil(log(tol) / (2 log(1 - lr lam / n)))
    factor = 1 - lr * values[-1].item() / 10
    assert int(slow) == math.ceil(math.log(0.01) / (2 * math.log(factor)))


def test_crossing_interval_hand_example():
    predicted = torch.tensor([10.0, 8.0, 6.0, 4.0, 2.0, 1.0])
    bound = torch.tensor([0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert th.crossing_interval(predicted, bound, 5.0) == (2, 3)
    assert th.crossing_interval(predicted, torch.zeros(6), 0.5) == (6, 6)


def test_distance_and_test_outputs_match_an_explicit_linear_model():
    gen = torch.Generator().manual_seed(40)
    features, test_features = torch.randn(8, 30, generator=gen), torch.randn(5, 30, generator=gen)
    gram, cross = features @ features.T, test_features @ features.T
    target = torch.randn(8, generator=gen)
    lr = th.stable_learning_rate(gram, 0.7)
    outputs, theta, test = _linear_gd(features, target, lr, 25, test_features)
    torch.testing.assert_close(th.kernel_outputs(gram, target, range(26), lr), outputs)
    torch.testing.assert_close(th.distance_from_init(gram, target, [25], lr)[0], theta.norm())
    torch.testing.assert_close(th.kernel_test_outputs(cross, gram, target, [25], lr)[0], test)
    limit = th.distance_from_init(gram, target, [100_000], lr)[0]
    torch.testing.assert_close(limit, torch.sqrt(target @ torch.linalg.solve(gram, target)))


def test_generalization_bound_formula():
    gram = th.gram_matrix(_unit(7, 5, 41))
    target = torch.randn(7, generator=torch.Generator().manual_seed(42))
    expected = torch.sqrt(2 * target @ torch.linalg.solve(gram, target) / 7)
    torch.testing.assert_close(th.generalization_bound(gram, target), expected)


def test_deviation_bound_holds_for_a_drifting_kernel():
    gen = torch.Generator().manual_seed(50)
    n, steps = 8, 60
    features = torch.randn(n, 40, generator=gen)
    gram = features @ features.T
    lr = th.stable_learning_rate(gram, 0.5)
    target = torch.randn(n, generator=gen)
    u, errors = torch.zeros(n), []
    outputs = [u.clone()]
    for t in range(steps):  # a kernel that drifts: features rotate slowly
        drifted = features + 0.02 * math.sqrt(t + 1) * torch.randn(n, 40, generator=gen)
        kernel_t = drifted @ drifted.T
        errors.append(torch.linalg.matrix_norm(kernel_t - gram, ord=2))
        u = u - lr * kernel_t @ (u - target) / n
        outputs.append(u.clone())
    predicted = th.kernel_outputs(gram, target, range(steps + 1), lr)
    norms = (predicted - target).norm(dim=-1)
    errors.append(errors[-1])
    bound = th.deviation_bound(torch.stack(errors), norms, lr, n)
    deviation = (torch.stack(outputs) - predicted).norm(dim=-1)
    assert torch.all(deviation <= bound + 1e-12)
    assert bound[0] == 0
    zero = th.deviation_bound(torch.zeros(steps + 1), norms, lr, n)
    assert torch.all(zero == 0)


def test_tracking_bound_holds_with_drift_and_remainders():
    """A network-like recursion: a drifting kernel plus a non-linear remainder each step. The
    vector-form bound holds and is never weaker than the operator-norm one (no remainder)."""
    gen = torch.Generator().manual_seed(51)
    n, steps = 8, 60
    features = torch.randn(n, 40, generator=gen)
    gram = features @ features.T
    lr = th.stable_learning_rate(gram, 0.9)
    target = torch.randn(n, generator=gen)
    u, lin = torch.zeros(n), torch.zeros(n)
    outputs, drift_terms, remainders, op_errors = [u.clone()], [], [], []
    for t in range(steps):
        drifted = features + 0.02 * math.sqrt(t + 1) * torch.randn(n, 40, generator=gen)
        kernel_t = drifted @ drifted.T
        remainder = 1e-3 * torch.randn(n, generator=gen)
        drift_terms.append(lr / n * ((kernel_t - gram) @ (lin - target)).norm())
        op_errors.append(torch.linalg.matrix_norm(kernel_t - gram, ord=2))
        remainders.append(remainder.norm())
        u = u - lr * kernel_t @ (u - target) / n + remainder
        lin = lin - lr * gram @ (lin - target) / n
        outputs.append(u.clone())
    predicted = th.kernel_outputs(gram, target, range(steps + 1), lr)  # here u_lin = u_kernel
    bound = th.tracking_bound(
        torch.zeros(steps + 1), torch.stack(drift_terms), torch.stack(remainders)
    )
    deviation = (torch.stack(outputs) - predicted).norm(dim=-1)
    assert torch.all(deviation <= bound + 1e-12)
    assert bound[0] == 0
    norms = (predicted - target).norm(dim=-1)
    op_bound = th.deviation_bound(torch.stack([*op_errors, op_errors[-1]]), norms, lr, n)
    no_remainder = th.tracking_bound(
        torch.zeros(steps + 1), torch.stack(drift_terms), torch.zeros(steps)
    )
    assert torch.all(no_remainder <= op_bound + 1e-12)


def test_tracking_bound_validates():
    with pytest.raises(ValueError, match="linear_gap"):
        th.tracking_bound(torch.zeros(3), torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="remainders"):
        th.tracking_bound(torch.zeros(4), torch.zeros(3), -torch.ones(3))
    with pytest.raises(TypeError, match="drift_terms"):
        th.tracking_bound(torch.zeros(4), [0.0] * 3, torch.zeros(3))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: th.mixed_target(torch.zeros(3), torch.zeros(3), 1.5), "rho"),
        (lambda: th.mixed_target(torch.zeros(3), torch.zeros(4), 0.5), "same number"),
        (lambda: th.spectrum(torch.tensor([[1.0, 2.0], [0.0, 1.0]])), "symmetric"),
        (lambda: th.spectrum(torch.zeros(2, 3)), "square"),
        (lambda: th.kernel_outputs(torch.eye(2), torch.zeros(3), [1], 0.1), r"\(\.\.\., 2\)"),
        (lambda: th.kernel_outputs(torch.eye(2), torch.zeros(2), [-1], 0.1), "steps"),
        (lambda: th.kernel_outputs(torch.eye(2), torch.zeros(2), [1], -0.1), "lr"),
        (lambda: th.iterations_to_tolerance(torch.eye(2), torch.ones(2), 0.1, 1.5), "tol"),
        (lambda: th.iterations_to_tolerance(torch.eye(2), torch.ones(2), 5.0, 0.1), "lr"),
        (lambda: th.generalization_bound(torch.zeros(2, 2), torch.ones(2)), "positive definite"),
        (lambda: th.stable_learning_rate(torch.eye(2), 2.5), "fraction"),
        (lambda: th.gram_matrix(torch.zeros(3)), "2-D"),
    ],
)
def test_invalid_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_wrong_types_raise_type_error():
    with pytest.raises(TypeError, match="gram"):
        th.spectrum([[1.0]])
    with pytest.raises(TypeError, match="lr"):
        th.kernel_outputs(torch.eye(2), torch.zeros(2), [1], "0.1")
