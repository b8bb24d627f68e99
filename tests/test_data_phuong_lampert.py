"""The angular data model of Phuong & Lampert's chapter: the angle to the teacher's boundary has
the prescribed distribution, the rest is isotropic, and a seed fixes everything."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from kdlib.data.phuong_lampert import (
    AngularDistribution,
    sample_angular,
    sample_gaussian,
    teacher_direction,
)

DISTRIBUTIONS = [
    AngularDistribution("polynomial", kappa=0.5),
    AngularDistribution("polynomial", kappa=2.0),
    AngularDistribution("margin", margin=math.pi / 16),
]


def test_inputs_are_unit_vectors_with_the_sampled_boundary_angle():
    x, phi = sample_angular(4, 50, 9, DISTRIBUTIONS[0], torch.Generator().manual_seed(0))
    assert x.shape == (4, 50, 9) and phi.shape == (4, 50)
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(4, 50, dtype=x.dtype))
    torch.testing.assert_close(x[..., 0].abs(), torch.sin(phi))


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_boundary_angle_follows_its_cdf(dist):
    _, phi = sample_angular(1, 20000, 5, dist, torch.Generator().manual_seed(1))
    result = stats.kstest(phi.numpy().ravel(), dist.boundary_cdf)
    assert result.pvalue > 1e-3


def test_directions_orthogonal_to_the_teacher_are_isotropic():
    x, _ = sample_angular(1, 20000, 4, DISTRIBUTIONS[1], torch.Generator().manual_seed(2))
    rest = x[0, :, 1:] / x[0, :, 1:].norm(dim=-1, keepdim=True)
    # a coordinate of a uniform point on the sphere of R^3 is uniform on [-1, 1]
    assert stats.kstest(rest[:, 0].numpy(), stats.uniform(-1, 2).cdf).pvalue > 1e-3
    # both classes equally likely
    assert abs((x[0, :, 0] > 0).double().mean().item() - 0.5) < 0.02


def test_margin_leaves_no_mass_near_the_boundary():
    dist = DISTRIBUTIONS[2]
    _, phi = sample_angular(3, 1000, 6, dist, torch.Generator().manual_seed(3))
    assert phi.min() >= dist.margin
    assert dist.boundary_cdf(dist.margin) == 0


def test_same_seed_same_data():
    a = sample_angular(2, 5, 6, DISTRIBUTIONS[0], torch.Generator().manual_seed(7))[0]
    b = sample_angular(2, 5, 6, DISTRIBUTIONS[0], torch.Generator().manual_seed(7))[0]
    torch.testing.assert_close(a, b)
    c = sample_gaussian(2, 5, 6, torch.Generator().manual_seed(7))
    assert c.shape == (2, 5, 6)


def test_boundary_cdf_endpoints_and_monotonicity():
    for dist in DISTRIBUTIONS:
        t = np.linspace(0, math.pi / 2, 101)
        cdf = dist.boundary_cdf(t)
        assert cdf[0] == 0 and cdf[-1] == pytest.approx(1.0)
        assert np.all(np.diff(cdf) >= 0)


def test_teacher_direction():
    e = teacher_direction(4)
    torch.testing.assert_close(e, torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))


def test_validation():
    with pytest.raises(ValueError):
        AngularDistribution("cosine")
    with pytest.raises(ValueError):
        AngularDistribution("polynomial", kappa=0)
    with pytest.raises(TypeError):
        AngularDistribution("polynomial", kappa="1")
    with pytest.raises(ValueError):
        AngularDistribution("margin", margin=2.0)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError):
        sample_angular(1, 5, 2, DISTRIBUTIONS[0], gen)
    with pytest.raises(ValueError):
        sample_angular(0, 5, 4, DISTRIBUTIONS[0], gen)
    with pytest.raises(TypeError):
        sample_angular(1, 5, 4, "kappa=1", gen)
    with pytest.raises(ValueError):
        teacher_direction(1)
