"""NTK helpers against autograd (finite net) and a Monte Carlo limit (infinite width)."""

import math

import pytest
import torch

from kdlib.models import TwoLayerReLU
from kdlib.ntk import angle, empirical_ntk, ntk_features, relu_ntk


def _x(n=6, d=3, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("second", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_empirical_ntk_equals_autograd_jacobian_gram(second, bias):
    x = _x()
    model = TwoLayerReLU(2, 3, 7, train_second_layer=second, bias=bias, seed=1, dtype=torch.float64)
    kernel = empirical_ntk(model, x)
    params = [p for p in model.parameters() if p.requires_grad]
    for r in range(2):
        rows = []
        for i in range(len(x)):
            grads = torch.autograd.grad(model(x)[r, i, 0], params)
            rows.append(torch.cat([g[r].flatten() for g in grads]))
        jac = torch.stack(rows)
        assert torch.allclose(jac @ jac.T, kernel[r], atol=1e-12)
    feats = ntk_features(model, x)
    assert torch.allclose(feats @ feats.transpose(1, 2), kernel, atol=1e-12)


def test_empirical_ntk_is_unbiased_with_variance_one_over_width():
    """Averaged over replicas the finite kernel is the analytic one; spread shrinks as m^-1/2."""
    x = _x(5, 4)
    limit = relu_ntk(x)
    rms = {}
    for width in (64, 1024):
        kernels = empirical_ntk(TwoLayerReLU(400, 4, width, seed=width, dtype=torch.float64), x)
        deviation = kernels - limit
        standard_error = kernels.std(0) / 400**0.5
        assert (deviation.mean(0).abs() <= 4.5 * standard_error + 1e-12).all()
        rms[width] = deviation.pow(2).mean().sqrt().item()
    assert 3.0 < rms[64] / rms[1024] < 5.3  # sqrt(1024 / 64) = 4


def test_relu_ntk_known_values():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]], dtype=torch.float64)
    kernel = relu_ntk(x)
    assert math.isclose(kernel[0, 0].item(), 0.5)  # |x|^2 / 2
    assert math.isclose(kernel[0, 1].item(), 0.0)  # orthogonal
    assert math.isclose(kernel[1, 1].item(), 2.0)
    assert math.isclose(kernel[0, 2].item(), 0.0, abs_tol=1e-12)  # opposite: pi - theta = 0
    assert torch.allclose(angle(x, x).diagonal(), torch.zeros(3, dtype=torch.float64), atol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="non-zero"):
        relu_ntk(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="out_features"):
        empirical_ntk(TwoLayerReLU(1, 2, 4, out_features=2), torch.randn(3, 2))
    with pytest.raises(TypeError, match="TwoLayerReLU"):
        ntk_features(torch.nn.Linear(2, 2), torch.randn(3, 2))


@pytest.mark.parametrize("second, bias", [(False, False), (True, True)])
def test_empirical_ntk_in_neuron_blocks_equals_one_block(second, bias):
    gen = torch.Generator().manual_seed(12)
    x1 = torch.randn(2, 6, 3, generator=gen, dtype=torch.float64)
    x2 = torch.randn(2, 4, 3, generator=gen, dtype=torch.float64)
    model = TwoLayerReLU(
        2, 3, 50, train_second_layer=second, bias=bias, seed=5, dtype=torch.float64
    )
    for args in ((x1,), (x1, x2)):
        whole = empirical_ntk(model, *args, budget=10**9)
        blocked = empirical_ntk(model, *args, budget=2 * 6 * 7)  # blocks of 7 neurons
        torch.testing.assert_close(blocked, whole)
    with pytest.raises(ValueError, match="budget"):
        empirical_ntk(model, x1, budget=0)
