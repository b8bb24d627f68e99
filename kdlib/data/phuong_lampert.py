"""Synthetic data for Phuong & Lampert (2019): inputs with a controlled angle to the teacher.

The paper's generalisation bound depends on the input distribution only through angles: how much
probability mass lies at a small angle to the teacher's decision boundary (hard to learn), and how
much lies at a small angle to the teacher's weight vector (points that pin the student down). This
module samples inputs whose angle to the boundary has a prescribed distribution and is otherwise
isotropic, so that both quantities are known in closed form.

Construction (teacher direction ``e_1``; every learner used in the book is rotation-equivariant,
so the choice of direction is without loss of generality). For each input draw

* ``phi`` in ``[0, pi/2]``, the angle between ``x`` and the boundary hyperplane ``{x_1 = 0}``,
  from :class:`AngularDistribution`;
* a sign ``s`` uniform on ``{-1, +1}`` (the teacher's class);
* a direction ``u`` uniform on the unit sphere of ``e_1^perp``;

and set ``x = s sin(phi) e_1 + cos(phi) u`` (unit norm). Then ``<e_1, x> = s sin(phi)``: the angle
between ``x`` and the line through the teacher's weight is ``pi/2 - phi``.

Also here: isotropic Gaussian inputs (:func:`sample_gaussian`), used where the geometry does not
matter (the optimisation-bias experiments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["AngularDistribution", "sample_angular", "sample_gaussian", "teacher_direction"]

_KINDS = ("polynomial", "margin")


@dataclass(frozen=True)
class AngularDistribution:
    """The distribution of the angle ``phi`` between an input and the teacher's boundary.

    Parameters
    ----------
    kind : {"polynomial", "margin"}
        ``"polynomial"``: ``P[phi <= t] = (2 t / pi)^kappa`` - the mass near the boundary vanishes
        polynomially, faster for larger ``kappa`` (better class separation).
        ``"margin"``: ``phi`` uniform on ``[margin, pi/2]`` - no mass within angle ``margin`` of
        the boundary (a hard angular margin).
    kappa : float
        Exponent of the polynomial family, ``> 0`` (ignored for ``"margin"``).
    margin : float
        Angular margin in radians, in ``[0, pi/2)`` (ignored for ``"polynomial"``).
    """

    kind: str = "polynomial"
    kappa: float = 1.0
    margin: float = 0.0

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}; got {self.kind!r}")
        for name in ("kappa", "margin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
                raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
        if not (self.kappa > 0 and math.isfinite(self.kappa)):
            raise ValueError(f"kappa must be finite and > 0; got {self.kappa}")
        if not 0 <= self.margin < math.pi / 2:
            raise ValueError(f"margin must be in [0, pi/2); got {self.margin}")

    @property
    def label(self) -> str:
        """A short name for legends, e.g. ``"kappa=2"`` or ``"margin=0.2"``."""
        if self.kind == "polynomial":
            return f"kappa={self.kappa:g}"
        return f"margin={self.margin:.2g}"

    def boundary_cdf(self, angle) -> np.ndarray:
        """``F(t) = P[phi <= t]``, the probability mass within angle ``t`` of the boundary.

        Parameters
        ----------
        angle : array_like
            Angles in radians (clipped to ``[0, pi/2]``).

        Returns
        -------
        ndarray, same shape as ``angle``

        Raises
        ------
        ValueError
            If ``angle`` contains NaN (infinite angles are clipped like any other).
        """
        t = np.asarray(angle, dtype=float)
        if np.isnan(t).any():
            raise ValueError("angle must not contain NaN")
        t = np.clip(t, 0.0, math.pi / 2)
        if self.kind == "polynomial":
            return (2.0 * t / math.pi) ** self.kappa
        return np.clip((t - self.margin) / (math.pi / 2 - self.margin), 0.0, 1.0)

    def sample_boundary_angles(self, shape, generator: torch.Generator) -> torch.Tensor:
        """Draw ``phi`` by inverting :meth:`boundary_cdf`; float64 tensor of ``shape`` (CPU).

        ``generator`` must be a CPU ``torch.Generator`` (never the global random state, so that a
        seed gives the same numbers everywhere).
        """
        _check_generator(generator)
        uniform = torch.rand(shape, generator=generator, dtype=torch.float64)
        if self.kind == "polynomial":
            return (math.pi / 2) * uniform ** (1.0 / self.kappa)
        return self.margin + (math.pi / 2 - self.margin) * uniform


def teacher_direction(d: int, dtype: torch.dtype = torch.float64, device="cpu") -> torch.Tensor:
    """The unit vector ``e_1`` of ``R^d``: the teacher's weight direction in this module."""
    if isinstance(d, bool) or not isinstance(d, int) or d < 2:
        raise ValueError(f"d must be an int >= 2; got {d!r}")
    direction = torch.zeros(d, dtype=dtype, device=device)
    direction[0] = 1.0
    return direction


def sample_angular(
    replicas: int,
    n: int,
    d: int,
    distribution: AngularDistribution,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    device="cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm inputs with a prescribed angle to the teacher's boundary (module docstring).

    Parameters
    ----------
    replicas, n, d : int
        Number of independent data sets R, points per data set, input dimension (``d >= 3``).
    distribution : AngularDistribution
    generator : torch.Generator
        CPU generator; the numbers are drawn on the CPU and then moved to ``device``.

    Returns
    -------
    x : Tensor, shape ``(R, n, d)``
    boundary_angle : Tensor, shape ``(R, n)``
        The angle ``phi`` of each input to the boundary hyperplane.
    """
    for name, value in (("replicas", replicas), ("n", n), ("d", d)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if d < 3:
        raise ValueError(f"d must be >= 3 (the boundary needs a sphere to sample from); got {d}")
    if not isinstance(distribution, AngularDistribution):
        raise TypeError("distribution must be an AngularDistribution")
    _check_generator(generator)
    _check_dtype(dtype)
    phi = distribution.sample_boundary_angles((replicas, n), generator)
    sign = torch.randint(0, 2, (replicas, n), generator=generator, dtype=torch.float64) * 2 - 1
    u = torch.randn(replicas, n, d - 1, generator=generator, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    x = torch.cat([(sign * torch.sin(phi))[..., None], torch.cos(phi)[..., None] * u], dim=-1)
    return x.to(device=device, dtype=dtype), phi.to(device=device, dtype=dtype)


def sample_gaussian(
    replicas: int,
    n: int,
    d: int,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    device="cpu",
) -> torch.Tensor:
    """Isotropic Gaussian inputs ``N(0, I_d)``, shape ``(R, n, d)``, drawn on the CPU."""
    for name, value in (("replicas", replicas), ("n", n), ("d", d)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    _check_generator(generator)
    _check_dtype(dtype)
    x = torch.randn(replicas, n, d, generator=generator, dtype=torch.float64)
    return x.to(device=device, dtype=dtype)


def _check_generator(generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a CPU torch.Generator (e.g. kdlib.config.make_generator(seed)); "
            f"got {type(generator).__name__}"
        )
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator; got one on {generator.device}")


def _check_dtype(dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype; got {dtype!r}")
