"""Multi-view data of Allen-Zhu & Li (2023): classes with two views each, patches, feature noise.

The data model of "Towards Understanding Ensemble, Knowledge Distillation and Self-Distillation in
Deep Learning" (ICLR 2023, arXiv 2012.09816; the paper's definition of the multi-view and
single-view distributions ``D_m`` and ``D_s``). Labels ``y`` are uniform on the ``k`` classes.
Each of the ``k`` classes owns two *views* (features)
``v_{i,1}, v_{i,2} in R^d``; all ``2k`` features are orthonormal. An input is a list of ``P``
patches ``X = (x_1, ..., x_P)``, each in ``R^d``. A sample of class ``y``:

1. picks a set of *off-target* features: each ``v_{j,l}`` with ``j != y`` is present with
   probability ``s / k`` (``s`` = ``sparsity``);
2. gives every present feature (the two views of ``y`` and the off-target ones) its own
   ``C_p`` disjoint patches (``patches_per_feature``), chosen uniformly at random (the paper
   allows any distribution of the patches);
3. writes ``x_p = z_p v + sum_{v'} alpha_{p,v'} v' + xi_p`` on a patch ``p`` of feature ``v``,
   and ``x_p = sum_{v'} alpha_{p,v'} v' + xi_p`` on the other patches, where the *feature
   noise* ``alpha_{p,v'}`` is uniform on ``[0, gamma]`` for every feature ``v'`` and the
   Gaussian noise ``xi_p ~ N(0, sigma_p^2 I_d)``;
4. chooses the total weights ``Z_v = sum_{p in P_v(X)} z_p`` (the paper leaves the split over
   the ``C_p`` patches free; we spread ``Z_v`` evenly, ``z_p = Z_v / C_p``):

   * **multi-view** (``D_m``): ``Z_v`` uniform on ``[1, main_high]`` for both views of ``y``,
     uniform on ``[off_target_low, off_target_high]`` (the paper: ``[Omega(1), 0.4]``) for the
     off-target features;
   * **single-view** (``D_s``): a view ``l_hat`` of ``y`` is chosen uniformly; ``Z`` is uniform
     on ``[1, main_high]`` for ``v_{y, l_hat}``, on ``[rho, 2 rho]`` for the other view of
     ``y`` (the paper: ``[rho, O(rho)]``) and on ``[Gamma / 2, Gamma]`` for off-target
     features (the paper: ``[Omega(Gamma), Gamma]``); the paper's choices make ``rho << Gamma``.

A data set of ``n`` points with single-view fraction ``mu`` holds exactly ``round(mu n)``
single-view points (the paper's ``Z_s``, ``mu N`` of its ``N`` training points) and the rest
multi-view (``Z_m``), shuffled; the paper's test distribution is the mixture
``(1 - mu) D_m + mu D_s``, which a large sample with fraction ``mu`` represents.

The paper's asymptotic choices (``d = poly(k)``, ``s, C_p = polylog(k)``, ``mu = 1/poly(k)``,
``rho = k^{-0.01}``, ``Gamma = 1/polylog(k)``, small ``gamma`` and ``sigma_p``, all for ``k``
large) are replaced by concrete numbers in
:class:`MultiViewParams`; the properties they guarantee (orthonormal views, disjoint patches,
weights in their ranges, exact counts) are what the tests check on samples.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from ..config import make_generator

__all__ = ["MultiViewParams", "MultiViewData", "make_features", "sample_multi_view"]


@dataclass(frozen=True)
class MultiViewParams:
    """Parameters of the multi-view distributions ``D_m`` and ``D_s`` (see the module docstring).

    Attributes
    ----------
    n_classes : int
        ``k``, number of classes (each with two views), ``>= 2``.
    dim : int
        ``d``, the patch dimension; ``>= 2k`` (the views are orthonormal).
    n_patches : int
        ``P``, patches per input; must fit every present feature: ``P >= 2 k C_p``.
    patches_per_feature : int
        ``C_p``, the number of patches that carry each present feature.
    sparsity : float
        ``s``: each off-target feature is present with probability ``s / k`` (``0 <= s <= k``).
    main_high : float
        Upper end of the weight ``Z`` of a class's own (strong) views, which is ``>= 1``.
    off_target_low, off_target_high : float
        Range of ``Z`` for off-target features in multi-view data (paper: ``[Omega(1), 0.4]``).
    weak_view : float
        ``rho``: in single-view data the other view of the class has ``Z in [rho, 2 rho]``.
    single_off_target : float
        ``Gamma``: off-target features in single-view data have ``Z in [Gamma/2, Gamma]``.
    feature_noise : float
        ``gamma``: every patch carries ``alpha_{p,v} ~ U[0, gamma]`` of every feature ``v``.
    noise_std : float
        ``sigma_p``, the per-coordinate standard deviation of the Gaussian patch noise.
    """

    n_classes: int = 4
    dim: int = 64
    n_patches: int = 16
    patches_per_feature: int = 2
    sparsity: float = 2.0
    main_high: float = 1.5
    off_target_low: float = 0.2
    off_target_high: float = 0.4
    weak_view: float = 0.05
    single_off_target: float = 0.1
    feature_noise: float = 0.01
    noise_std: float = 0.05

    def __post_init__(self):
        for name in ("n_classes", "dim", "n_patches", "patches_per_feature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int; got {type(value).__name__}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2; got {self.n_classes}")
        if self.patches_per_feature < 1:
            raise ValueError(f"patches_per_feature must be >= 1; got {self.patches_per_feature}")
        if self.dim < 2 * self.n_classes:
            raise ValueError(
                f"dim must be >= 2 n_classes = {2 * self.n_classes} (orthonormal views); "
                f"got {self.dim}"
            )
        need = 2 * self.n_classes * self.patches_per_feature
        if self.n_patches < need:
            raise ValueError(
                f"n_patches must be >= 2 n_classes patches_per_feature = {need} so every "
                f"feature fits in its own patches; got {self.n_patches}"
            )
        for name in (
            "sparsity",
            "main_high",
            "off_target_low",
            "off_target_high",
            "weak_view",
            "single_off_target",
            "feature_noise",
            "noise_std",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
        if not 0 <= self.sparsity <= self.n_classes:
            raise ValueError(f"sparsity must be in [0, n_classes]; got {self.sparsity}")
        if not (self.main_high >= 1 and math.isfinite(self.main_high)):
            raise ValueError(f"main_high must be finite and >= 1; got {self.main_high}")
        if not 0 <= self.off_target_low <= self.off_target_high < 1:
            raise ValueError(
                "need 0 <= off_target_low <= off_target_high < 1; got "
                f"{self.off_target_low}, {self.off_target_high}"
            )
        for name in ("weak_view", "single_off_target", "feature_noise", "noise_std"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0; got {value}")
        if 2 * self.weak_view >= 1:
            raise ValueError(
                f"weak_view must be < 1/2 (weak view below the main view); got {self.weak_view}"
            )

    @property
    def n_features(self) -> int:
        """``2k``, the number of views."""
        return 2 * self.n_classes


@dataclass
class MultiViewData:
    """A sample of the multi-view distribution.

    Attributes
    ----------
    x : Tensor, shape ``(n, P, d)``
        The patches.
    y : LongTensor, shape ``(n,)``
        Labels in ``0..k-1``.
    view : LongTensor, shape ``(n,)``
        ``-1`` for multi-view points, else the view ``l_hat in {0, 1}`` that a single-view point
        carries strongly.
    weights : Tensor, shape ``(n, k, 2)``
        The total weight ``Z`` of each feature ``v_{j,l}`` over its patches (0 when absent; the
        feature noise ``alpha`` is not included).
    features : Tensor, shape ``(k, 2, d)``
        The orthonormal views ``v_{j,l}``.
    """

    x: torch.Tensor
    y: torch.Tensor
    view: torch.Tensor
    weights: torch.Tensor
    features: torch.Tensor

    @property
    def single_view(self) -> torch.Tensor:
        """Bool mask ``(n,)`` of the single-view points."""
        return self.view >= 0

    @property
    def present(self) -> torch.Tensor:
        """Bool ``(n, k, 2)``: which features are present in each point."""
        return self.weights > 0

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> MultiViewData:
        """The same sample on ``device``."""
        return MultiViewData(
            *(getattr(self, f).to(device) for f in ("x", "y", "view", "weights", "features"))
        )


def make_features(
    n_classes: int,
    dim: int,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """``2k`` random orthonormal views ``v_{j,l}``, shape ``(k, 2, d)`` (drawn on the CPU).

    Orthonormality is the paper's simplifying assumption on the feature dictionary.

    Parameters
    ----------
    n_classes : int
        ``k >= 1``.
    dim : int
        ``d >= 2k``.
    generator : torch.Generator, optional
        CPU generator to draw from; else one seeded with ``seed`` (default 0).
    """
    for name, value in (("n_classes", n_classes), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator; got {type(generator).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype; got {dtype!r}")
    if dim < 2 * n_classes:
        raise ValueError(f"dim must be >= 2 n_classes = {2 * n_classes}; got {dim}")
    gen = generator if generator is not None else make_generator(0 if seed is None else seed)
    gaussian = torch.randn(dim, 2 * n_classes, generator=gen, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)
    q = q * torch.sign(torch.diagonal(r))[None, :]  # a unique (Haar) orthonormal frame
    return q.T.reshape(n_classes, 2, dim).to(dtype)


def sample_multi_view(
    params: MultiViewParams,
    features: torch.Tensor,
    n: int,
    single_view_fraction: float,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> MultiViewData:
    """Draw ``n`` points, exactly ``round(mu n)`` of them single-view, in random order.

    Parameters
    ----------
    params : MultiViewParams
    features : Tensor, shape ``(k, 2, d)``
        From :func:`make_features` (the same for training and test data).
    n : int
        Number of points, ``>= 1``.
    single_view_fraction : float
        ``mu`` in ``[0, 1]``.
    generator : torch.Generator
        CPU generator; all randomness comes from it.

    Returns
    -------
    MultiViewData
        On the CPU, ``x`` in ``dtype``.
    """
    if not isinstance(params, MultiViewParams):
        raise TypeError(f"params must be a MultiViewParams; got {type(params).__name__}")
    if not isinstance(features, torch.Tensor) or not features.is_floating_point():
        raise TypeError("features must be a floating-point torch.Tensor (from make_features)")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a CPU torch.Generator; got {type(generator).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype; got {dtype!r}")
    if isinstance(single_view_fraction, bool) or not isinstance(single_view_fraction, numbers.Real):
        raise TypeError(
            "single_view_fraction must be a real number in [0, 1]; "
            f"got {type(single_view_fraction).__name__}"
        )
    k, d, n_patches, c_p = (
        params.n_classes,
        params.dim,
        params.n_patches,
        params.patches_per_feature,
    )
    if tuple(features.shape) != (k, 2, d):
        raise ValueError(f"features must have shape {(k, 2, d)}; got {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError("features contains NaN or infinite values")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    if not 0.0 <= single_view_fraction <= 1.0:
        raise ValueError(f"single_view_fraction must be in [0, 1]; got {single_view_fraction}")
    gen = generator
    f64 = torch.float64

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=gen, dtype=f64)

    y = torch.randint(0, k, (n,), generator=gen)
    n_single = int(round(single_view_fraction * n))
    is_single = torch.zeros(n, dtype=torch.bool)
    is_single[torch.randperm(n, generator=gen)[:n_single]] = True
    chosen = torch.randint(0, 2, (n,), generator=gen)
    view = torch.where(is_single, chosen, torch.full_like(chosen, -1))

    own = torch.nn.functional.one_hot(y, k).bool()[:, :, None].expand(n, k, 2)  # (n, k, 2)
    off_present = (torch.rand(n, k, 2, generator=gen) < params.sparsity / k) & ~own
    # weights Z per feature, by case
    multi_main = uniform(1.0, params.main_high, n, k, 2)
    multi_off = uniform(params.off_target_low, params.off_target_high, n, k, 2)
    single_main = uniform(1.0, params.main_high, n, k, 2)
    single_weak = uniform(params.weak_view, 2 * params.weak_view, n, k, 2)
    single_off = uniform(params.single_off_target / 2, params.single_off_target, n, k, 2)
    strong = torch.nn.functional.one_hot(chosen, 2).bool()[:, None, :] & own  # (n, k, 2)
    single_w = torch.where(strong, single_main, torch.where(own, single_weak, single_off))
    multi_w = torch.where(own, multi_main, multi_off)
    weights = torch.where(is_single[:, None, None], single_w, multi_w)
    weights = torch.where(own | off_present, weights, torch.zeros_like(weights))

    # patches: feature f (flattened j*2+l) of rank r among present ones gets the patches
    # perm[r C_p : (r + 1) C_p] of a random permutation of the P patches (disjoint by design)
    present = (weights > 0).reshape(n, 2 * k)
    rank = torch.cumsum(present.long(), dim=1) - 1  # (n, 2k)
    perm = torch.argsort(torch.rand(n, n_patches, generator=gen), dim=1)  # (n, P)
    split = torch.full((n, 2 * k, c_p), 1.0 / c_p, dtype=f64)  # Z spread evenly over C_p
    slot = rank[:, :, None].clamp(min=0) * c_p + torch.arange(c_p)  # (n, 2k, C_p)
    patch = torch.gather(perm, 1, slot.reshape(n, -1)).reshape(n, 2 * k, c_p)
    coeff = torch.zeros(n, n_patches, 2 * k, dtype=f64)  # z_p per (patch, feature)
    value = weights.reshape(n, 2 * k, 1) * split * present[:, :, None]
    rows = torch.arange(n)[:, None, None].expand_as(patch)
    cols = torch.arange(2 * k)[None, :, None].expand_as(patch)
    coeff[rows, patch, cols] = value
    coeff = coeff + uniform(0.0, params.feature_noise, n, n_patches, 2 * k)
    x = coeff @ features.to(f64).reshape(2 * k, d)
    x = x + params.noise_std * torch.randn(n, n_patches, d, generator=gen, dtype=f64)
    return MultiViewData(x.to(dtype), y, view, weights.to(dtype), features.to(dtype))
