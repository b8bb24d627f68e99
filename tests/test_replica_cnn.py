"""ReplicaCNN against an independent reference: each replica run alone with plain convolutions."""

import pytest
import torch
import torch.nn.functional as F

from kdlib.models import ReplicaCNN
from kdlib.train import replica_parameters


def _one_replica(model: ReplicaCNN, r: int, images: torch.Tensor) -> torch.Tensor:
    """Replica ``r`` of ``model`` written out layer by layer, without groups or reshapes."""
    h = torch.relu(F.conv2d(images, model.conv1[r], model.bias1[r], padding=1))
    h = torch.relu(F.conv2d(h, model.conv2[r], model.bias2[r], padding=1))
    h = F.avg_pool2d(h, model.pool).flatten(1)
    return h @ model.linear[r] + model.bias3[r]


def _model(**kw) -> ReplicaCNN:
    args = dict(replicas=6, in_channels=2, channels=3, image_size=(8, 8), classes=4, seed=1)
    args.update(kw)
    return ReplicaCNN(dtype=torch.float64, **args)


def test_shared_images_give_each_replica_its_own_network():
    model = _model()
    x = torch.randn(5, 2, 8, 8, dtype=torch.float64)
    out = model(x)
    assert out.shape == (6, 5, 4)
    for r in range(6):
        torch.testing.assert_close(out[r], _one_replica(model, r, x))


def test_input_groups_route_one_image_set_to_each_block_of_replicas():
    model = _model(input_groups=3, pool=4)
    x = torch.randn(3, 5, 2, 8, 8, dtype=torch.float64)
    out = model(x)
    for r in range(6):
        torch.testing.assert_close(out[r], _one_replica(model, r, x[r // 2]))
    torch.testing.assert_close(model(x[0]), model(x[0].expand(3, *x[0].shape)))


@pytest.mark.parametrize("channels_last", [True, False, None])
def test_either_layout_gives_the_reference_outputs_and_gradients(channels_last):
    model = _model(input_groups=2, channels_last=channels_last)
    x = torch.randn(2, 5, 2, 8, 8, dtype=torch.float64)
    out = model(x)
    for r in range(6):
        torch.testing.assert_close(out[r], _one_replica(model, r, x[r // 3]))
    params = replica_parameters(model)
    grads = torch.autograd.grad(out.square().sum(), params)
    reference = torch.autograd.grad(
        sum(_one_replica(model, r, x[r // 3]).square().sum() for r in range(6)), params
    )
    for g, ref in zip(grads, reference, strict=True):
        torch.testing.assert_close(g, ref)


def test_gradients_do_not_mix_across_replicas():
    model = _model()
    x = torch.randn(5, 2, 8, 8, dtype=torch.float64)
    params = replica_parameters(model)
    grads = torch.autograd.grad(model(x)[2].square().sum(), params)
    for p, g in zip(params, grads, strict=True):
        assert p.shape[0] == 6
        others = torch.cat([g[:2].flatten(), g[3:].flatten()])
        assert others.abs().max() == 0 and g[2].abs().max() > 0


def test_same_seed_same_weights_and_he_scale():
    a, b = _model(channels=64, seed=3), _model(channels=64, seed=3)
    torch.testing.assert_close(a.conv2, b.conv2)
    std = a.conv2.std().item()
    assert abs(std - (2 / (9 * 64)) ** 0.5) < 0.01


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="multiple of input_groups"):
        _model(input_groups=4)
    with pytest.raises(ValueError, match="divisible by pool"):
        _model(image_size=(9, 8))
    with pytest.raises(TypeError, match="image_size"):
        _model(image_size=8)
    with pytest.raises(TypeError, match="channels"):
        _model(channels=2.5)
    with pytest.raises(TypeError, match="channels_last must be True, False or None"):
        _model(channels_last="yes")
    model = _model()
    with pytest.raises(ValueError, match="must have shape"):
        model(torch.randn(5, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="float32"):
        model(torch.randn(5, 2, 8, 8))
