"""Neural tangent kernels of the two-layer ReLU network (:class:`kdlib.models.TwoLayerReLU`).

For ``f(x) = m^{-1/2} sum_j a_j relu(<v_j, x>)`` with fixed ``a_j in {-1, +1}`` and trained
``v_j``, the gradient with respect to ``v_j`` is ``m^{-1/2} a_j 1[<v_j, x> > 0] x``, so

* the *empirical* NTK of a finite network is
  ``K_m(x, x') = <x, x'> (1/m) sum_j 1[<v_j, x> > 0] 1[<v_j, x'> > 0]``;
* as ``m -> inf`` with ``v_j ~ N(0, I)`` it converges to the arc-cosine kernel of order 0
  (Cho & Saul, 2009) times the linear kernel:
  ``K(x, x') = <x, x'> (pi - theta(x, x')) / (2 pi)``, ``theta`` the angle between ``x`` and ``x'``.

When the second layer is trained too, its contribution
``(1/m) sum_j relu(<v_j,x>) relu(<v_j,x'>)`` converges to the order-1 arc-cosine kernel
``|x||x'| (sin theta + (pi - theta) cos theta) / (2 pi)``.
A neuron bias is the same as appending a constant 1 to every input.
"""

from __future__ import annotations

import math

import torch

from .models import TwoLayerReLU, check_inputs

__all__ = ["empirical_ntk", "ntk_features", "relu_ntk", "angle"]


def _augment(x: torch.Tensor, bias: bool) -> torch.Tensor:
    if not bias:
        return x
    return torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)], dim=-1)


def _check_single_output(model: TwoLayerReLU) -> None:
    if not isinstance(model, TwoLayerReLU):
        raise TypeError(f"model must be a kdlib.models.TwoLayerReLU; got {type(model).__name__}")
    if model.out_features != 1:
        raise ValueError(f"the NTK helpers support out_features=1; got {model.out_features}")


def ntk_features(model: TwoLayerReLU, x: torch.Tensor) -> torch.Tensor:
    """Gradient features ``phi(x) = d f(x) / d (trained parameters)``, so that ``K = phi phi^T``.

    Parameters
    ----------
    model : TwoLayerReLU
        With ``out_features=1``.
    x : Tensor, shape ``(n, d)`` or ``(R, n, d)``

    Returns
    -------
    Tensor, shape ``(R, n, P)``
        ``P = m (d + bias)`` for a fixed second layer, plus ``m`` when it is trained.
    """
    _check_single_output(model)
    check_inputs(x, model.replicas, model.in_features, model.hidden)
    with torch.no_grad():
        pre = model.features(x)  # (R, n, m)
        scale = 1.0 / math.sqrt(model.width)
        gates = (pre > 0).to(x.dtype) * model.output[..., 0][:, None, :] * scale  # (R, n, m)
        inputs = _augment(x, model.hidden_bias is not None)
        if inputs.dim() == 2:
            inputs = inputs.expand(model.replicas, *inputs.shape)
        feats = (gates[..., :, None] * inputs[..., None, :]).flatten(-2)  # (R, n, m*d')
        if model.output.requires_grad:
            feats = torch.cat([feats, torch.relu(pre) * scale], dim=-1)
    return feats


def empirical_ntk(
    model: TwoLayerReLU,
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    budget: int | None = None,
) -> torch.Tensor:
    """The NTK of the finite network at its current weights.

    ``K[r, i, j] = <phi_r(x1_i), phi_r(x2_j)>`` with ``phi`` the gradient features.

    Computed without forming the ``(n, m d)`` features: ``(G1 G2^T / m) * (x1 x2^T)`` with
    ``G`` the 0/1 activation patterns (``a_j^2 = 1``), summed over blocks of neurons so that the
    ``(R, n, block)`` patterns stay within ``budget`` elements: the full-scale margin experiment
    (16 networks of width 16,384 on 4,000 points) would otherwise hold 17 GB of them at once.

    Parameters
    ----------
    model : TwoLayerReLU
        With ``out_features=1`` and ``+-1`` output weights (the default).
    x1 : Tensor, shape ``(n1, d)`` or ``(R, n1, d)``
    x2 : Tensor, shape ``(n2, d)`` or ``(R, n2, d)``, optional (default ``x1``)
    budget : int, optional
        Elements per activation-pattern block (default ``2^26``, 256 MB of float32, on a CPU;
        ``2^28`` on a GPU). Blocking changes only the order of the additions.

    Returns
    -------
    Tensor, shape ``(R, n1, n2)``
    """
    _check_single_output(model)
    same = x2 is None
    x2 = x1 if same else x2
    check_inputs(x1, model.replicas, model.in_features, model.hidden)
    check_inputs(x2, model.replicas, model.in_features, model.hidden)
    if budget is None:
        budget = 2**26 if model.hidden.device.type == "cpu" else 2**28
    elif isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive int; got {budget!r}")
    n1, n2 = x1.shape[-2], x2.shape[-2]
    block = max(1, budget // (model.replicas * max(n1, n2)))
    bias = model.hidden_bias is not None
    second = model.output.requires_grad
    with torch.no_grad():
        patterns = torch.zeros(model.replicas, n1, n2).to(model.hidden)
        relus = torch.zeros_like(patterns) if second else None
        for start in range(0, model.width, block):
            cols = slice(start, start + block)
            pre1 = _block_features(model, x1, cols)
            pre2 = pre1 if same else _block_features(model, x2, cols)
            a2 = model.output[:, cols, 0][:, None, :] ** 2  # (R, 1, block)
            gates2 = (pre2 > 0).to(pre2.dtype)
            patterns += torch.matmul((pre1 > 0).to(pre1.dtype) * a2, gates2.transpose(1, 2))
            if second:
                relus += torch.matmul(torch.relu(pre1), torch.relu(pre2).transpose(1, 2))
        linear = torch.matmul(_augment(x1, bias), _augment(x2, bias).transpose(-1, -2))
        kernel = patterns / model.width * linear
        if second:
            kernel = kernel + relus / model.width
    return kernel


def _block_features(model: TwoLayerReLU, x: torch.Tensor, cols: slice) -> torch.Tensor:
    """Pre-activations of the neurons ``cols`` only, shape ``(R, n, block)``."""
    pre = torch.matmul(x, model.hidden[:, cols].transpose(1, 2))
    return pre if model.hidden_bias is None else pre + model.hidden_bias[:, None, cols]


def angle(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Angles ``theta_ij`` in ``[0, pi]`` between rows of ``x1 (n1, d)`` and ``x2 (n2, d)``."""
    norms = x1.norm(dim=-1)[:, None] * x2.norm(dim=-1)[None, :]
    if (norms == 0).any():
        raise ValueError(
            "inputs must be non-zero vectors (the angle of a zero vector is undefined)"
        )
    cosine = (x1 @ x2.T) / norms
    return torch.arccos(cosine.clamp(-1.0, 1.0))


def relu_ntk(
    x1: torch.Tensor,
    x2: torch.Tensor | None = None,
    train_second_layer: bool = False,
    bias: bool = False,
) -> torch.Tensor:
    """Infinite-width NTK of :class:`~kdlib.models.TwoLayerReLU` (``v ~ N(0, I)``, ``a = +-1``).

    ``K(x, x') = <x, x'> (pi - theta) / (2 pi)`` (first layer trained), plus
    ``|x||x'| (sin theta + (pi - theta) cos theta) / (2 pi)`` if the second layer is trained.
    With ``bias=True`` the inputs are augmented with a constant 1 (a ``N(0,1)`` neuron bias).

    Parameters
    ----------
    x1 : Tensor, shape ``(n1, d)``
    x2 : Tensor, shape ``(n2, d)``, optional (default ``x1``)

    Returns
    -------
    Tensor, shape ``(n1, n2)``
    """
    for name, value in (("x1", x1), ("x2", x2)):
        if value is not None and (not isinstance(value, torch.Tensor) or value.dim() != 2):
            raise ValueError(f"{name} must be a 2-D tensor of shape (n, d)")
    x2 = x1 if x2 is None else x2
    if x1.shape[1] != x2.shape[1]:
        raise ValueError(
            f"x1 and x2 must have the same dimension; got {x1.shape[1]} and {x2.shape[1]}"
        )
    x1, x2 = _augment(x1, bias), _augment(x2, bias)
    theta = angle(x1, x2)
    kernel = (x1 @ x2.T) * (math.pi - theta) / (2 * math.pi)
    if train_second_layer:
        norms = x1.norm(dim=-1)[:, None] * x2.norm(dim=-1)[None, :]
        kernel = kernel + norms * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) / (
            2 * math.pi
        )
    return kernel
