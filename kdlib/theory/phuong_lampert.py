"""Closed forms for Phuong & Lampert, "Towards Understanding Knowledge Distillation" (ICML 2019).

Setting: binary classification in ``R^d``; a linear teacher with weight ``w*`` gives soft labels
``y_i = sigma(<w*, x_i>)``; a linear student ``w`` (or a deep linear network with end-to-end weight
``w``) minimises the binary cross-entropy to the soft labels, averaged over ``n`` training inputs
``x_1..x_n`` (the rows of ``X``), by gradient descent. Its *transfer risk* is
``R(w) = P_x[sign <w, x> != sign <w*, x>]``.

Results implemented here. Each is stated, with its assumptions, and proved in the chapter, whose
theorem labels are given in brackets; the paper's own theorem numbers could not be checked against
its text (only its abstract and introduction were available), so none are cited here.

* **Optimisation bias, linear student** [``phuong-lampert-thm-linear``]: from ``w(0) = 0``,
  gradient descent converges to the orthogonal projection of ``w*`` onto ``span(x_1..x_n)`` - which
  is ``w*`` itself when the inputs span ``R^d`` (``n >= d`` in general position). From any ``w(0)``
  the limit is ``P w* + (I - P) w(0)``: the component outside the span never moves
  (:func:`linear_student_limit`).
* **Optimisation bias, deep linear student** [``phuong-lampert-thm-deep``]: from a *balanced*
  initialisation the end-to-end vector follows
  ``dw/dt = -|w|^{2-2/N} (I + (N-1) w w^T/|w|^2) grad L(w)`` (Arora et al., 2018), so it converges
  to ``P w* + v`` where ``v`` is parallel to ``(I - P) w(0)`` with
  ``|v| = |(I - P) w(0)| (|w(inf)| / |w(0)|)^{1 - 1/N}`` (:func:`deep_linear_limit`); ``v -> 0``
  linearly in the initialisation scale. (The formula for ``v`` is derived in the chapter.)
* **Linear rate** of gradient descent near the limit: the distance contracts by
  ``rho = max |1 - eta lambda|`` per step over the non-zero eigenvalues ``lambda`` of the Hessian
  at the limit (:func:`gd_contraction`).
* **Data geometry** [``phuong-lampert-thm-bound``, ``phuong-lampert-cor-rates``]: with
  ``F(t) = P[phi(x) <= t]`` the mass within angle ``t`` of the teacher's boundary,
  ``E[R(w_n)] <= min_t { F(t) + F(pi/2 - t)^n }`` (:func:`risk_bound`); for
  ``F(t) = (2t/pi)^kappa`` this is ``<= 2 (log n / n)^kappa`` (:func:`polynomial_rate`), and with an
  angular margin it decays exponentially (:func:`margin_rate`).
* **Strong monotonicity** [``phuong-lampert-thm-monotone``]: the angle between ``w*`` and the
  projection onto a growing span never increases, so for a distribution symmetric about ``w*`` the
  risk never increases along nested training sets (:func:`angle_between`,
  :func:`transfer_risk_of_angle`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..data.phuong_lampert import AngularDistribution

__all__ = [
    "angle_between",
    "span_basis",
    "span_projection",
    "linear_student_limit",
    "deep_linear_limit",
    "gd_step_size",
    "gd_contraction",
    "gd_linearisation",
    "transfer_risk_of_angle",
    "risk_bound",
    "polynomial_rate",
    "margin_rate",
]


# -- validation helpers ---------------------------------------------------------------------


def _check_batch(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor")
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (R, n, d); got {tuple(x.shape)}")
    if 0 in x.shape:
        raise ValueError(f"{name} must be non-empty (R, n, d >= 1); got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_vectors(v: torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """Accept ``(d,)`` or ``(R, d)``; return ``(R, d)``."""
    if not isinstance(v, torch.Tensor) or not v.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor")
    replicas, _, d = x.shape
    if v.shape not in ((d,), (replicas, d)):
        raise ValueError(
            f"{name} must have shape ({d},) or ({replicas}, {d}); got {tuple(v.shape)}"
        )
    if v.dtype != x.dtype:
        raise TypeError(f"{name} must have the dtype of x ({x.dtype}); got {v.dtype}")
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if v.shape == (d,):
        return v.expand(replicas, d)
    return v


def _weights(x: torch.Tensor, sample_weight: torch.Tensor | None) -> torch.Tensor:
    """Sample weights as an ``(R, n)`` tensor (ones when absent)."""
    if sample_weight is None:
        return torch.ones_like(x[..., 0])
    weights = _weighted_rows(torch.ones_like(x[..., :1]), sample_weight)[..., 0]
    weights = weights.expand(x.shape[:2])
    if not (weights > 0).any(-1).all():
        raise ValueError("sample_weight must have a positive entry in every replica")
    return weights


def _weighted_rows(x: torch.Tensor, sample_weight: torch.Tensor | None) -> torch.Tensor:
    """Rows multiplied by the sample weights (zero weight = row absent)."""
    if sample_weight is None:
        return x
    if not isinstance(sample_weight, torch.Tensor):
        raise TypeError("sample_weight must be a torch.Tensor of shape (n,) or (R, n)")
    if sample_weight.shape not in (x.shape[:2], x.shape[1:2]):
        raise ValueError(
            f"sample_weight must have shape {tuple(x.shape[1:2])} or {tuple(x.shape[:2])}; "
            f"got {tuple(sample_weight.shape)}"
        )
    if not torch.isfinite(sample_weight).all() or (sample_weight < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    return x * sample_weight.to(x.dtype)[..., None]


def _check_lr(lr, x: torch.Tensor) -> torch.Tensor:
    """A positive finite step size, scalar or one per replica, as an ``(R,)`` tensor."""
    if isinstance(lr, bool) or not isinstance(lr, int | float | torch.Tensor):
        raise TypeError(f"lr must be a float or a Tensor of shape (R,); got {type(lr).__name__}")
    rate = torch.as_tensor(lr, dtype=x.dtype, device=x.device)
    if rate.shape not in ((), (x.shape[0],)):
        raise ValueError(
            f"lr must be a scalar or have shape ({x.shape[0]},); got {tuple(rate.shape)}"
        )
    if not (torch.isfinite(rate) & (rate > 0)).all():
        raise ValueError("lr must be finite and > 0")
    return rate.expand(x.shape[:1])


def _check_sizes(n, minimum: int) -> np.ndarray:
    """Training-set sizes: a non-empty array of integers ``>= minimum``."""
    sizes = np.asarray(n)
    if sizes.dtype.kind not in "iuf":
        raise TypeError(f"n must be an int or an array of ints; got {n!r}")
    if (
        sizes.size == 0
        or not np.all(np.isfinite(sizes))
        or np.any(sizes < minimum)
        or not np.all(np.equal(np.mod(sizes, 1), 0))
    ):
        raise ValueError(f"n must contain integers >= {minimum}")
    return sizes


# -- optimisation bias ----------------------------------------------------------------------


def angle_between(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Angle in ``[0, pi]`` between the last-axis vectors of ``u`` and ``v`` (broadcast).

    Raises
    ------
    ValueError
        If a vector is zero (its angle is undefined) or non-finite, or the shapes do not
        broadcast.
    """
    if not isinstance(u, torch.Tensor) or not isinstance(v, torch.Tensor):
        raise TypeError("u and v must be torch.Tensors")
    for name, value in (("u", u), ("v", v)):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor; got dtype {value.dtype}")
        if value.dim() < 1 or value.shape[-1] < 1:
            raise ValueError(f"{name} must have shape (..., d) with d >= 1")
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        if (value.norm(dim=-1) == 0).any():
            raise ValueError(f"{name} contains a zero vector; its angle is undefined")
    try:
        torch.broadcast_shapes(u.shape, v.shape)
    except RuntimeError:
        raise ValueError(
            f"u and v must broadcast together; got {tuple(u.shape)} and {tuple(v.shape)}"
        ) from None
    cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1))
    return torch.arccos(cos.clamp(-1.0, 1.0))


def span_basis(x: torch.Tensor, sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Orthonormal basis of the span of each replica's inputs, as the columns of ``(R, d, k)``.

    From a singular value decomposition of the input matrix (rows with zero weight are left out);
    directions with singular value below ``max(n, d) * eps * s_max`` are returned as zero columns,
    so ``B B^T`` is the orthogonal projection onto the span.

    Parameters
    ----------
    x : Tensor, shape ``(R, n, d)``
    sample_weight : Tensor, shape ``(n,)`` or ``(R, n)``, optional
        Only the rows with positive weight span the subspace (padding masks).

    Returns
    -------
    Tensor, shape ``(R, d, min(n, d))``
    """
    _check_batch(x)
    rows = _weighted_rows(x, sample_weight)
    _, s, vh = torch.linalg.svd(rows, full_matrices=False)  # vh: (R, k, d)
    tol = max(x.shape[1], x.shape[2]) * torch.finfo(x.dtype).eps * s[..., :1]
    keep = (s > tol).to(x.dtype)  # (R, k)
    return vh.transpose(1, 2) * keep[:, None, :]


def span_projection(
    x: torch.Tensor,
    vector: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    basis: torch.Tensor | None = None,
) -> torch.Tensor:
    """Orthogonal projection of ``vector`` onto the span of each replica's inputs.

    Parameters
    ----------
    x : Tensor, shape ``(R, n, d)``
    vector : Tensor, shape ``(d,)`` or ``(R, d)``
    sample_weight : Tensor, shape ``(n,)`` or ``(R, n)``, optional
        Only the rows with positive weight span the subspace (padding masks).
    basis : Tensor, shape ``(R, d, k)``, optional
        A precomputed :func:`span_basis` (saves the decomposition when projecting several
        vectors on the same inputs).

    Returns
    -------
    Tensor, shape ``(R, d)``
    """
    _check_batch(x)
    vector = _check_vectors(vector, x, "vector")
    if basis is None:
        basis = span_basis(x, sample_weight)
    return (basis @ (basis.transpose(1, 2) @ vector[..., None]))[..., 0]


def linear_student_limit(
    x: torch.Tensor,
    w_star: torch.Tensor,
    w_init: torch.Tensor | None = None,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Where gradient descent on the distillation objective takes a linear student.

    Phuong & Lampert (2019), optimisation bias: from ``w(0) = 0`` the limit is ``P w*``, the
    projection of the teacher's weight onto the span of the training inputs (``w*`` itself if they
    span ``R^d``). Every gradient ``(1/n) sum_i (sigma(<w, x_i>) - y_i) x_i`` lies in the span, so
    the part of ``w(0)`` outside it never changes: from a general ``w(0)`` the limit is
    ``P w* + (I - P) w(0)``.

    Parameters
    ----------
    x : Tensor, shape ``(R, n, d)``
    w_star : Tensor, shape ``(d,)`` or ``(R, d)``
    w_init : Tensor, shape ``(d,)`` or ``(R, d)``, optional
        The initialisation (default zero).
    sample_weight : Tensor, shape ``(n,)`` or ``(R, n)``, optional
        Padding mask: only rows with positive weight are training inputs.

    Returns
    -------
    Tensor, shape ``(R, d)``
    """
    _check_batch(x)
    _check_vectors(w_star, x, "w_star")
    basis = span_basis(x, sample_weight)
    limit = span_projection(x, w_star, basis=basis)
    if w_init is not None:
        w_init = _check_vectors(w_init, x, "w_init")
        limit = limit + w_init - span_projection(x, w_init, basis=basis)
    return limit


def deep_linear_limit(
    x: torch.Tensor,
    w_star: torch.Tensor,
    w_init: torch.Tensor,
    depth: int,
    sample_weight: torch.Tensor | None = None,
    iterations: int = 200,
) -> torch.Tensor:
    """End-to-end limit of a deep linear student trained by gradient flow from a balanced start.

    Phuong & Lampert (2019), optimisation bias of deep linear students (balanced initialisation; the
    chapter's ``phuong-lampert-thm-deep``, whose remainder formula is derived there): the limit has
    the same in-span part ``P w*`` as the linear student. Under the balanced end-to-end dynamics
    (Arora et al., 2018) the out-of-span part ``v(t) = (I - P) w(t)`` stays parallel to ``v(0)`` and
    obeys ``|v(t)| = |v(0)| (|w(t)| / |w(0)|)^{1 - 1/N}``; at the limit
    ``|w|^2 = |P w*|^2 + |v|^2``, a scalar fixed-point equation solved here by iteration (a
    contraction: its slope at the solution is ``(1 - 1/N) |v|^2 / |w|^2 < 1``).

    Parameters
    ----------
    x : Tensor, shape ``(R, n, d)``
    w_star : Tensor, shape ``(d,)`` or ``(R, d)``
    w_init : Tensor, shape ``(R, d)``
        End-to-end vector at initialisation (non-zero).
    depth : int
        Number of layers ``N >= 1`` (``N = 1`` recovers :func:`linear_student_limit`).

    Returns
    -------
    Tensor, shape ``(R, d)``
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int; got {depth!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive int; got {iterations!r}")
    _check_batch(x)
    _check_vectors(w_star, x, "w_star")
    w_init = _check_vectors(w_init, x, "w_init")
    init_norm = w_init.norm(dim=-1)
    if (init_norm == 0).any():
        raise ValueError("w_init must be non-zero for every replica (0 is a stationary point)")
    basis = span_basis(x, sample_weight)
    in_span = span_projection(x, w_star, basis=basis)
    v0 = w_init - span_projection(x, w_init, basis=basis)
    v0_norm = v0.norm(dim=-1)
    power = 1.0 - 1.0 / depth
    v_norm = v0_norm.clone()
    for _ in range(iterations):
        limit_norm = torch.sqrt(in_span.norm(dim=-1) ** 2 + v_norm**2)
        v_norm = v0_norm * (limit_norm / init_norm) ** power
    direction = v0 / v0_norm.clamp_min(torch.finfo(x.dtype).tiny)[..., None]
    return in_span + v_norm[..., None] * direction


def gd_step_size(x: torch.Tensor, sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The step ``eta = 1 / L`` with ``L = lambda_max(X^T X / n) / 4``, per replica.

    ``L`` bounds the Hessian of the mean binary cross-entropy of a linear student,
    ``(1/n) sum_i sigma'(z_i) x_i x_i^T``, because ``sigma' <= 1/4``: gradient descent with this
    step decreases the loss monotonically.

    Returns
    -------
    Tensor, shape ``(R,)``

    Raises
    ------
    ValueError
        If a replica has no non-zero input with positive weight (then ``L = 0``).
    """
    _check_batch(x)
    weights = _weights(x, sample_weight)
    gram = (x.transpose(1, 2) * weights[:, None, :]) @ x / weights.sum(-1)[:, None, None]
    lam = torch.linalg.eigvalsh(gram)[..., -1]
    if not (lam > 0).all():
        raise ValueError("x must have a non-zero input with positive weight in every replica")
    return 4.0 / lam


def gd_contraction(
    x: torch.Tensor,
    w_limit: torch.Tensor,
    lr: torch.Tensor | float,
    sample_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-step contraction factor of gradient descent near its limit (local linear rate).

    Linearising ``w -> w - eta grad L(w)`` at the limit ``w_inf`` gives the error map
    ``I - eta H`` with ``H = (1/n) sum_i sigma'(<w_inf, x_i>) x_i x_i^T``. The error lives in the
    span of the inputs, where ``H`` is positive definite, so the distance shrinks asymptotically by
    ``rho = max |1 - eta lambda|`` per step over the non-zero eigenvalues of ``H``.

    Parameters
    ----------
    x : Tensor, shape ``(R, n, d)``
    w_limit : Tensor, shape ``(R, d)``
    lr : float or Tensor of shape ``(R,)``
    sample_weight : Tensor, shape ``(n,)`` or ``(R, n)``, optional (0/1 mask)

    Returns
    -------
    Tensor, shape ``(R,)``
    """
    return gd_linearisation(x, w_limit, lr, sample_weight)[0]


def gd_linearisation(
    x: torch.Tensor,
    w_limit: torch.Tensor,
    lr: torch.Tensor | float,
    sample_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The contraction factor ``rho`` of :func:`gd_contraction` and its eigendirection.

    The component of the error ``w_t - w_inf`` along the returned unit vector ``u`` (the
    eigenvector of ``H`` attaining ``rho``) is multiplied by exactly ``1 - eta lambda`` per step
    in the linear regime: ``|<u, w_t - w_inf>|`` decays like ``rho^t`` with no contribution from
    the faster modes.

    Returns
    -------
    rho : Tensor, shape ``(R,)``
    direction : Tensor, shape ``(R, d)``
    """
    _check_batch(x)
    w_limit = _check_vectors(w_limit, x, "w_limit")
    lr = _check_lr(lr, x)
    weights = _weights(x, sample_weight)
    z = (x @ w_limit[..., None])[..., 0]
    curvature = torch.sigmoid(z) * torch.sigmoid(-z) * weights
    hessian = (x.transpose(1, 2) * curvature[:, None, :]) @ x / weights.sum(-1)[:, None, None]
    eig, vectors = torch.linalg.eigh(hessian)
    nonzero = eig > eig[..., -1:] * 1e-9
    factor = (1.0 - lr[:, None] * eig).abs()
    factor = torch.where(nonzero, factor, torch.zeros_like(factor))
    rho, index = factor.max(-1)
    direction = torch.gather(vectors, 2, index[:, None, None].expand(-1, x.shape[2], 1))[..., 0]
    return rho, direction


# -- data geometry --------------------------------------------------------------------------


def transfer_risk_of_angle(
    gamma,
    d: int,
    distribution: AngularDistribution,
    nodes: int = 256,
) -> np.ndarray:
    """Exact transfer risk of a linear student at angle ``gamma`` to the teacher, for the inputs
    of :func:`kdlib.data.phuong_lampert.sample_angular`.

    The input distribution is symmetric about the teacher's axis, so the risk depends on the
    student only through the angle ``gamma``. Writing the input as
    ``x = s sin(phi) e_1 + cos(phi) u`` and ``t = s <e, u>`` (``e`` the unit direction of the
    student's component orthogonal to ``e_1``), the student errs iff ``t < -tan(phi)/tan(gamma)``.
    ``t`` is one coordinate of a uniform point on the unit sphere of ``R^{d-1}``, so ``t^2`` is
    ``Beta(1/2, (d-2)/2)`` and

    ``R(gamma) = (1/2) E_{|t|}[ F(arctan(|t| tan gamma)) ]``, ``R(pi - gamma) = 1 - R(gamma)``,

    with ``F`` the distribution's :meth:`~AngularDistribution.boundary_cdf`. The expectation is
    computed by Gauss-Legendre quadrature in the quantile of ``|t|`` (substituting ``p = v^4`` to
    smooth the behaviour of ``F`` at ``0``). ``R`` increases with ``gamma``.

    Parameters
    ----------
    gamma : array_like
        Angles in ``[0, pi]``.
    d : int
        Input dimension, ``>= 3``.
    distribution : AngularDistribution
    nodes : int
        Quadrature nodes.

    Returns
    -------
    ndarray, same shape as ``gamma``
    """
    if isinstance(d, bool) or not isinstance(d, int) or d < 3:
        raise ValueError(f"d must be an int >= 3; got {d!r}")
    if not isinstance(distribution, AngularDistribution):
        raise TypeError("distribution must be an AngularDistribution")
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ValueError(f"nodes must be a positive int; got {nodes!r}")
    gamma = np.asarray(gamma, dtype=float)
    if np.any((gamma < 0) | (gamma > math.pi)) or not np.all(np.isfinite(gamma)):
        raise ValueError("gamma must contain angles in [0, pi]")
    abs_t, weight = _coordinate_quadrature(d, nodes)
    acute = np.minimum(gamma, math.pi - gamma)
    tan_gamma = np.tan(np.minimum(acute, math.pi / 2 - 1e-15))[..., None]
    risk = 0.5 * (distribution.boundary_cdf(np.arctan(abs_t * tan_gamma)) * weight).sum(-1)
    return np.where(gamma > math.pi / 2, 1.0 - risk, risk)


@functools.lru_cache(maxsize=32)
def _coordinate_quadrature(d: int, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``|t|`` and weights for ``E[g(|t|)]``, ``t`` one coordinate of a uniform point on the
    unit sphere of ``R^{d-1}``: Gauss-Legendre in ``v`` with quantile ``p = v^4``."""
    from scipy import special

    v, weight = np.polynomial.legendre.leggauss(nodes)
    v, weight = (v + 1) / 2, weight / 2
    # t^2 ~ Beta(1/2, (d-2)/2); betaincinv is accurate at tiny quantiles, where stats.beta.ppf
    # lost digits (and warned) for d = 6 and 8
    abs_t = np.sqrt(special.betaincinv(0.5, (d - 2) / 2, v**4))
    return abs_t, weight * 4 * v**3


def risk_bound(n, distribution: AngularDistribution, grid: int = 20001) -> np.ndarray:
    """The generalisation bound on the expected transfer risk of the distilled linear student.

    Phuong & Lampert (2019), generalisation bound (the chapter's ``phuong-lampert-thm-bound``, in
    this book's notation): with ``F`` the mass within angle
    ``t`` of the teacher's boundary and ``n`` i.i.d. training inputs,

    ``E[R(w_n)] <= min_{t in [0, pi/2]} { F(t) + F(pi/2 - t)^n }``.

    ``F(pi/2 - t)`` is the probability that an input makes an angle larger than ``t`` with the
    teacher's axis; its ``n``-th power is the probability that no training input is within ``t`` of
    the axis. The minimum is taken on a grid (plus the margin of a margin distribution, where
    the minimum sits for large ``n``), so the value returned is never below the exact minimum and
    is still a valid bound.

    Parameters
    ----------
    n : int or array_like of int
        Training-set sizes, ``>= 1``.
    distribution : AngularDistribution
    grid : int
        Number of grid points for ``t``.

    Returns
    -------
    ndarray, shape of ``n``
    """
    if not isinstance(distribution, AngularDistribution):
        raise TypeError("distribution must be an AngularDistribution")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 2:
        raise ValueError(f"grid must be an int >= 2; got {grid!r}")
    sizes = _check_sizes(n, minimum=1)
    t = np.union1d(np.linspace(0.0, math.pi / 2, grid), [distribution.margin])
    near_boundary = distribution.boundary_cdf(t)
    far_from_axis = distribution.boundary_cdf(math.pi / 2 - t)
    log_far = np.log(np.maximum(far_from_axis, 1e-300))
    values = [np.min(near_boundary + np.exp(float(k) * log_far)) for k in sizes.ravel()]
    return np.minimum(np.asarray(values).reshape(sizes.shape), 1.0)


def polynomial_rate(n, kappa: float) -> np.ndarray:
    """Corollary of :func:`risk_bound` for ``F(t) = (2t/pi)^kappa``: ``2 (log n / n)^kappa``.

    Choosing ``2t/pi = log(n)/n`` in the bound and ``(1 - u)^{kappa n} <= exp(-kappa n u)`` gives
    ``(log n/n)^kappa + n^{-kappa} <= 2 (log n/n)^kappa`` for ``n >= 3`` (Phuong & Lampert, 2019,
    polynomial-distribution corollary of the bound: the rate ``(log n / n)^kappa``).
    """
    if (
        isinstance(kappa, bool)
        or not isinstance(kappa, int | float)
        or not kappa > 0
        or not math.isfinite(kappa)
    ):
        raise ValueError(f"kappa must be a finite real number > 0; got {kappa!r}")
    sizes = np.asarray(n, dtype=float)
    if not np.all(np.isfinite(sizes)):
        raise ValueError(f"n must be finite; got {n!r}")
    if np.any(sizes < 3):
        raise ValueError("the rate is stated for n >= 3")
    return 2.0 * (np.log(sizes) / sizes) ** kappa


def margin_rate(n, margin: float) -> np.ndarray:
    """Corollary of :func:`risk_bound` with an angular margin ``m``: exponential decay.

    ``F(m) = 0``, so taking ``t = m`` gives
    ``E[R] <= F(pi/2 - m)^n = ((pi/2 - 2m) / (pi/2 - m))^n`` for inputs with ``phi`` uniform on
    ``[m, pi/2]`` (Phuong & Lampert, 2019, large-margin corollary of the bound).
    """
    if not 0 < margin < math.pi / 4:
        raise ValueError(f"margin must be in (0, pi/4); got {margin}")
    sizes = np.asarray(n, dtype=float)
    if not np.all(np.isfinite(sizes)) or np.any(sizes < 0):
        raise ValueError(f"n must be finite and >= 0; got {n!r}")
    return ((math.pi / 2 - 2 * margin) / (math.pi / 2 - margin)) ** sizes
