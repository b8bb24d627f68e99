"""Predicted accuracies on multi-view data, against hand-solved cases, Monte Carlo simulations of
the lottery argument, and a numerical solution of the tensor-power ODE."""

import math

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from kdlib.theory import multi_view as th


def _lottery_monte_carlo(n_models, k=50, trials=4000, seed=0):
    """Each model learns one uniformly chosen view per class; returns the fraction of views
    that no model learned (independent reference for view_miss_probability)."""
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, 2, size=(trials, n_models, k))
    learned = np.zeros((trials, k, 2), dtype=bool)
    for view in (0, 1):
        learned[..., view] = (chosen == view).any(axis=1)
    return (~learned).mean()


def test_paper_bounds_are_ordered_as_the_theorems_say():
    bounds = th.PAPER_ERROR_BOUNDS
    assert bounds["ensemble"][1] < bounds["distillation"][1] < bounds["self-distillation"][1]
    assert bounds["self-distillation"][1] < bounds["single"][0] < bounds["single"][1]


def test_single_model_error_is_half_mu_and_inside_theorem_1():
    assert th.single_model_error(0.2) == pytest.approx(0.1)
    mus = np.array([0.0, 0.1, 0.3])
    np.testing.assert_allclose(th.single_model_error(mus), mus / 2)
    low, high = th.PAPER_ERROR_BOUNDS["single"]
    assert low * 0.3 <= th.single_model_error(0.3) <= high * 0.3


@pytest.mark.parametrize("n_models", [1, 2, 3, 5])
def test_view_miss_probability_matches_monte_carlo(n_models):
    expected = _lottery_monte_carlo(n_models)
    assert th.view_miss_probability(n_models) == pytest.approx(expected, abs=0.01)


def test_ensemble_distillation_and_self_distillation_errors():
    assert th.ensemble_error(0.2, 1) == pytest.approx(th.single_model_error(0.2))
    assert th.ensemble_error(0.2, 3) == pytest.approx(0.2 / 8)
    assert th.distillation_error(0.2, 3) == th.ensemble_error(0.2, 3)
    assert th.self_distillation_error(0.2) == pytest.approx(0.05)
    assert th.self_distillation_error(1.0) <= th.PAPER_ERROR_BOUNDS["self-distillation"][1]
    # Theorem 2's 0.001 mu is reached by the finite-K form at K = 10
    assert th.ensemble_error(1.0, 10) <= th.PAPER_ERROR_BOUNDS["ensemble"][1]
    assert th.ensemble_error(1.0, 9) > th.PAPER_ERROR_BOUNDS["ensemble"][1]


def test_error_from_views_hand_cases():
    one_view = np.array([[True, False], [False, True], [True, False]])
    assert th.error_from_views(0.2, one_view) == pytest.approx(0.1)
    assert th.error_from_views(0.2, np.ones((3, 2), bool)) == pytest.approx(0.0)
    assert th.error_from_views(0.2, np.zeros((3, 2), bool)) == pytest.approx(1.0)
    # one class with no view: its multi-view points (1 - mu)/k and both single views mu/k
    mixed = np.array([[True, True], [False, False]])
    assert th.error_from_views(0.2, mixed) == pytest.approx(0.8 / 2 + 0.2 / 2)
    batched = th.error_from_views(0.2, np.stack([one_view, np.ones((3, 2), bool)]))
    np.testing.assert_allclose(batched, [0.1, 0.0])


def test_error_from_views_agrees_with_ensemble_error_in_expectation():
    rng = np.random.default_rng(1)
    chosen = rng.integers(0, 2, size=(3000, 4, 20))  # trials, members, classes
    union = np.stack([(chosen == v).any(axis=1) for v in (0, 1)], axis=-1)
    assert th.error_from_views(0.3, union).mean() == pytest.approx(
        th.ensemble_error(0.3, 4), abs=0.002
    )


def test_lottery_winner_takes_the_largest_positive_correlation():
    corr = np.array(
        [
            [[0.1, 0.3], [0.2, -0.5]],  # view 1 has the larger max
            [[-0.1, -0.3], [0.05, -0.2]],  # only view 0 is positive
        ]
    )  # (k=2, m=2, 2)
    np.testing.assert_array_equal(th.lottery_winner(corr), [1, 0])
    batched = np.stack([corr, corr[..., ::-1]])
    np.testing.assert_array_equal(th.lottery_winner(batched), [[1, 0], [0, 1]])


@pytest.mark.parametrize(("a0", "rate", "power"), [(0.1, 2.0, 3), (0.2, 0.5, 4), (0.3, 1.0, 6)])
def test_blowup_time_matches_numerical_ode(a0, rate, power):
    predicted = th.blowup_time(a0, rate, power)

    def escape(t, a):
        return a[0] - 1e3 * a0

    escape.terminal = True
    solution = solve_ivp(
        lambda t, a: [rate * a[0] ** (power - 1)],
        (0, 2 * predicted),
        [a0],
        events=escape,
        rtol=1e-10,
        atol=1e-12,
    )
    # a(t) = a0 (1 - t/t*)^{-1/(q-2)} reaches 1000 a0 at t = t* (1 - 1000^{-(q-2)})
    reached = solution.t_events[0][0]
    assert reached == pytest.approx(predicted * (1 - 1e3 ** (-(power - 2))), rel=1e-6)


def test_blowup_time_ratio_separates_with_the_power():
    ratio3 = th.blowup_time(0.9, 1.0, 3) / th.blowup_time(1.0, 1.0, 3)
    ratio6 = th.blowup_time(0.9, 1.0, 6) / th.blowup_time(1.0, 1.0, 6)
    assert ratio3 == pytest.approx(1 / 0.9)
    assert ratio6 == pytest.approx(0.9**-4)
    assert ratio6 > ratio3


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: th.single_model_error(1.5), "mu"),
        (lambda: th.single_model_error(-0.1), "mu"),
        (lambda: th.view_miss_probability(0), "n_models"),
        (lambda: th.ensemble_error(0.1, 2.5), "n_members"),
        (lambda: th.error_from_views(0.1, np.ones((3, 3), bool)), "shape"),
        (lambda: th.lottery_winner(np.ones((3, 2))), "shape"),
        (lambda: th.blowup_time(0.1, 1.0, 2), "power"),
        (lambda: th.blowup_time(-0.1, 1.0, 4), "a0"),
        (lambda: th.blowup_time(0.1, math.inf, 4), "rate"),
    ],
)
def test_invalid_inputs_are_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call()
