"""The multi-view generator: every property the paper's data model assumes, checked on samples."""

import dataclasses
import math

import pytest
import torch

from kdlib.config import make_generator
from kdlib.data.multi_view import MultiViewParams, make_features, sample_multi_view

PARAMS = MultiViewParams(n_classes=5, dim=40, n_patches=24, patches_per_feature=2, sparsity=2.0)


def _sample(params=PARAMS, n=3000, mu=0.3, seed=0, **changes):
    params = dataclasses.replace(params, **changes)
    features = make_features(params.n_classes, params.dim, seed=seed, dtype=torch.float64)
    data = sample_multi_view(params, features, n, mu, make_generator(seed + 1), torch.float64)
    return params, data


def _coefficients(data):
    """``<x_p, v_{j,l}>``, shape ``(n, P, k, 2)`` (exact when there is no Gaussian noise)."""
    return torch.einsum("npd,kld->npkl", data.x, data.features)


def test_views_are_orthonormal():
    features = make_features(6, 20, seed=3).reshape(12, 20)
    torch.testing.assert_close(features @ features.T, torch.eye(12, dtype=features.dtype))


def test_shapes_labels_and_exact_single_view_count():
    params, data = _sample(n=1001, mu=0.25)
    assert data.x.shape == (1001, params.n_patches, params.dim)
    assert data.y.min() >= 0 and data.y.max() < params.n_classes
    assert int(data.single_view.sum()) == round(0.25 * 1001)
    assert set(data.view[data.single_view].tolist()) <= {0, 1}
    assert (data.view[~data.single_view] == -1).all()


def test_labels_and_chosen_view_are_uniform():
    params, data = _sample(n=20000, mu=0.5)
    counts = torch.bincount(data.y, minlength=params.n_classes).double() / len(data)
    assert (counts - 1 / params.n_classes).abs().max() < 4 * math.sqrt(0.2 * 0.8 / 20000)
    share = (data.view[data.single_view] == 1).double().mean().item()
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / 10000)


def test_multi_view_weights_in_their_ranges():
    params, data = _sample()
    multi = ~data.single_view
    own = torch.nn.functional.one_hot(data.y, params.n_classes).bool()[:, :, None].expand(-1, -1, 2)
    weights = data.weights[multi]
    own_w, other_w = weights[own[multi]], weights[~own[multi]]
    assert (own_w >= 1).all() and (own_w <= params.main_high).all()
    present = other_w[other_w > 0]
    assert (present >= params.off_target_low).all()
    assert (present <= params.off_target_high).all()


def test_off_target_features_present_with_probability_s_over_k():
    params, data = _sample(n=20000)
    own = torch.nn.functional.one_hot(data.y, params.n_classes).bool()[:, :, None].expand(-1, -1, 2)
    rate = data.present[~own].double().mean().item()
    expected = params.sparsity / params.n_classes
    n_draws = (~own).sum().item()
    assert abs(rate - expected) < 4 * math.sqrt(expected * (1 - expected) / n_draws)


def test_single_view_weights_in_their_ranges():
    params, data = _sample()
    single = data.single_view
    y, view, weights = data.y[single], data.view[single], data.weights[single]
    rows = torch.arange(len(y))
    strong, weak = weights[rows, y, view], weights[rows, y, 1 - view]
    assert (strong >= 1).all() and (strong <= params.main_high).all()
    assert (weak >= params.weak_view).all() and (weak <= 2 * params.weak_view).all()
    mask = torch.ones_like(weights, dtype=torch.bool)
    mask[rows, y] = False
    others = weights[mask]
    present = others[others > 0]
    assert (present >= params.single_off_target / 2).all()
    assert (present <= params.single_off_target).all()


def test_weak_view_is_fainter_than_every_off_target_feature_when_rho_much_below_gamma():
    """The paper's rho << Gamma: in single-view data the class's second view is weaker than any
    off-target feature (with 2 rho < Gamma / 2, as in the chapter's settings)."""
    params, data = _sample(weak_view=0.02, single_off_target=0.3)
    single = data.single_view
    y, view, weights = data.y[single], data.view[single], data.weights[single]
    rows = torch.arange(len(y))
    weak = weights[rows, y, 1 - view]
    mask = torch.ones_like(weights, dtype=torch.bool)
    mask[rows, y] = False
    off = torch.where(mask & (weights > 0), weights, torch.full_like(weights, math.inf))
    assert (weak < off.amin(dim=(1, 2))).all()
    # multi-view data: every off-target feature is weaker than the class's own views
    multi = ~data.single_view
    own = torch.nn.functional.one_hot(data.y[multi], params.n_classes).bool()
    w = data.weights[multi]
    assert w[~own[:, :, None].expand_as(w)].max() < w[own[:, :, None].expand_as(w)].min()


def test_patches_carry_each_feature_disjointly_with_total_weight_z():
    params, data = _sample(n=500, noise_std=0.0, feature_noise=0.0)
    coeff = _coefficients(data)  # (n, P, k, 2)
    on = coeff.abs() > 1e-9
    # each present feature occupies exactly C_p patches, absent ones none
    per_feature = on.sum(1)
    expected = data.present.long() * params.patches_per_feature
    assert torch.equal(per_feature, expected)
    # no patch carries two features
    assert on.reshape(len(data), params.n_patches, -1).sum(-1).max() <= 1
    # the weights over a feature's patches add up to Z, spread evenly
    torch.testing.assert_close(coeff.sum(1), data.weights, atol=1e-9, rtol=0)
    share = coeff[on] / data.weights[:, None].expand_as(coeff)[on]
    torch.testing.assert_close(share, torch.full_like(share, 1 / params.patches_per_feature))


def test_feature_noise_is_uniform_on_zero_gamma():
    params, data = _sample(n=400, noise_std=0.0, feature_noise=0.05)
    clean = _sample(n=400, noise_std=0.0, feature_noise=0.0)[1]
    # same seed: identical labels and layouts, so the difference is the feature noise alone
    assert torch.equal(clean.y, data.y)
    noise = _coefficients(data) - _coefficients(clean)
    assert noise.min() >= -1e-9 and noise.max() <= 0.05 + 1e-9
    assert abs(noise.mean().item() - 0.025) < 0.002


def test_gaussian_noise_has_the_stated_standard_deviation():
    params, data = _sample(n=300, noise_std=0.2, feature_noise=0.0)
    clean = _sample(n=300, noise_std=0.0, feature_noise=0.0)[1]
    residual = data.x - clean.x
    assert abs(residual.std().item() - 0.2) < 0.005
    assert abs(residual.mean().item()) < 0.005


def test_same_seed_same_data_and_device_move():
    _, first = _sample(n=50)
    _, second = _sample(n=50)
    assert torch.equal(first.x, second.x) and torch.equal(first.y, second.y)
    moved = first.to("cpu")
    assert torch.equal(moved.weights, first.weights)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"n_classes": 1}, ValueError),
        ({"dim": 5}, ValueError),
        ({"n_patches": 10}, ValueError),
        ({"sparsity": 9.0}, ValueError),
        ({"off_target_high": 1.2}, ValueError),
        ({"weak_view": 0.6}, ValueError),
        ({"noise_std": -1.0}, ValueError),
        ({"n_classes": 2.5}, TypeError),
    ],
)
def test_invalid_parameters_are_rejected(changes, error):
    with pytest.raises(error):
        dataclasses.replace(PARAMS, **changes)


def test_invalid_sampling_arguments_are_rejected():
    features = make_features(PARAMS.n_classes, PARAMS.dim, seed=0)
    gen = make_generator(0)
    with pytest.raises(ValueError, match="single_view_fraction"):
        sample_multi_view(PARAMS, features, 10, 1.5, gen)
    with pytest.raises(ValueError, match="features"):
        sample_multi_view(PARAMS, features[:2], 10, 0.1, gen)
    with pytest.raises(ValueError, match="n must"):
        sample_multi_view(PARAMS, features, 0, 0.1, gen)
