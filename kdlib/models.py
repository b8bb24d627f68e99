"""Students with a leading *replica* axis: R independent models as one tensor program.

Every parameter has shape ``(R, ...)``. The forward pass is a batched matrix product, and the loss
of a batch of replicas is the *sum* of their losses, so one backward pass gives each replica exactly
the gradient it would get alone (gradients never mix across the replica axis). This is how the
book trains seeds x hyper-parameters at once instead of looping over models in Python.

Inputs are either shared by all replicas, shape ``(n, d)``, or one data set per replica, shape
``(R, n, d)``. Outputs are logits of shape ``(R, n, k)``.

Models
------
:class:`LinearStudent`
    ``x -> x W`` (optionally ``+ b``), ``W`` of shape ``(R, d, k)``.
:class:`DeepLinearStudent`
    ``x -> x W_1 W_2 ... W_L``; its end-to-end weight is the product.
:class:`TwoLayerReLU`
    ``x -> m^{-1/2} relu(x V^T) a`` in NTK parametrisation, first layer trained, second layer
    fixed at random signs (or trained).
:class:`ReplicaCNN`
    A small convolutional network on images ``(n, C, H, W)``: the replicas are the groups of
    grouped convolutions, so R networks still run as one program.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from .config import make_generator

__all__ = ["LinearStudent", "DeepLinearStudent", "TwoLayerReLU", "ReplicaCNN", "check_inputs"]


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int; got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")
    return value


def _generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if generator is not None and seed is not None:
        raise ValueError("pass either generator or seed, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
        return generator
    return make_generator(0 if seed is None else seed)


def check_inputs(x: torch.Tensor, replicas: int, in_features: int, reference: torch.Tensor):
    """Validate model inputs: shape ``(n, d)`` or ``(R, n, d)``, same device and dtype as the model.

    Raises
    ------
    TypeError
        If ``x`` is not a floating-point tensor.
    ValueError
        On a wrong shape, or a device or dtype different from the model's.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor; got dtype {x.dtype}")
    if x.dim() not in (2, 3) or x.shape[-1] != in_features:
        raise ValueError(
            f"x must have shape (n, {in_features}) or ({replicas}, n, {in_features}); "
            f"got {tuple(x.shape)}"
        )
    if x.dim() == 3 and x.shape[0] != replicas:
        raise ValueError(
            f"x has {x.shape[0]} replicas on its leading axis; the model has {replicas}"
        )
    if x.device != reference.device:
        raise ValueError(f"x is on {x.device} but the model is on {reference.device}")
    if x.dtype != reference.dtype:
        raise ValueError(f"x has dtype {x.dtype} but the model has {reference.dtype}")


def replica_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight`` for inputs ``(n, d)`` or ``(R, n, d)``, weights ``(R, d, k)``: ``(R, n, k)``.

    Computed as ``(weight^T x^T)^T``, so that autograd forms the weight gradient ``x^T g`` as
    ``(g^T x)^T``: a product with ``x`` in its stored (row-major) order, which CPU BLAS streams
    2.5-4.5 times faster than the transposed one when ``k`` is small (``python -m kdlib bench
    --kernels``, "linear student step"). Same values up to the order of the additions.
    """
    x_t = x.transpose(-1, -2)  # (d, n) or (R, d, n): a view
    return torch.matmul(weight.transpose(1, 2), x_t).transpose(1, 2)


class LinearStudent(nn.Module):
    """R linear models ``f_r(x) = x W_r (+ b_r)``.

    Parameters
    ----------
    replicas : int
        Number of independent models R.
    in_features : int
        Input dimension d.
    out_features : int
        Number of logits k (1 for a binary classifier).
    init : {"zeros", "normal"}
        Zero initialisation (the setting of Phuong & Lampert's optimisation-bias result) or
        i.i.d. ``N(0, init_scale^2 / d)``.
    init_scale : float
        Scale of the normal initialisation.
    bias : bool
        Whether to add a trained bias (initialised at zero).
    generator, seed :
        Source of randomness for the initialisation (drawn on the CPU, so identical on every
        device). At most one of the two.
    device, dtype :
        Where and in which precision the parameters live.
    """

    def __init__(
        self,
        replicas: int,
        in_features: int,
        out_features: int = 1,
        init: str = "zeros",
        init_scale: float = 1.0,
        bias: bool = False,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.replicas = _check_positive_int(replicas, "replicas")
        self.in_features = _check_positive_int(in_features, "in_features")
        self.out_features = _check_positive_int(out_features, "out_features")
        if init not in ("zeros", "normal"):
            raise ValueError(f"init must be 'zeros' or 'normal'; got {init!r}")
        if isinstance(init_scale, bool) or not (
            isinstance(init_scale, numbers.Real) and math.isfinite(init_scale)
        ):
            raise ValueError(f"init_scale must be a finite number; got {init_scale!r}")
        shape = (replicas, in_features, out_features)
        if init == "zeros":
            weight = torch.zeros(shape, dtype=dtype)
        else:
            gen = _generator(generator, seed)
            weight = torch.randn(shape, generator=gen, dtype=dtype) * (
                init_scale / math.sqrt(in_features)
            )
        self.weight = nn.Parameter(weight.to(device))
        self.bias = (
            nn.Parameter(torch.zeros(replicas, 1, out_features, dtype=dtype, device=device))
            if bias
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(R, n, k)`` for inputs ``(n, d)`` or ``(R, n, d)``."""
        check_inputs(x, self.replicas, self.in_features, self.weight)
        out = replica_matmul(x, self.weight)
        return out if self.bias is None else out + self.bias

    def end_to_end(self) -> torch.Tensor:
        """The weight matrix, shape ``(R, d, k)``."""
        return self.weight


class DeepLinearStudent(nn.Module):
    """R deep linear networks ``f_r(x) = x W_1 W_2 ... W_L``.

    Parameters
    ----------
    replicas, in_features, out_features :
        As in :class:`LinearStudent`.
    depth : int
        Number of weight matrices L (``depth=1`` is a linear model).
    width : int
        Width of the hidden layers.
    init_scale : float
        Each layer is ``N(0, init_scale^2 / fan_in)``; small values give the small-initialisation
        regime of the deep-linear analyses.
    init : {"normal", "balanced"}
        ``"balanced"`` rescales the layers so that ``W_j^T W_j = W_{j+1} W_{j+1}^T`` holds at
        initialisation for a rank-one network (the balancedness condition of deep-linear
        analyses), built from one random direction per layer.
    """

    def __init__(
        self,
        replicas: int,
        in_features: int,
        out_features: int = 1,
        depth: int = 2,
        width: int = 16,
        init_scale: float = 0.1,
        init: str = "normal",
        generator: torch.Generator | None = None,
        seed: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.replicas = _check_positive_int(replicas, "replicas")
        self.in_features = _check_positive_int(in_features, "in_features")
        self.out_features = _check_positive_int(out_features, "out_features")
        self.depth = _check_positive_int(depth, "depth")
        self.width = _check_positive_int(width, "width")
        if init not in ("normal", "balanced"):
            raise ValueError(f"init must be 'normal' or 'balanced'; got {init!r}")
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0; got {init_scale}")
        gen = _generator(generator, seed)
        dims = [in_features] + [width] * (depth - 1) + [out_features]
        layers = []
        if init == "normal":
            for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
                w = torch.randn(replicas, fan_in, fan_out, generator=gen, dtype=dtype)
                layers.append(w * init_scale / math.sqrt(fan_in))
        else:
            # Rank-one balanced: W_j = s * u_j v_j^T with unit vectors chained u_j = v_{j-1}.
            units = [
                torch.nn.functional.normalize(
                    torch.randn(replicas, dim, generator=gen, dtype=dtype), dim=-1
                )
                for dim in dims
            ]
            for j in range(depth):
                layers.append(init_scale * units[j][:, :, None] * units[j + 1][:, None, :])
        self.layers = nn.ParameterList([nn.Parameter(w.to(device)) for w in layers])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(R, n, k)``."""
        check_inputs(x, self.replicas, self.in_features, self.layers[0])
        out = x
        for weight in self.layers:
            out = torch.matmul(out, weight)
        return out

    def end_to_end(self) -> torch.Tensor:
        """The product ``W_1 ... W_L``, shape ``(R, d, k)``."""
        product = self.layers[0]
        for weight in self.layers[1:]:
            product = torch.matmul(product, weight)
        return product


class TwoLayerReLU(nn.Module):
    """R two-layer ReLU networks in NTK parametrisation.

    ``f_r(x) = m^{-1/2} sum_j a_{rj} relu(<v_{rj}, x>)`` with ``v_{rj} ~ N(0, I_d)`` and
    ``a_{rj}`` uniform on ``{-1, +1}`` (one output) or ``N(0, 1)`` per output. The ``1/sqrt(m)``
    output scaling is what makes very wide networks behave like their neural tangent kernel.

    Parameters
    ----------
    replicas, in_features, out_features :
        As in :class:`LinearStudent`.
    width : int
        Number of hidden neurons m.
    train_second_layer : bool
        Whether ``a`` is trained (default: fixed, as in most NTK analyses of two-layer nets).
    symmetric_init : bool
        If True, neurons come in pairs with equal ``v`` and opposite ``a`` so that ``f = 0`` at
        initialisation (removes the random initial function; ``width`` must be even).
    bias : bool
        Whether each neuron has a bias ``relu(<v, x> + c)`` (initialised ``N(0, 1)``).
    """

    def __init__(
        self,
        replicas: int,
        in_features: int,
        width: int,
        out_features: int = 1,
        train_second_layer: bool = False,
        symmetric_init: bool = False,
        bias: bool = False,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.replicas = _check_positive_int(replicas, "replicas")
        self.in_features = _check_positive_int(in_features, "in_features")
        self.width = _check_positive_int(width, "width")
        self.out_features = _check_positive_int(out_features, "out_features")
        if symmetric_init and width % 2:
            raise ValueError(f"symmetric_init needs an even width; got width={width}")
        gen = _generator(generator, seed)
        half = width // 2 if symmetric_init else width
        v = torch.randn(replicas, half, in_features, generator=gen, dtype=dtype)
        c = torch.randn(replicas, half, generator=gen, dtype=dtype) if bias else None
        if out_features == 1:
            a = torch.randint(0, 2, (replicas, half, 1), generator=gen).to(dtype) * 2 - 1
        else:
            a = torch.randn(replicas, half, out_features, generator=gen, dtype=dtype)
        if symmetric_init:
            v = torch.cat([v, v], dim=1)
            a = torch.cat([a, -a], dim=1)
            c = torch.cat([c, c], dim=1) if c is not None else None
        self.hidden = nn.Parameter(v.to(device))  # (R, m, d)
        self.hidden_bias = nn.Parameter(c.to(device)) if c is not None else None  # (R, m)
        self.output = nn.Parameter(a.to(device), requires_grad=train_second_layer)  # (R, m, k)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``<v_j, x> (+ c_j)``, shape ``(R, n, m)``."""
        check_inputs(x, self.replicas, self.in_features, self.hidden)
        pre = torch.matmul(x, self.hidden.transpose(1, 2))
        return pre if self.hidden_bias is None else pre + self.hidden_bias[:, None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(R, n, k)``."""
        hidden = torch.relu(self.features(x))
        return torch.matmul(hidden, self.output) / math.sqrt(self.width)


class ReplicaCNN(nn.Module):
    """R small convolutional networks, run as one program through grouped convolutions.

    Each replica is ``conv3x3(C -> c) -> relu -> conv3x3(c -> c) -> relu -> avgpool(pool) ->
    linear(c (H/pool) (W/pool) -> k)``, with ``same`` padding. Parameters are stored with the
    replica axis first (``(R, c, C, 3, 3)``, ...) and reshaped to the weights of one grouped
    convolution per layer, so a replica's output and gradient are exactly those it would have
    alone. Weights start He-normal (``std = sqrt(2 / fan_in)``; the last layer
    ``1 / sqrt(fan_in)``), biases at zero.

    Parameters
    ----------
    replicas : int
        R.
    in_channels, channels, classes : int
        C, the width c of both convolutional layers, and k.
    image_size : (int, int)
        (H, W), each divisible by ``pool``.
    pool : int
        Side of the average pooling window before the linear layer.
    input_groups : int
        G: the replicas form G consecutive blocks of R / G, and block g reads image set g when
        the input has shape ``(G, n, C, H, W)`` (e.g. one noisy copy of the data per noise level).
        With inputs ``(n, C, H, W)`` every replica reads the same images.
    generator, seed, device, dtype :
        As in :class:`TwoLayerReLU`.
    channels_last : bool or None
        Run the convolutions on channels-last activations. ``None`` (the default): on CPU only,
        where oneDNN's grouped convolutions with a few channels per group are 1.5-3x faster in
        that layout (``python -m kdlib bench --kernels``, "replica CNN step"); CUDA keeps the
        default layout. The outputs agree to rounding either way.
    """

    def __init__(
        self,
        replicas: int,
        in_channels: int,
        channels: int,
        image_size: tuple[int, int],
        classes: int,
        pool: int = 2,
        input_groups: int = 1,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        channels_last: bool | None = None,
    ):
        super().__init__()
        if channels_last is not None and not isinstance(channels_last, bool):
            raise TypeError(
                f"channels_last must be True, False or None; got {type(channels_last).__name__}"
            )
        self.channels_last = channels_last
        self.replicas = _check_positive_int(replicas, "replicas")
        self.in_channels = _check_positive_int(in_channels, "in_channels")
        self.channels = _check_positive_int(channels, "channels")
        self.classes = _check_positive_int(classes, "classes")
        self.pool = _check_positive_int(pool, "pool")
        self.input_groups = _check_positive_int(input_groups, "input_groups")
        if replicas % input_groups:
            raise ValueError(
                f"replicas ({replicas}) must be a multiple of input_groups ({input_groups})"
            )
        try:
            height, width = (int(side) for side in image_size)
        except (TypeError, ValueError):
            raise TypeError(f"image_size must be (H, W); got {image_size!r}") from None
        if height < 1 or width < 1 or height % pool or width % pool:
            raise ValueError(
                f"image_size {image_size} must be positive and divisible by pool={pool}"
            )
        self.image_size = (height, width)
        features = channels * (height // pool) * (width // pool)
        gen = _generator(generator, seed)

        def he(*shape: int, fan_in: int, gain: float = 2.0) -> nn.Parameter:
            w = torch.randn(*shape, generator=gen, dtype=dtype) * math.sqrt(gain / fan_in)
            return nn.Parameter(w.to(device))

        def zeros(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.zeros(*shape, dtype=dtype, device=device))

        r, c = replicas, channels
        self.conv1 = he(r, c, in_channels, 3, 3, fan_in=9 * in_channels)
        self.bias1 = zeros(r, c)
        self.conv2 = he(r, c, c, 3, 3, fan_in=9 * c)
        self.bias2 = zeros(r, c)
        self.linear = he(r, features, classes, fan_in=features, gain=1.0)
        self.bias3 = zeros(r, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(R, n, k)`` for images ``(n, C, H, W)`` or ``(G, n, C, H, W)``."""
        r, c, groups = self.replicas, self.channels, self.input_groups
        shape = (self.in_channels, *self.image_size)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError("x must be a floating-point torch.Tensor of images")
        if x.dim() == 4 and tuple(x.shape[1:]) == shape:
            x = x.repeat(1, groups, 1, 1) if groups > 1 else x
        elif x.dim() == 5 and x.shape[0] == groups and tuple(x.shape[2:]) == shape:
            x = x.transpose(0, 1).reshape(x.shape[1], groups * self.in_channels, *shape[1:])
        else:
            raise ValueError(
                f"x must have shape (n, {', '.join(map(str, shape))}) or "
                f"({groups}, n, {', '.join(map(str, shape))}); got {tuple(x.shape)}"
            )
        if x.device != self.conv1.device or x.dtype != self.conv1.dtype:
            raise ValueError(
                f"x is {x.dtype} on {x.device}; the model is {self.conv1.dtype} on "
                f"{self.conv1.device}"
            )
        if self.channels_last or (self.channels_last is None and x.device.type == "cpu"):
            x = x.contiguous(memory_format=torch.channels_last)  # the layers keep the layout
        h = F.conv2d(x, self.conv1.reshape(r * c, *self.conv1.shape[2:]), padding=1, groups=groups)
        h = torch.relu(h + self.bias1.reshape(1, r * c, 1, 1))
        h = F.conv2d(h, self.conv2.reshape(r * c, c, 3, 3), padding=1, groups=r)
        h = torch.relu(h + self.bias2.reshape(1, r * c, 1, 1))
        h = F.avg_pool2d(h, self.pool)  # (n, R c, H', W')
        h = h.reshape(h.shape[0], r, -1).transpose(0, 1)  # (R, n, c H' W')
        return torch.matmul(h, self.linear) + self.bias3[:, None, :]
