"""Losses against their textbook formulas and hand-derived gradients."""

import math

import pytest
import torch

from kdlib import losses


def _logits(r=3, n=5, k=4, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(r, n, k, generator=g, dtype=torch.float64) * scale


def test_cross_entropy_matches_formula():
    z = _logits()
    y = torch.tensor([0, 1, 2, 3, 1])
    expected = torch.stack(
        [
            torch.stack([-(z[r, i, y[i]] - torch.logsumexp(z[r, i], 0)) for i in range(5)]).mean()
            for r in range(3)
        ]
    )
    assert torch.allclose(losses.cross_entropy(z, y), expected)


def test_binary_cross_entropy_matches_formula_with_soft_targets():
    z = _logits(k=1)[..., 0]
    t = torch.linspace(0.05, 0.95, 5, dtype=torch.float64)
    s = torch.sigmoid(z)
    expected = (-(t * s.log() + (1 - t) * (1 - s).log())).mean(-1)
    assert torch.allclose(losses.binary_cross_entropy(z, t), expected)
    assert torch.allclose(losses.binary_cross_entropy(z[..., None], t[:, None]), expected)


def test_soft_cross_entropy_equals_hard_for_one_hot():
    z = _logits()
    y = torch.tensor([3, 1, 0, 2, 2])
    one_hot = torch.nn.functional.one_hot(y, 4).double()
    assert torch.allclose(losses.soft_cross_entropy(z, one_hot), losses.cross_entropy(z, y))


def test_kd_loss_is_t2_times_kl():
    zs, zt, temp = _logits(seed=1), _logits(seed=2)[0], 3.0
    p = torch.softmax(zt / temp, -1)
    q = torch.softmax(zs / temp, -1)
    kl = (p * (p.log() - q.log())).sum(-1).mean(-1)
    assert torch.allclose(losses.kd_loss(zs, zt, temp), temp**2 * kl)
    assert torch.allclose(losses.kd_loss(zs, zt, temp, t_squared=False), kl)
    assert torch.allclose(
        losses.kd_loss(zt.expand(3, -1, -1), zt, temp), torch.zeros(3, dtype=torch.float64)
    )


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
def test_kd_gradient_matches_hand_formula(temperature):
    zs = _logits(seed=3).requires_grad_(True)
    zt = _logits(seed=4)
    loss = losses.kd_loss(zs, zt, temperature, t_squared=False).sum()
    (grad,) = torch.autograd.grad(loss, zs)
    n = zs.shape[1]
    hand = (torch.softmax(zs / temperature, -1) - torch.softmax(zt / temperature, -1)) / (
        temperature * n
    )
    assert torch.allclose(grad, hand, atol=1e-12)


def test_distillation_loss_mixes():
    zs, zt = _logits(seed=5), _logits(seed=6)
    y = torch.tensor([0, 1, 2, 3, 0])
    hard, soft = losses.cross_entropy(zs, y), losses.kd_loss(zs, zt, 2.0)
    for alpha in (0.0, 0.3, 1.0):
        mixed = losses.distillation_loss(zs, y, zt, 2.0, alpha)
        assert torch.allclose(mixed, alpha * hard + (1 - alpha) * soft)


def test_sample_weight_is_a_weighted_mean_and_masks():
    z = _logits()
    y = torch.tensor([0, 1, 2, 3, 1])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float64)
    got = losses.cross_entropy(z, y, sample_weight=mask)
    for r in range(3):
        keep = mask[r].bool()
        assert torch.isclose(got[r], losses.cross_entropy(z[r : r + 1, keep], y[keep])[0])


def test_huge_logits_stay_finite():
    z = _logits(scale=1e4)
    zt = _logits(seed=9, scale=1e4)[0]
    assert torch.isfinite(losses.kd_loss(z, zt, 1e-3)).all()
    assert torch.isfinite(losses.cross_entropy(z, torch.zeros(5, dtype=torch.long))).all()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda z: losses.kd_loss(z, z[0], 0.0), ValueError, "temperature"),
        (lambda z: losses.kd_loss(z, z[0], -1.0), ValueError, "temperature"),
        (lambda z: losses.kd_loss(z, z[0], float("nan")), ValueError, "temperature"),
        (lambda z: losses.kd_loss(z, z[0], "hot"), TypeError, "temperature"),
        (
            lambda z: losses.distillation_loss(z, torch.zeros(5, dtype=torch.long), z, 1.0, 1.5),
            ValueError,
            "alpha",
        ),
        (lambda z: losses.cross_entropy(z, torch.full((5,), 4)), ValueError, "labels"),
        (lambda z: losses.cross_entropy(z, torch.zeros(5)), TypeError, "labels"),
        (lambda z: losses.cross_entropy(z, torch.zeros(6, dtype=torch.long)), ValueError, "labels"),
        (
            lambda z: losses.cross_entropy(z[0], torch.zeros(5, dtype=torch.long)),
            ValueError,
            "logits",
        ),
        (lambda z: losses.soft_cross_entropy(z, torch.full((5, 4), 0.3)), ValueError, "sum to 1"),
        (
            lambda z: losses.soft_cross_entropy(z, torch.full((5, 4), float("nan"))),
            ValueError,
            "NaN",
        ),
        (lambda z: losses.kd_loss(z, torch.full((5, 4), math.inf), 1.0), ValueError, "NaN"),
        (
            lambda z: losses.binary_cross_entropy(z[..., :1], torch.full((5,), 1.5)),
            ValueError,
            r"\[0, 1\]",
        ),
        (
            lambda z: losses.cross_entropy(
                z, torch.zeros(5, dtype=torch.long), sample_weight=-torch.ones(5)
            ),
            ValueError,
            "sample_weight",
        ),
    ],
)
def test_bad_input_raises_a_named_error(call, error, match):
    with pytest.raises(error, match=match):
        call(_logits())


def test_a_non_finite_sample_weight_is_refused():
    logits = torch.zeros(1, 3, 1)
    targets = torch.ones(1, 3)
    weight = torch.tensor([1.0, float("nan"), 1.0])
    with pytest.raises(ValueError, match="sample_weight"):
        losses.binary_cross_entropy(logits, targets, sample_weight=weight)


# -- the CPU fast paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 50, 2), (3, 50, 10), (40, 1, 4), (2, 7, 16), (2, 7, 40)])
def test_softmax_fast_paths_equal_torch_to_rounding(dtype, shape):
    """The class-first layout kdlib uses on the CPU for few classes gives torch's values and
    gradients to rounding (and is the plain call itself for many classes)."""
    z = (torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 5).to(dtype)
    z.requires_grad_(True)
    weights = torch.randn(*shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    for ours, plain in (
        (losses.log_softmax(z), torch.log_softmax(z, -1)),
        (losses.softmax(z), torch.softmax(z, -1)),
    ):
        assert ours.shape == plain.shape
        torch.testing.assert_close(ours, plain)  # dtype-aware: a few ulps
        (g_ours,) = torch.autograd.grad((ours * weights).sum(), z)
        (g_plain,) = torch.autograd.grad((plain * weights).sum(), z)
        torch.testing.assert_close(g_ours, g_plain)
    vector = torch.randn(5, dtype=dtype)
    assert torch.equal(losses.log_softmax(vector), torch.log_softmax(vector, -1))
    assert torch.equal(losses.softmax(vector), torch.softmax(vector, -1))


def test_float32_series_is_accurate_to_rounding():
    """Float32 keeps the series to u^9: its relative error against the float64 series (1e-13
    accurate) stays at float32 rounding over the whole small-u branch."""
    u = torch.cat([torch.linspace(-0.5, 0.5, 2001), torch.tensor([1e-6, -3e-4, 0.49999])])
    u = u[u != 0]
    reference = losses._expm1_minus_u(u.double())
    ours = losses._expm1_minus_u(u).double()
    assert ((ours - reference).abs() / reference.abs()).max() < 5e-7  # about 4 float32 ulps


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_distillation_loss_with_one_term_equals_the_mixture_exactly(alpha):
    """alpha = 0 or 1 computes only the term that counts; value and gradient are bit for bit
    those of alpha * CE + (1 - alpha) * KD, and both terms' inputs are still validated."""
    zs = _logits(seed=7).requires_grad_(True)
    zt, y = _logits(seed=8)[0], torch.tensor([0, 1, 2, 3, 0])
    mixed = alpha * losses.cross_entropy(zs, y) + (1 - alpha) * losses.kd_loss(zs, zt, 2.0)
    ours = losses.distillation_loss(zs, y, zt, 2.0, alpha)
    assert torch.equal(ours, mixed)
    assert torch.equal(*(torch.autograd.grad(v.sum(), zs)[0] for v in (ours, mixed)))
    with pytest.raises(ValueError, match="labels must be in"):
        losses.distillation_loss(zs, torch.tensor([0, 1, 2, 3, 9]), zt, 2.0, alpha)
    with pytest.raises(ValueError, match="teacher_logits"):
        losses.distillation_loss(zs, y, torch.full_like(zt, math.nan), 2.0, alpha)
    with pytest.raises(TypeError, match="labels must be a torch.Tensor"):  # even unchecked
        losses.distillation_loss(zs, [0, 1, 2, 3, 0], zt, 2.0, alpha, check=False)
    with pytest.raises(TypeError, match="teacher_logits must be a torch.Tensor"):
        losses.distillation_loss(zs, y, zt.tolist(), 2.0, alpha, check=False)
    with pytest.raises(ValueError, match="temperature"):
        losses.distillation_loss(zs, y, zt, 0.0, alpha)
