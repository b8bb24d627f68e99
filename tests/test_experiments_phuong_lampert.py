"""Chapter "Why distillation works: linear students": every experiment at quick scale, once; its
claims pass; a wrong prediction makes them fail; the helpers equal their references."""

import dataclasses

import numpy as np
import pytest
import torch
from book_session import sharing_chapter_results

from kdlib import ClaimFailed, Claims, resolve
from kdlib.experiments import get_chapter
from kdlib.experiments import phuong_lampert as chapter
from kdlib.losses import binary_cross_entropy
from kdlib.models import LinearStudent
from kdlib.theory import phuong_lampert as theory
from kdlib.train import train

DT = torch.float64


@pytest.fixture(scope="module")
def config():
    return resolve("quick", "cpu")


@pytest.fixture(scope="module")
def results(config, pytestconfig):
    """Every experiment at quick scale (the results nbmake's run of the chapter stored, when it
    ran first this session)."""
    with sharing_chapter_results(pytestconfig):
        return {exp.name: exp.run(config) for exp in chapter.EXPERIMENTS}


def _claims(config):
    return Claims(chapter.CHAPTER, config, ledger=False)


def test_chapter_is_registered():
    assert get_chapter("phuong-lampert") is chapter
    assert chapter.ORDER == 30
    assert len(chapter.EXPERIMENTS) == 6


@pytest.mark.parametrize("name", [exp.name for exp in chapter.EXPERIMENTS])
def test_claims_hold_at_quick_scale(results, config, name):
    exp = next(e for e in chapter.EXPERIMENTS if e.name == name)
    claims = _claims(config)
    exp.check(results[name], claims)
    assert claims.records and all(r.passed for r in claims.records)
    fig = exp.plot(results[name])
    assert fig.axes
    import matplotlib.pyplot as plt

    plt.close(fig)


WRONG_PREDICTIONS = {
    # a rate 10% too slow
    "optimization_bias": lambda r: dataclasses.replace(r, contraction=r.contraction**0.9),
    # a remainder 10% too large
    "deep_linear": lambda r: dataclasses.replace(r, predicted_distance=1.1 * r.predicted_distance),
    # offsets listed in the wrong order: the larger offset predicted to be better
    "minimisers": lambda r: dataclasses.replace(r, risk=r.risk[::-1]),
    # a bound 100 times smaller
    "data_geometry": lambda r: dataclasses.replace(r, bound=r.bound / 100),
    # soft and hard students exchanged
    "monotonicity": lambda r: dataclasses.replace(
        r,
        soft_risk=r.hard_risk,
        hard_risk=r.soft_risk,
        soft_angle=r.hard_angle,
        hard_angle=r.soft_angle,
    ),
    # a distilled student that is not the teacher for n >= d
    "digits": lambda r: dataclasses.replace(r, soft_risk=r.soft_risk + 0.01),
}


@pytest.mark.parametrize("name", list(WRONG_PREDICTIONS))
def test_a_wrong_prediction_fails(results, config, name):
    exp = next(e for e in chapter.EXPERIMENTS if e.name == name)
    with pytest.raises(ClaimFailed):
        exp.check(WRONG_PREDICTIONS[name](results[name]), _claims(config))


def test_theory_function_monkeypatched_wrong_fails(config, monkeypatch):
    """Feeding the experiment a wrong closed form (the bound of a better-separated geometry)
    must make the bound claim fail."""
    original = theory.risk_bound

    def too_optimistic(n, distribution, grid=20001):
        return original(n, dataclasses.replace(distribution, kappa=distribution.kappa * 4))

    monkeypatch.setattr(theory, "risk_bound", too_optimistic)
    result = chapter.run_data_geometry(config)
    with pytest.raises(ClaimFailed):
        chapter.check_data_geometry(result, _claims(config))


def test_span_gd_equals_gradient_descent_on_the_weights():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, generator=gen, dtype=DT)
    targets = torch.rand(3, 5, generator=gen, dtype=DT)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=DT)
    lr = theory.gd_step_size(x, mask)
    got = chapter.train_span_gd(x, targets, 50, lr, mask)
    model = LinearStudent(3, 8, dtype=DT)
    train(
        model,
        lambda m, _: binary_cross_entropy(m(x), targets, sample_weight=mask),
        50,
        lr,
        progress=False,
    )
    torch.testing.assert_close(got, model.weight[..., 0].detach(), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("n", [4, 12])
def test_fitted_student_is_the_projection(n):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, n, 8, generator=gen, dtype=DT)
    w_star = torch.randn(8, generator=gen, dtype=DT)
    mask = torch.ones(4, n, dtype=DT)
    mask[1, n // 2 :] = 0  # a padded replica
    w = chapter.fit_distilled_linear(x, torch.sigmoid(x @ w_star), mask)
    torch.testing.assert_close(w, theory.linear_student_limit(x, w_star, None, mask))


def test_fit_rejects_saturated_labels():
    x = torch.randn(1, 2, 3, dtype=DT)
    with pytest.raises(ValueError):
        chapter.fit_distilled_linear(x, torch.tensor([[0.5, 1.0]], dtype=DT))


def test_pointwise_increase_count():
    values = np.array([[3.0, 3.0], [2.0, 3.5], [2.5, 1.0]])
    assert chapter._pointwise_increases(values, 0.0) == 2
    assert chapter._pointwise_increases(values, 0.6) == 0


@pytest.mark.parametrize(
    "violation",
    [
        {"initial_loss_gap": 1e-3},  # started above the loss at zero
        {"initial_imbalance": 1e-3},  # layers not balanced at t = 0
    ],
)
def test_deep_linear_hypothesis_violation_fails(results, config, violation):
    """The deep-linear theorem's hypotheses are checked, not assumed: a run that violates one of
    them fails its claims even when the limit matches."""
    result = results["deep_linear"]
    changed = {
        key: (getattr(result, key) + value if key == "initial_loss_gap" else value)
        for key, value in violation.items()
    }
    with pytest.raises(ClaimFailed, match="hypotheses"):
        chapter.check_deep_linear(dataclasses.replace(result, **changed), _claims(config))


def test_an_unconverged_deep_linear_run_fails_the_stationarity_claim(results, config):
    """The limit is compared only once the students have stopped moving."""
    result = results["deep_linear"]
    assert result.steps >= 1 and result.loss_gradient_norm.max() <= 1e-6
    slow = dataclasses.replace(result, loss_gradient_norm=result.loss_gradient_norm + 1e-4)
    with pytest.raises(ClaimFailed, match="stationary point"):
        chapter.check_deep_linear(slow, _claims(config))


def test_end_to_end_gradient_matches_autograd():
    from kdlib.models import DeepLinearStudent

    gen = torch.Generator().manual_seed(5)
    student = DeepLinearStudent(3, 6, depth=3, width=4, generator=gen, dtype=DT)
    x = torch.randn(3, 5, 6, generator=gen, dtype=DT)
    probs = torch.rand(3, 5, generator=gen, dtype=DT)
    mask = torch.tensor([[1.0] * 5, [1.0] * 3 + [0.0] * 2, [1.0] * 4 + [0.0]], dtype=DT)
    w = student.end_to_end()[..., 0].detach().requires_grad_(True)
    loss = binary_cross_entropy((x @ w[..., None])[..., 0], probs, sample_weight=mask)
    (expected,) = torch.autograd.grad(loss.sum(), w)
    got = chapter._end_to_end_gradient(student, x, probs, mask)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_imbalance_of_balanced_and_unbalanced_layers():
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(2, 5, generator=gen, dtype=DT)
    v = torch.randn(2, 4, generator=gen, dtype=DT)
    u, v = u / u.norm(dim=-1, keepdim=True), v / v.norm(dim=-1, keepdim=True)
    w1 = 0.3 * u[:, :, None] * v[:, None, :]  # (R, 5, 4)
    w2 = 0.3 * v[:, :, None] * torch.ones(2, 1, 1, dtype=DT)  # (R, 4, 1)
    assert chapter._imbalance([w1, w2]) < 1e-14
    assert chapter._imbalance([w1, 2 * w2]) > 1.0


def test_a_deep_limit_off_the_prediction_fails_even_with_the_right_remainder_norm(results, config):
    """The n < d claim checks the whole limit P w* + v_inf, not only |w_T - P w*|."""
    result = results["deep_linear"]
    wrong = dataclasses.replace(result, distance_to_prediction=result.distance_to_prediction + 0.05)
    with pytest.raises(ClaimFailed, match="predicted limit"):
        chapter.check_deep_linear(wrong, _claims(config))


def test_a_margin_geometry_with_a_student_beyond_the_margin_at_the_largest_n_fails(results, config):
    result = results["data_geometry"]
    above = result.above_margin.copy()
    g = next(i for i, dist in enumerate(result.distributions) if dist.kind == "margin")
    above[g, -1, 0] = True
    with pytest.raises(ClaimFailed, match="no training set"):
        chapter.check_data_geometry(
            dataclasses.replace(result, above_margin=above), _claims(config)
        )
