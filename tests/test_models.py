"""Batched replica models: shapes, independence of replicas, and bad input."""

import pytest
import torch

from kdlib.models import DeepLinearStudent, LinearStudent, TwoLayerReLU, replica_matmul
from kdlib.train import train


def test_linear_forward_matches_per_replica_matmul():
    model = LinearStudent(4, 3, 2, init="normal", seed=0, bias=True, dtype=torch.float64)
    with torch.no_grad():
        model.bias.normal_()
    x = torch.randn(7, 3, dtype=torch.float64)
    out = model(x)
    assert out.shape == (4, 7, 2)
    for r in range(4):
        assert torch.allclose(out[r], x @ model.weight[r] + model.bias[r])


@pytest.mark.parametrize("shared", [True, False])
def test_replica_matmul_values_and_hand_gradient(shared):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(*(() if shared else (3,)), 6, 4, generator=gen, dtype=torch.float64)
    weight = torch.randn(3, 4, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 6, 2, generator=gen, dtype=torch.float64)
    out = replica_matmul(x, weight)
    torch.testing.assert_close(out, torch.matmul(x, weight))
    (grad,) = torch.autograd.grad((out * upstream).sum(), weight)
    xs = x.expand(3, 6, 4)
    hand = torch.stack([xs[r].T @ upstream[r] for r in range(3)])  # d/dW <XW, G> = X^T G
    torch.testing.assert_close(grad, hand)


def test_per_replica_inputs():
    model = LinearStudent(2, 3, init="normal", seed=1)
    x = torch.randn(2, 5, 3)
    out = model(x)
    assert torch.allclose(out[1], x[1] @ model.weight[1])


def test_deep_linear_end_to_end_is_the_product():
    model = DeepLinearStudent(3, 4, 2, depth=3, width=5, seed=0, dtype=torch.float64)
    x = torch.randn(6, 4, dtype=torch.float64)
    assert torch.allclose(model(x), x @ model.end_to_end())
    assert model.end_to_end().shape == (3, 4, 2)


def test_balanced_init_is_balanced():
    model = DeepLinearStudent(
        2, 4, 1, depth=3, width=5, init="balanced", seed=0, dtype=torch.float64
    )
    w = list(model.layers)
    for a, b in zip(w[:-1], w[1:], strict=True):
        assert torch.allclose(a.transpose(1, 2) @ a, b @ b.transpose(1, 2), atol=1e-12)


def test_two_layer_relu_matches_formula_and_ntk_scaling():
    model = TwoLayerReLU(2, 3, width=8, seed=0, dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    v, a = model.hidden[1], model.output[1, :, 0]
    expected = torch.relu(x @ v.T) @ a / 8**0.5
    assert torch.allclose(model(x)[1, :, 0], expected)
    assert not model.output.requires_grad
    assert set(a.tolist()) <= {-1.0, 1.0}


def test_symmetric_init_outputs_zero():
    model = TwoLayerReLU(3, 4, width=10, symmetric_init=True, bias=True, seed=2)
    assert torch.allclose(model(torch.randn(6, 4)), torch.zeros(3, 6, 1), atol=1e-6)


def test_seed_reproducible_and_replicas_differ():
    a = TwoLayerReLU(3, 4, 16, seed=5).hidden
    b = TwoLayerReLU(3, 4, 16, seed=5).hidden
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])


def test_batched_training_equals_sequential_training():
    """R replicas trained as one program end exactly where R separate runs end."""
    torch.manual_seed(0)
    x = torch.randn(20, 3)
    y = (x[:, 0] > 0).float()
    lrs = torch.tensor([0.5, 1.0, 2.0])

    def loss_fn(model, batch):
        from kdlib.losses import binary_cross_entropy

        return binary_cross_entropy(model(x), y)

    batched = TwoLayerReLU(3, 3, 16, seed=11, dtype=torch.float64)
    x = x.double()
    start = batched.hidden.detach().clone()
    train(batched, loss_fn, 50, lrs)
    for r in range(3):
        single = TwoLayerReLU(1, 3, 16, dtype=torch.float64)
        with torch.no_grad():
            single.hidden.copy_(start[r : r + 1])
            single.output.copy_(batched.output[r : r + 1])
        train(single, loss_fn, 50, float(lrs[r]))
        assert torch.allclose(single.hidden[0], batched.hidden[r], atol=1e-12)


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: LinearStudent(0, 3), ValueError, "replicas"),
        (lambda: LinearStudent(2, 3.0), TypeError, "in_features"),
        (lambda: LinearStudent(2, 3, init="xavier"), ValueError, "init"),
        (lambda: TwoLayerReLU(2, 3, 5, symmetric_init=True), ValueError, "even"),
        (lambda: DeepLinearStudent(2, 3, depth=0), ValueError, "depth"),
        (lambda: DeepLinearStudent(2, 3, init_scale=0.0), ValueError, "init_scale"),
    ],
)
def test_bad_constructor_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize(
    ("x", "error", "match"),
    [
        (torch.randn(5, 4), ValueError, "shape"),
        (torch.randn(3, 5, 3), ValueError, "replicas"),
        (torch.ones(5, 3, dtype=torch.long), TypeError, "floating"),
        (torch.randn(5, 3, dtype=torch.float64), ValueError, "dtype"),
        ([[1.0, 2.0, 3.0]], TypeError, "Tensor"),
    ],
)
def test_bad_inputs(x, error, match):
    with pytest.raises(error, match=match):
        LinearStudent(2, 3)(x)


@pytest.mark.parametrize("scale", [float("nan"), float("inf")])
def test_a_linear_student_refuses_a_non_finite_init_scale(scale):
    with pytest.raises(ValueError, match="init_scale"):
        LinearStudent(2, 3, init="normal", init_scale=scale)
