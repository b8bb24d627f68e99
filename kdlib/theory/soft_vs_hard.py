"""Soft-label vs hard-label training of two-layer ReLU networks (Mandal, Lin & Srikant, 2025).

The setting (Mandal et al., L4DC 2025, following Ji & Telgarsky, 2020): a two-layer ReLU network
in NTK parametrisation ``f(x; W) = m^{-1/2} sum_s a_s relu(<w_s, x>)`` with fixed ``a_s = +-1``,
``w_s ~ N(0, I)`` at initialisation, inputs ``||x_i|| <= 1`` and labels ``y_i = +-1``.
Its first-layer neural tangent kernel tends, as ``m -> inf``, to

    K(x, x') = E_{z ~ N(0, I)} [<x, x'> 1[<z, x> > 0] 1[<z, x'> > 0]]

(:func:`kdlib.ntk.relu_ntk`). The data's **separation margin of the limiting kernel** is
(Ji & Telgarsky, 2020, Assumption 2.1; used verbatim by Mandal et al.)

    gamma = max_{v: ||v(z)|| <= 1 for all z}  min_i  y_i E_z [<v(z), x_i> 1[<z, x_i> > 0]].

The results compared in the book:

* soft labels (the output probabilities of the teacher's kernel limit, KL loss, projected
  gradient descent): width ``m = O(1 / (gamma^2 eps))`` suffices for the loss averaged over the
  iterations to fall below ``eps`` (:func:`soft_label_width`);
* hard labels (logistic loss): ``m = O(gamma^{-4} ln(1/eps))`` (:func:`hard_label_width`).

Both are *order* bounds (sufficient widths up to constants): what can be tested are exponents and
orderings, never the constants.

Estimating the margin (a convex max-min problem)
------------------------------------------------
Relaxing the pointwise constraint to the unit ball of ``L^2(N(0, I); R^d)`` and minimising over
a mixture ``q`` of the data points (the simplex ``Delta_n``), von Neumann's minimax theorem gives
the kernel (RKHS) margin

    gamma_K = max_{||v||_L2 <= 1} min_{q in Delta_n} sum_i q_i y_i <v, phi_i>
            = min_{q in Delta_n} || sum_i q_i y_i phi_i ||
            = sqrt( min_{q in Delta_n} q^T Q q ),   Q = diag(y) K diag(y),

with ``phi_i(z) = x_i 1[<z, x_i> > 0]`` and ``<phi_i, phi_j> = K(x_i, x_j)``: the hard-margin SVM
(no bias) in the kernel's RKHS. Every pointwise-feasible ``v`` is ``L^2``-feasible, so
``gamma <= gamma_K``; the book measures difficulty with ``gamma_K`` (a quadratic program, solved
exactly) and :func:`sup_norm_margin` estimates ``gamma`` itself.

:func:`kernel_margin` solves the quadratic program on the simplex by accelerated projected
gradient (FISTA, batched over problems) and returns a *certified* interval: any ``q`` gives the
upper bound ``sqrt(q^T Q q)``, and the unit-norm function ``v_q = sum_i q_i y_i phi_i / ||.||``
achieves ``min_i (Q q)_i / sqrt(q^T Q q)``, a lower bound.
The solver stops when the two agree to ``rtol``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "MarginEstimate",
    "kernel_margin",
    "ntk_margin",
    "sup_norm_margin",
    "normalize_rows",
    "soft_label_width",
    "hard_label_width",
    "width_ratio",
    "KernelTeacher",
    "kernel_teacher",
    "SOFT_WIDTH_EXPONENT",
    "HARD_WIDTH_EXPONENT",
]

#: Exponent of gamma in the soft-label width bound ``m = O(gamma^-2 eps^-1)``.
SOFT_WIDTH_EXPONENT = -2.0
#: Exponent of gamma in the hard-label width bound ``m = O(gamma^-4 ln(1/eps))``.
HARD_WIDTH_EXPONENT = -4.0


@dataclass
class MarginEstimate:
    """The margin of a labelled Gram matrix, with a certificate.

    Attributes
    ----------
    gamma : ndarray, shape ``(B,)`` or float
        The estimate, the midpoint of ``[lower, upper]`` (0 when the data are not separable).
    lower : ndarray
        ``min_i y_i v_q(x_i)`` for the unit-norm function ``v_q`` built from ``q``: a margin that
        is *achieved*, so ``gamma >= lower``.
    upper : ndarray
        ``sqrt(q^T Q q)``: ``gamma <= upper`` for every ``q`` in the simplex.
    weights : ndarray, shape ``(B, n)`` or ``(n,)``
        The minimising mixture ``q`` (support vectors are its non-zero entries).
    coef : ndarray, same shape as ``weights``
        ``alpha = q * y / sqrt(q^T Q q)``: the max-margin function is
        ``x -> sum_i alpha_i K(x_i, x)`` (unit RKHS norm).
    iterations : int
        Projected-gradient iterations used.
    converged : bool
        Whether ``upper - lower <= rtol * upper`` was reached for every problem.
    """

    gamma: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    weights: np.ndarray
    coef: np.ndarray
    iterations: int
    converged: bool

    @classmethod
    def concatenate(cls, parts: list[MarginEstimate]) -> MarginEstimate:
        """One estimate of a batch solved in parts (batched estimates, in order): arrays are
        joined along the batch axis, ``iterations`` is the most any part used and
        ``converged`` holds if every part converged."""
        if not parts:
            raise ValueError("parts must hold at least one MarginEstimate")
        if any(np.ndim(part.gamma) != 1 for part in parts):
            raise ValueError("parts must be batched estimates (arrays of shape (B,))")
        fields = ("gamma", "lower", "upper", "weights", "coef")
        joined = {name: np.concatenate([getattr(part, name) for part in parts]) for name in fields}
        return cls(
            **joined,
            iterations=max(part.iterations for part in parts),
            converged=all(part.converged for part in parts),
        )


def kernel_margin(
    gram,
    labels,
    rtol: float = 1e-4,
    max_iter: int = 20000,
    device: torch.device | str = "cpu",
    init=None,
) -> MarginEstimate:
    """The hard margin ``gamma = max_{||u||_H <= 1} min_i y_i u(x_i)`` of a kernel's RKHS.

    Solves ``gamma^2 = min_{q in simplex} q^T Q q``, ``Q = diag(y) K diag(y)`` (the dual form of
    Ji & Telgarsky's Assumption 2.1, see the module docstring), by FISTA with adaptive restart and
    Euclidean projection onto the simplex, batched over a leading axis.

    Parameters
    ----------
    gram : array or Tensor, shape ``(n, n)`` or ``(B, n, n)``
        Symmetric positive semi-definite kernel matrices ``K_ij = K(x_i, x_j)``.
    labels : array or Tensor, shape ``(n,)`` or ``(B, n)``
        Labels in ``{-1, +1}`` (``{0, 1}`` is accepted and mapped to ``{-1, +1}``).
    rtol : float
        Stop when ``upper - lower <= rtol * upper`` for every problem.
    max_iter : int
        Iteration cap; ``converged`` is False if it is reached.
    device : torch.device or str
        Where to iterate (float64); a GPU pays off for thousands of points.
    init : array or Tensor, shape ``(n,)`` or ``(B, n)``, optional
        A warm start: non-negative weights (scaled to sum to 1), e.g. the ``weights`` of a nearby
        problem's estimate (the limiting kernel's, for a finite-width kernel of the same points).
        Only the iterations needed change, not the certified result; default: uniform weights.

    Returns
    -------
    MarginEstimate
        Arrays of shape ``(B,)`` (floats when the input had no batch axis).

    Raises
    ------
    ValueError
        On wrong shapes, ``n = 0`` points, NaN/inf entries, a non-symmetric ``gram`` or one with an
        eigenvalue below ``-1e-8 max(1, lambda_max)`` (not positive semi-definite: the
        certificate would not hold), labels outside ``{-1, +1}`` / ``{0, 1}``, or an ``init`` of
        the wrong shape, with a negative or non-finite entry, or summing to 0.
    """
    _check_rtol(rtol)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int; got {max_iter!r}")
    gram_t = torch.as_tensor(np.asarray(gram) if not isinstance(gram, torch.Tensor) else gram)
    gram_t = gram_t.detach().to(device, torch.float64)
    labels_t = (
        torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
        .detach()
        .to("cpu", torch.float64)
    )
    single = gram_t.dim() == 2
    if single:
        gram_t, labels_t = gram_t[None], labels_t[None]
    if gram_t.dim() != 3 or gram_t.shape[1] != gram_t.shape[2]:
        raise ValueError(f"gram must have shape (n, n) or (B, n, n); got {tuple(gram_t.shape)}")
    if labels_t.shape != gram_t.shape[:2]:
        raise ValueError(
            f"labels must have shape {tuple(gram_t.shape[1:2])} or {tuple(gram_t.shape[:2])} "
            f"to match gram; got {tuple(labels_t.shape)}"
        )
    if gram_t.shape[-1] == 0:
        raise ValueError("gram must describe at least one point (n >= 1)")
    if not torch.isfinite(gram_t).all():
        raise ValueError("gram contains NaN or infinite values")
    if not torch.allclose(gram_t, gram_t.transpose(1, 2), rtol=1e-6, atol=1e-8):
        raise ValueError("gram must be symmetric")
    values = set(labels_t.unique().tolist())
    if values <= {0.0, 1.0}:
        labels_t = 2 * labels_t - 1
    elif not values <= {-1.0, 1.0}:
        raise ValueError(f"labels must be in {{-1, +1}} (or {{0, 1}}); got values {values}")

    start = None if init is None else _warm_start(init, gram_t.shape[:2], single, gram_t.device)
    q_matrix = labels_t[:, :, None] * gram_t * labels_t[:, None, :]
    q, iterations, converged = _min_quadratic_on_simplex(q_matrix, rtol, max_iter, start)
    lower, upper = _margin_bounds(q_matrix, q)
    gamma = torch.where(upper > 0, 0.5 * (lower.clamp(min=0) + upper), torch.zeros_like(upper))
    coef = q * labels_t / upper.clamp(min=1e-300)[:, None]

    def out(t):
        arr = t.cpu().numpy()
        return arr[0] if single else arr

    return MarginEstimate(
        gamma=out(gamma) if not single else float(gamma[0]),
        lower=out(lower) if not single else float(lower[0]),
        upper=out(upper) if not single else float(upper[0]),
        weights=out(q),
        coef=out(coef),
        iterations=iterations,
        converged=converged,
    )


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """Scale each row of ``x (..., n, d)`` to unit Euclidean norm (the paper's ``||x_i|| <= 1``,
    with equality so that the margin does not depend on the pixel scale)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("x must be a floating-point torch.Tensor")
    if x.dim() < 1:
        raise ValueError("x must have shape (..., n, d)")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    norms = x.norm(dim=-1, keepdim=True)
    if (norms == 0).any():
        raise ValueError("x has a zero row; it cannot be normalised")
    return x / norms


def ntk_margin(
    x: torch.Tensor,
    labels: torch.Tensor,
    normalize: bool = True,
    rtol: float = 1e-4,
    max_iter: int = 20000,
    device: torch.device | str = "cpu",
) -> MarginEstimate:
    """The kernel margin ``gamma_K`` of ``(x, labels)`` under the limiting two-layer ReLU NTK.

    ``K = relu_ntk(x)`` (:func:`kdlib.ntk.relu_ntk`: first layer trained, ``+-1`` second layer,
    no bias), then :func:`kernel_margin`. It is an upper bound on the pointwise margin ``gamma``
    of Mandal et al.'s width bounds (:func:`sup_norm_margin`) and the book's stand-in for it (the
    result's field is called ``gamma`` for brevity).

    Parameters
    ----------
    x : Tensor, shape ``(n, d)``
        Inputs; with ``normalize=True`` (default) each row is scaled to unit norm first.
    labels : Tensor, shape ``(n,)``
        ``{-1, +1}`` or ``{0, 1}``.
    """
    from ..ntk import relu_ntk

    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError("x must be a 2-D tensor of shape (n, d)")
    _check_points(x)
    x = x.detach().to(device, torch.float64)
    if normalize:
        x = normalize_rows(x)
    return kernel_margin(relu_ntk(x), labels, rtol=rtol, max_iter=max_iter, device=device)


def sup_norm_margin(
    x: torch.Tensor,
    labels: torch.Tensor,
    n_directions: int = 4096,
    seed: int = 0,
    normalize: bool = True,
    rtol: float = 1e-3,
    max_iter: int = 3000,
    device: torch.device | str = "cpu",
) -> MarginEstimate:
    """Ji & Telgarsky's margin, with the pointwise constraint ``||v(z)|| <= 1`` for every ``z``.

    Assumption 2.1 of Ji & Telgarsky (2020), which Mandal et al. (2025) adopt, bounds ``v(z)``
    pointwise rather than in ``L^2``. The minimax theorem then gives

        gamma_JT = min_{q in simplex} E_z || sum_i q_i y_i x_i 1[<z, x_i> > 0] ||_2
                 <= sqrt(min_q q^T Q q) = gamma_K  (Jensen),

    so the pointwise margin never exceeds the RKHS margin of :func:`ntk_margin`. The expectation
    is replaced by an average over ``n_directions`` Gaussian directions ``z_k`` (sample-average
    approximation, error ``O(n_directions^{-1/2})``), and the resulting convex, piecewise-smooth
    problem is solved by FISTA on a smoothed norm with decreasing smoothing. The certificate is
    exact for the sampled problem: any ``q`` gives the upper end, and ``v(z_k) = g_k / ||g_k||``
    (pointwise unit norm) achieves the lower end.

    Parameters
    ----------
    x : Tensor, shape ``(n, d)`` or ``(B, n, d)``
    labels : Tensor, shape ``(n,)`` or ``(B, n)``, in ``{-1, +1}`` or ``{0, 1}``
    n_directions : int
        Number of Gaussian directions ``z_k`` (shared by the problems of a batch).
    seed : int
        Seed of the directions (drawn on the CPU).
    """
    if isinstance(n_directions, bool) or not isinstance(n_directions, int) or n_directions < 1:
        raise ValueError(f"n_directions must be a positive int; got {n_directions!r}")
    _check_rtol(rtol)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int; got {max_iter!r}")
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3):
        raise ValueError("x must be a tensor of shape (n, d) or (B, n, d)")
    _check_points(x)
    single = x.dim() == 2
    x = x.detach().to(device, torch.float64)
    y = torch.as_tensor(labels).detach().to(device, torch.float64)
    if single:
        x, y = x[None], y[None]
    if y.shape != x.shape[:2]:
        raise ValueError(f"labels must have shape {tuple(x.shape[:2])}; got {tuple(y.shape)}")
    if set(y.unique().tolist()) <= {0.0, 1.0}:
        y = 2 * y - 1
    elif not set(y.unique().tolist()) <= {-1.0, 1.0}:
        raise ValueError("labels must be in {-1, +1} (or {0, 1})")
    if normalize:
        x = normalize_rows(x)
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(n_directions, x.shape[-1], generator=gen, dtype=torch.float64).to(device)
    active = (torch.einsum("kd,bnd->bkn", z, x) > 0).to(torch.float64)  # (B, N, n)
    signed = y[..., None] * x  # (B, n, d)
    q, iterations, converged = _min_mean_norm_on_simplex(active, signed, rtol, max_iter)
    lower, upper = _sup_margin_bounds(active, signed, q)
    gamma = torch.where(upper > 0, 0.5 * (lower.clamp(min=0) + upper), torch.zeros_like(upper))

    def out(t):
        arr = t.cpu().numpy()
        return float(arr[0]) if single and arr.ndim == 1 else (arr[0] if single else arr)

    return MarginEstimate(
        gamma=out(gamma),
        lower=out(lower),
        upper=out(upper),
        weights=out(q),
        coef=out(q * y),
        iterations=iterations,
        converged=converged,
    )


def soft_label_width(gamma, eps, constant: float = 1.0):
    """Order of the width sufficient for soft-label training: ``constant / (gamma^2 eps)``.

    Mandal, Lin & Srikant (2025), soft-label theorem: with soft labels from the teacher in its
    kernel (infinite-width) limit (its output probabilities) and the KL loss, projected gradient
    descent (iterates projected onto a ball around the initialisation) on a width-``m`` student
    reaches a loss averaged over the iterations below ``eps`` once ``m = O(1 / (gamma^2 eps))``.
    The constant is not given by the order bound; it defaults to 1.

    Parameters
    ----------
    gamma : float or array, in ``(0, 1]``
        Margin of the limiting kernel (:func:`ntk_margin`).
    eps : float or array, in ``(0, 1)``
        Target average loss.
    """
    gamma, eps = _check_gamma_eps(gamma, eps)
    constant = _check_constant(constant)
    return constant / (gamma**2 * eps)


def hard_label_width(gamma, eps, constant: float = 1.0):
    """Order of the width sufficient for hard-label training: ``constant ln(1/eps) / gamma^4``.

    Mandal, Lin & Srikant (2025), hard-label result (their adaptation of Ji & Telgarsky, 2020,
    Theorem 2.2): gradient descent on the logistic loss reaches an average loss below ``eps``
    once ``m = O(gamma^{-4} ln(1/eps))``.
    """
    gamma, eps = _check_gamma_eps(gamma, eps)
    constant = _check_constant(constant)
    return constant * np.log(1.0 / eps) / gamma**4


def width_ratio(gamma, eps):
    """``hard_label_width / soft_label_width = eps ln(1/eps) / gamma^2`` (equal constants).

    Grows as ``gamma^{-2}`` when the data get harder; exceeds 1 (hard needs more) once
    ``gamma^2 < eps ln(1/eps)``. The paper's regime ``gamma <= eps`` is sufficient for that (for
    ``eps`` below 0.567), not equivalent: at ``eps = 0.1`` the threshold is ``gamma < 0.48``.
    """
    gamma, eps = _check_gamma_eps(gamma, eps)
    return eps * np.log(1.0 / eps) / gamma**2


@dataclass
class KernelTeacher:
    """The infinite-width teacher after ``steps`` of gradient descent on the logistic loss.

    Attributes
    ----------
    coef : Tensor, shape ``(B, n)``
        ``alpha``: the teacher is ``x -> sum_j alpha_j K(x, x_j)``.
    logits : Tensor, shape ``(B, n)``
        Its logits on the training points, ``K alpha``.
    test_logits : Tensor, shape ``(B, n_test)`` or None
        Its logits on the points of ``cross_gram``, when given.
    rkhs_norm : Tensor, shape ``(B,)``
        ``sqrt(alpha^T K alpha)``, the norm of the teacher in the kernel's RKHS: the distance
        ``||W - W(0)||_F`` its first layer has travelled, in the infinite-width limit.
    loss : Tensor, shape ``(B,)``
        Its final mean logistic loss on the training points.
    """

    coef: torch.Tensor
    logits: torch.Tensor
    test_logits: torch.Tensor | None
    rkhs_norm: torch.Tensor
    loss: torch.Tensor


def kernel_teacher(gram, labels, steps: int, lr: float, cross_gram=None) -> KernelTeacher:
    """The kernel (infinite-width) limit of the two-layer ReLU teacher trained on hard labels.

    The theorems' soft labels are the output probabilities of this teacher. Full-batch gradient
    descent on the mean logistic loss of :class:`~kdlib.models.TwoLayerReLU` (first layer
    trained, symmetric initialisation, so ``f_0 = 0``) moves the outputs, as the width tends to
    infinity, by the kernel gradient step

        f_{t+1}(x) = f_t(x) - (lr / n) sum_j K(x, x_j) (sigmoid(f_t(x_j)) - y_j),

    with ``K`` the limiting NTK (:func:`kdlib.ntk.relu_ntk`): so ``f_t = sum_j alpha_j K(., x_j)``
    with ``alpha_{t+1} = alpha_t - (lr / n) (sigmoid(K alpha_t) - y)``, starting from 0.

    Parameters
    ----------
    gram : Tensor, shape ``(n, n)`` or ``(B, n, n)``
        The limiting NTK on the training points (symmetric).
    labels : Tensor, shape ``(n,)`` or ``(B, n)``
        Hard labels in {0, 1}.
    steps : int
        Gradient-descent steps (>= 0).
    lr : float
        The network's step size (> 0).
    cross_gram : Tensor, shape ``(n_test, n)`` or ``(B, n_test, n)``, optional
        ``K(x_test, x_train)``, for the teacher's logits on test points.

    Returns
    -------
    KernelTeacher
        Batched (leading ``B``) even for a single problem.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int; got {steps!r}")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
    gram = _as_batch(gram, "gram", 3)
    n = gram.shape[-1]
    if gram.shape[-2] != n:
        raise ValueError(f"gram must be square, (n, n) or (B, n, n); got {tuple(gram.shape)}")
    y = _as_batch(labels, "labels", 2).to(gram)
    if y.shape != gram.shape[:2]:
        raise ValueError(f"labels must have shape {tuple(gram.shape[:2])}; got {tuple(y.shape)}")
    if not torch.all((y == 0) | (y == 1)):
        raise ValueError("labels must be hard labels in {0, 1}")
    cross = None
    if cross_gram is not None:
        cross = _as_batch(cross_gram, "cross_gram", 3).to(gram)
        if cross.shape[0] != gram.shape[0] or cross.shape[-1] != n:
            raise ValueError(
                f"cross_gram must have shape (B, n_test, {n}) with B={gram.shape[0]}; "
                f"got {tuple(cross.shape)}"
            )
    alpha = torch.zeros_like(y)
    logits = torch.zeros_like(y)
    for _ in range(steps):
        alpha = alpha - (lr / n) * (torch.sigmoid(logits) - y)
        logits = torch.einsum("bij,bj->bi", gram, alpha)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(
        -1
    )
    test = torch.einsum("bij,bj->bi", cross, alpha) if cross is not None else None
    norm = (alpha * logits).sum(-1).clamp(min=0.0).sqrt()
    return KernelTeacher(alpha, logits, test, norm, loss)


# -- private helpers -------------------------------------------------------------------------------


def _as_batch(value, name: str, dims: int) -> torch.Tensor:
    """``value`` as a floating-point tensor with a leading batch axis (``dims`` axes in all)."""
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(np.asarray(value, dtype=float))
    if not value.is_floating_point():
        value = value.double()
    if value.dim() == dims - 1:
        value = value[None]
    if value.dim() != dims:
        raise ValueError(
            f"{name} must have {dims - 1} or {dims} axes; got shape {tuple(value.shape)}"
        )
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return value


def _check_rtol(rtol) -> None:
    if not (
        isinstance(rtol, int | float)
        and not isinstance(rtol, bool)
        and rtol > 0
        and np.isfinite(rtol)
    ):
        raise ValueError(f"rtol must be a finite positive number; got {rtol!r}")


def _check_points(x: torch.Tensor) -> None:
    """Inputs ``(..., n, d)``: floating point, at least one point of dimension >= 1, finite."""
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor; got dtype {x.dtype}")
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"x must hold at least one point of dimension >= 1; got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")


def _check_constant(constant) -> float:
    if isinstance(constant, bool) or not isinstance(constant, int | float | np.floating):
        raise TypeError(f"constant must be a positive real number; got {type(constant).__name__}")
    if not (np.isfinite(constant) and constant > 0):
        raise ValueError(f"constant must be finite and > 0; got {constant!r}")
    return float(constant)


def _check_gamma_eps(gamma, eps):
    gamma_a = np.asarray(gamma, dtype=float)
    eps_a = np.asarray(eps, dtype=float)
    if not np.all(np.isfinite(gamma_a)) or np.any(gamma_a <= 0) or np.any(gamma_a > 1):
        raise ValueError(f"gamma must be in (0, 1] (unit-norm inputs); got {gamma!r}")
    if not np.all(np.isfinite(eps_a)) or np.any(eps_a <= 0) or np.any(eps_a >= 1):
        raise ValueError(f"eps must be in (0, 1); got {eps!r}")
    if gamma_a.ndim == 0 and eps_a.ndim == 0:
        return float(gamma_a), float(eps_a)
    return gamma_a, eps_a


def _project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``v (B, n)`` onto the probability simplex
    (the sort-based algorithm of Held, Wolfe & Crowder, 1974)."""
    n = v.shape[-1]
    u, _ = torch.sort(v, dim=-1, descending=True)
    cumsum = u.cumsum(dim=-1) - 1.0
    ks = torch.arange(1, n + 1, dtype=v.dtype, device=v.device)
    active = u - cumsum / ks > 0
    rho = (active * ks).argmax(dim=-1, keepdim=True)  # index of the last active entry
    theta = cumsum.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp(min=0.0)


def _margin_bounds(q_matrix: torch.Tensor, q: torch.Tensor):
    """Certified ``(lower, upper)`` for gamma from a simplex point ``q`` (module docstring)."""
    qq = torch.einsum("bij,bj->bi", q_matrix, q)
    upper = (q * qq).sum(-1).clamp(min=0.0).sqrt()
    lower = qq.min(dim=-1).values / upper.clamp(min=1e-300)
    return lower, upper


_POLISH_FROM = 150  # FISTA iterations before the active-set polish (a small support by then)


def _warm_start(init, shape: torch.Size, single: bool, device) -> torch.Tensor:
    """``init`` checked and scaled onto the simplex, as a ``(B, n)`` float64 tensor."""
    start = torch.as_tensor(
        np.asarray(init) if not isinstance(init, torch.Tensor) else init.detach()
    ).to(device, torch.float64)
    if single and start.dim() == 1:
        start = start[None]
    if tuple(start.shape) != tuple(shape):
        expected = tuple(shape[1:]) if single else tuple(shape)
        raise ValueError(f"init must have shape {expected}; got {tuple(start.shape)}")
    if not torch.isfinite(start).all() or (start < 0).any():
        raise ValueError("init must be finite and non-negative")
    total = start.sum(-1, keepdim=True)
    if (total <= 0).any():
        raise ValueError("init must have a positive entry in every problem")
    return start / total


def _min_quadratic_on_simplex(
    q_matrix: torch.Tensor, rtol: float, max_iter: int, start: torch.Tensor | None = None
):
    """FISTA with gradient restart for ``min_{q in simplex} q^T Q q`` (batched), polished on the
    current support every few iterations (from the first check on when warm-started at
    ``start``, whose support is then presumably nearly right).

    The polish solves the problem restricted to the support ``S = {q_i > 0}`` with the sum
    constraint only (``q_S ∝ Q_SS^{-1} 1``); when the support is right this is the exact optimum,
    and the certificate of :func:`_margin_bounds` closes. A polished point is kept only if it is
    in the simplex and tightens the certificate, so the iteration stays a valid FISTA run.
    """
    batch, n, _ = q_matrix.shape
    # Q = diag(y) K diag(y) has the eigenvalues of K (y = +-1): check K is PSD on the way
    eigenvalues = torch.linalg.eigvalsh(q_matrix)
    top = eigenvalues[:, -1]
    if (eigenvalues[:, 0] < -1e-8 * top.abs().clamp(min=1.0)).any():
        raise ValueError(
            "gram must be positive semi-definite; min eigenvalue "
            f"{float(eigenvalues[:, 0].min()):.3g}"
        )
    lipschitz = 2 * top.clamp(min=1e-12)  # of grad = 2 Q q
    step = (1.0 / lipschitz)[:, None]
    if start is None:
        q = torch.full((batch, n), 1.0 / n, dtype=q_matrix.dtype, device=q_matrix.device)
    else:
        q = start.to(q_matrix.dtype).clone()
    polish_from = _POLISH_FROM if start is None else 0
    y, t = q.clone(), torch.ones(batch, 1, dtype=q_matrix.dtype, device=q_matrix.device)
    converged = False
    iteration = 0
    check_every = 25
    for iteration in range(1, max_iter + 1):
        grad = 2 * torch.einsum("bij,bj->bi", q_matrix, y)
        q_next = _project_simplex(y - step * grad)
        t_next = 0.5 * (1 + torch.sqrt(1 + 4 * t**2))
        restart = ((y - q_next) * (q_next - q)).sum(-1, keepdim=True) > 0
        momentum = torch.where(restart, torch.zeros_like(t), (t - 1) / t_next)
        y = q_next + momentum * (q_next - q)
        t = torch.where(restart, torch.ones_like(t), t_next)
        q = q_next
        if iteration % check_every == 0 or iteration == max_iter:
            lower, upper = _margin_bounds(q_matrix, q)
            done = ((upper - lower) <= rtol * upper) | (upper <= 1e-10)  # 0: not separable
            polish = torch.nonzero(~done).flatten().tolist() if iteration >= polish_from else []
            for b in polish:
                polished = _polish_on_support(q_matrix[b], q[b])
                if polished is None:
                    continue
                low_p, up_p = _margin_bounds(q_matrix[b : b + 1], polished[None])
                if up_p - low_p < upper[b] - lower[b]:
                    q[b], y[b], t[b] = polished, polished, 1.0
                    done[b] = (up_p - low_p) <= rtol * up_p
            if bool(done.all()):
                converged = True
                break
    return q, iteration, converged


def _polish_on_support(
    q_matrix: torch.Tensor, q: torch.Tensor, max_steps: int = 200
) -> torch.Tensor | None:
    """Primal active-set refinement (Lawson & Hanson's scheme adapted to the simplex) started
    from the feasible point ``q``: solve on the support ``P`` with only ``sum q = 1``
    (``q_P ∝ Q_PP^{-1} 1``), step back to the simplex if that point leaves it, and add the index
    that violates the optimality condition ``(Q q)_i >= q^T Q q`` most. Returns the last feasible
    point (None if a restricted system was singular); the objective never increases.
    """
    q = q.clone()
    support = q > 1e-12 * q.max()
    for _ in range(max_steps):
        sub = q_matrix[support][:, support]
        ones = torch.ones(int(support.sum()), dtype=q.dtype, device=q.device)
        try:
            z_sub = torch.linalg.solve(sub, ones)
        except RuntimeError:  # singular restricted Gram matrix
            return None
        if not torch.isfinite(z_sub).all() or z_sub.sum() <= 0:
            return None
        z = torch.zeros_like(q)
        z[support] = z_sub / z_sub.sum()
        if (z[support] <= 0).any():  # move towards z until a coordinate hits zero
            leaving = support & (z <= 0)
            alpha = (q[leaving] / (q[leaving] - z[leaving])).min()
            q = q + alpha * (z - q)
            support = support & (q > 1e-14)
            q[~support] = 0.0
            q = q / q.sum()
            continue
        q = z
        grad = q_matrix @ q
        value = q @ grad
        outside = torch.where(support, torch.full_like(grad, float("inf")), grad)
        j = int(torch.argmin(outside))
        if not outside[j] < value * (1 - 1e-12):
            return q  # optimality conditions hold
        support[j] = True
    return q


def _sup_margin_bounds(active: torch.Tensor, signed: torch.Tensor, q: torch.Tensor):
    """Certified ``(lower, upper)`` for the sampled pointwise margin at ``q`` (batched)."""
    g = torch.bmm(active * q[:, None, :], signed)  # (B, N, d): g_k = sum_i A_ki q_i y_i x_i
    norms = g.norm(dim=-1)  # (B, N)
    upper = norms.mean(-1)
    unit = g / norms.clamp(min=1e-300)[..., None]
    # margin of v(z_k) = g_k/||g_k||: y_i <x_i, mean_k A_ki v_k>
    margins = (active * torch.bmm(unit, signed.transpose(1, 2))).mean(1)  # (B, n)
    return margins.min(-1).values, upper


def _min_mean_norm_on_simplex(active, signed, rtol: float, max_iter: int):
    """FISTA on ``mean_k sqrt(||g_k(q)||^2 + mu^2)`` over the simplex, ``mu`` shrinking by 2x
    whenever the smoothed problem has stalled (batched; the certificate decides convergence)."""
    batch, n_dir, n = active.shape
    # ||g_k(q)||^2 = q^T M_k q with M_k = D_k S S^T D_k: gradient Lipschitz <= max_k ||M_k|| / mu
    gram = torch.bmm(signed, signed.transpose(1, 2))
    scale = torch.linalg.eigvalsh(gram)[:, -1].clamp(min=1e-12)[:, None]  # bounds ||M_k||
    q = torch.full((batch, n), 1.0 / n, dtype=signed.dtype, device=signed.device)
    mu = 0.1 * torch.sqrt(scale) / n
    y_, t = q.clone(), torch.ones(batch, 1, dtype=q.dtype, device=q.device)
    converged, iteration = False, 0
    for iteration in range(1, max_iter + 1):
        g = torch.bmm(active * y_[:, None, :], signed)
        weight = 1.0 / torch.sqrt((g * g).sum(-1) + mu**2)  # (B, N)
        grad = (active * torch.bmm(g * weight[..., None], signed.transpose(1, 2))).mean(1)
        q_next = _project_simplex(y_ - (mu / scale) * grad)
        t_next = 0.5 * (1 + torch.sqrt(1 + 4 * t**2))
        restart = ((y_ - q_next) * (q_next - q)).sum(-1, keepdim=True) > 0
        momentum = torch.where(restart, torch.zeros_like(t), (t - 1) / t_next)
        y_ = q_next + momentum * (q_next - q)
        t = torch.where(restart, torch.ones_like(t), t_next)
        q = q_next
        if iteration % 50 == 0 or iteration == max_iter:
            lower, upper = _sup_margin_bounds(active, signed, q)
            gap = upper - lower
            done = (gap <= rtol * upper) | (upper <= 1e-10)
            if bool(done.all()):
                converged = True
                break
            mu = torch.where(gap[:, None] < 20 * mu, mu / 2, mu)  # refine the smoothing
    return q, iteration, converged
