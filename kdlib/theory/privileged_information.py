"""Knowledge transfer with privileged information (PI) in the kernel regime.

After Rahbar, Panahi, Bhattacharyya, Dubhashi & Haghir Chehreghani, *Analysis of Knowledge
Transfer in Kernel Regime* (arXiv:2003.13438 v3; published as Panahi, Rahbar et al., CIKM 2022,
pp. 1615-1624; v1 titled *On the Unreasonable Effectiveness of Knowledge Distillation: Analysis in
the Kernel Regime*), in the wide two-layer setting of Du et al. (2019) and Arora et al. (2019).

Setting and notation
--------------------
Student ``f(x) = m^{-1/2} sum_r a_r relu(<w_r, x>)``, ``a_r = +-1`` fixed, ``w_r`` trained,
inputs ``x_i`` on the unit sphere, ``i = 1..n``. ``y`` are the labels, ``phi`` the teacher's
privileged information on the training inputs (its real-valued outputs), ``rho in [0, 1]`` the
mixing weight. The student minimises, by gradient descent with step ``lr``,

``L_rho(W) = 1/(2n) sum_i [(1 - rho)(u_i - y_i)^2 + rho (u_i - phi_i)^2]``, ``u_i = f(x_i)``
(the mixed loss), which equals ``1/(2n) |u - ytilde|^2 + const`` with the *mixed target*
``ytilde = (1 - rho) y + rho phi``.

Kernel regime (Du et al., 2019, Thms 3.1 and 4.1; Arora et al., 2019, Thm 4.1): as
``m -> inf`` the Gram matrix of the network's tangent kernel stays at
``H_ij = <x_i, x_j> (pi - theta_ij) / (2 pi)`` (:func:`kdlib.ntk.relu_ntk`) and the outputs obey
the linear recursion ``u(t+1) - ytilde = (I - lr H / n)(u(t) - ytilde)``. With
``H = sum_k lambda_k v_k v_k^T``, the residual along each eigenvector decays at its own rate:

``<v_k, u(t) - ytilde> = (1 - lr lambda_k / n)^t <v_k, u(0) - ytilde>``.

Everything below follows from this recursion: the interpolation between data and PI
(``u(inf) = ytilde``, training error against the data ``rho^2 |phi - y|^2 / n``), the number of
iterations to a tolerance (set by how the target's energy spreads over the spectrum: a teacher
whose outputs lie along the top eigenvectors is learned in fewer iterations), the distance the
weights travel (``|W(t) - W(0)|_F^2 = ytilde^T (I - (I - A)^t)^2 H^{-1} ytilde``, ``A = lr H/n``,
Arora et al., 2019, Lemma 5.3), and its generalisation consequence (Arora et al., Thm 5.1:
test error ``<~ sqrt(2 ytilde^T H^{-1} ytilde / n)``).

Conditioning. The closed forms that involve ``H^{-1}`` (:func:`distance_from_init`,
:func:`generalization_bound`, :func:`kernel_test_outputs`) use no regularisation: they need ``H``
positive definite *to working precision*, ``lambda_min > n eps lambda_max`` (``eps`` the float64
machine epsilon), and raise a ``ValueError`` otherwise; so does :func:`iterations_to_tolerance`,
whose answer along a direction with ``lambda = 0`` would be infinite. Near-duplicate inputs make
``H`` ill-conditioned (for the ReLU NTK ``lambda_min`` shrinks roughly like the angle between the
two inputs); above that threshold the results stay finite and vary continuously with the inputs.
The other functions (:func:`kernel_outputs`, :func:`eigen_residuals`, :func:`residual_norms`)
never invert ``H`` and accept singular Gram matrices.

Note: the paper's body (its theorems and their numbering) was not available to us, only its
abstract and the opening of its introduction; the statements here are derived in this module and
the chapter as kernel-regime consequences of the abstract's claims, written in the notation of Du
et al. (2019), whose results (and Arora et al.'s) are cited by number where used. See the chapter
for the correspondence.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..ntk import relu_ntk

__all__ = [
    "gram_matrix",
    "spectrum",
    "mixed_target",
    "kernel_outputs",
    "eigen_residuals",
    "training_error",
    "asymptotic_training_error",
    "residual_norms",
    "iterations_to_tolerance",
    "iterations_upper_bound",
    "crossing_interval",
    "distance_from_init",
    "generalization_bound",
    "kernel_test_outputs",
    "deviation_bound",
    "tracking_bound",
    "stable_learning_rate",
]


# -- the Gram matrix and its spectrum -----------------------------------------------------------


def gram_matrix(x: torch.Tensor) -> torch.Tensor:
    """The infinite-width NTK Gram matrix ``H`` of the student on its training inputs.

    ``H_ij = <x_i, x_j> (pi - theta_ij) / (2 pi)`` (the matrix ``H^infty`` of Du et al., 2019,
    Assumption 3.1; first layer trained, second layer fixed at ``+-1``). Computed in float64 with
    :func:`kdlib.ntk.relu_ntk`.

    Parameters
    ----------
    x : Tensor, shape ``(n, d)``
        Non-zero inputs (unit norm in the theory).

    Returns
    -------
    Tensor, shape ``(n, n)``, float64
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError("x must be a 2-D tensor of shape (n, d)")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must hold at least one input of dimension >= 1; got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    if (x.norm(dim=1) == 0).any():
        raise ValueError(
            "x has a zero row; the NTK needs non-zero inputs (unit norm in the theory)"
        )
    return relu_ntk(x.double().cpu())


def spectrum(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and eigenvectors (columns) of a symmetric Gram matrix.

    Parameters
    ----------
    gram : Tensor, shape ``(n, n)`` or ``(B, n, n)``

    Returns
    -------
    eigenvalues : Tensor, shape ``(n,)`` or ``(B, n)``, float64, descending
    eigenvectors : Tensor, shape ``(n, n)`` or ``(B, n, n)``; column ``k`` goes with value ``k``
    """
    gram = _check_gram(gram)
    values, vectors = torch.linalg.eigh(gram)
    return values.flip(-1), vectors.flip(-1)


def stable_learning_rate(gram: torch.Tensor, fraction: float = 1.0) -> float:
    """The step ``lr = fraction * n / lambda_max(H)``: ``fraction = 1`` removes the top mode in
    one step; gradient descent on the kernel model is stable for ``fraction < 2``."""
    gram = _check_gram(gram)
    if gram.dim() != 2:
        raise ValueError("stable_learning_rate takes one Gram matrix of shape (n, n)")
    if not 0 < fraction < 2:
        raise ValueError(f"fraction must be in (0, 2); got {fraction}")
    top = float(torch.linalg.eigvalsh(gram)[-1])
    if not top > 0:
        raise ValueError(f"gram must have a positive eigenvalue; its largest is {top:.3g}")
    return fraction * gram.shape[-1] / top


# -- targets and the closed-form dynamics -------------------------------------------------------


def mixed_target(labels: torch.Tensor, teacher: torch.Tensor, weight) -> torch.Tensor:
    """The target ``ytilde = (1 - rho) y + rho phi`` of the mixed loss.

    Minimising ``(1-rho)|u - y|^2 + rho |u - phi|^2`` is minimising ``|u - ytilde|^2`` (up to a
    constant), so the student's outputs interpolate between data (``rho = 0``) and PI
    (``rho = 1``).

    Parameters
    ----------
    labels, teacher : Tensor, shape ``(..., n)``
        Labels ``y`` and the teacher's PI ``phi`` (broadcast together).
    weight : float or Tensor of shape ``(...,)``
        Mixing weight(s) ``rho`` in ``[0, 1]``.
    """
    weight = _check_weight(weight)
    labels, teacher = _check_pair(labels, teacher, "labels", "teacher")
    weight = weight[..., None] if weight.dim() else weight
    try:
        torch.broadcast_shapes(weight.shape, labels.shape, teacher.shape)
    except RuntimeError:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)[:-1]} does not broadcast with labels and "
            f"teacher of shapes {tuple(labels.shape)} and {tuple(teacher.shape)} (minus the n axis)"
        ) from None
    return (1 - weight) * labels + weight * teacher


def kernel_outputs(
    gram: torch.Tensor,
    target: torch.Tensor,
    steps,
    lr: float,
    initial: torch.Tensor | None = None,
) -> torch.Tensor:
    """Outputs of the kernel model after ``t`` gradient steps, for every ``t`` in ``steps``.

    ``u(t) = ytilde + V diag((1 - lr lambda / n)^t) V^T (u(0) - ytilde)`` (the discrete-time
    solution of ``u(t+1) - ytilde = (I - lr H/n)(u(t) - ytilde)``).

    Parameters
    ----------
    gram : Tensor, shape ``(n, n)``
    target : Tensor, shape ``(..., n)``
    steps : sequence of int, length ``T``
    lr : float
        Step size of gradient descent on the mean loss ``1/(2n)|u - ytilde|^2``.
    initial : Tensor, shape ``(..., n)``, optional
        ``u(0)``; default zero (antisymmetric initialisation).

    Returns
    -------
    Tensor, shape ``(T, ..., n)``, float64

    Notes
    -----
    ``H`` may be singular (the residual along a null direction never decays). With
    ``lr lambda_max / n > 2`` the recursion diverges and, for many steps, overflows to inf: that
    is gradient descent's own behaviour, not an error; :func:`stable_learning_rate` gives a safe
    step.
    """
    values, vectors = spectrum(gram)
    coeffs = eigen_residuals(gram, target, steps, lr, initial, _spectrum=(values, vectors))
    return target.double() + coeffs @ vectors.T


def eigen_residuals(
    gram: torch.Tensor,
    target: torch.Tensor,
    steps,
    lr: float,
    initial: torch.Tensor | None = None,
    _spectrum=None,
) -> torch.Tensor:
    """Residual coordinates ``<v_k, u(t) - ytilde> = (1 - lr lambda_k/n)^t <v_k, u(0) - ytilde>``.

    Returns
    -------
    Tensor, shape ``(T, ..., n)``: column ``k`` is the residual along the ``k``-th eigenvector
    (eigenvalues descending).
    """
    gram = _check_gram(gram)
    if gram.dim() != 2:
        raise ValueError("gram must have shape (n, n)")
    n = gram.shape[-1]
    target = _check_vector(target, n, "target")
    steps_t = _check_steps(steps)
    lr = _check_lr(lr)
    values, vectors = _spectrum if _spectrum is not None else spectrum(gram)
    start = torch.zeros_like(target) if initial is None else _check_vector(initial, n, "initial")
    c0 = (start - target) @ vectors  # (..., n)
    factors = 1 - lr * values / n  # (n,)
    powers = factors[None, :] ** steps_t[:, None]  # (T, n)
    shape = (len(steps_t),) + (1,) * (c0.dim() - 1) + (n,)
    return powers.reshape(shape) * c0[None]


def residual_norms(
    gram: torch.Tensor,
    target: torch.Tensor,
    steps,
    lr: float,
    initial: torch.Tensor | None = None,
) -> torch.Tensor:
    """``|u(t) - ytilde|`` of the kernel model, shape ``(T, ...)``."""
    return eigen_residuals(gram, target, steps, lr, initial).norm(dim=-1)


def training_error(outputs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean squared error ``|u - reference|^2 / n`` over the last axis (shapes broadcast)."""
    outputs, reference = torch.as_tensor(outputs).double(), torch.as_tensor(reference).double()
    outputs, reference = _check_pair(outputs, reference, "outputs", "reference")
    try:
        torch.broadcast_shapes(outputs.shape, reference.shape)
    except RuntimeError:
        raise ValueError(
            f"outputs and reference must broadcast together; got {tuple(outputs.shape)} and "
            f"{tuple(reference.shape)}"
        ) from None
    return ((outputs - reference) ** 2).mean(dim=-1)


def asymptotic_training_error(
    labels: torch.Tensor, teacher: torch.Tensor, weight
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training errors of the converged kernel student (``u(inf) = ytilde``, ``H`` invertible).

    Returns
    -------
    against_data : ``rho^2 |phi - y|^2 / n``
    against_teacher : ``(1 - rho)^2 |phi - y|^2 / n``
    """
    weight = _check_weight(weight)
    labels, teacher = _check_pair(labels, teacher, "labels", "teacher")
    gap = training_error(teacher, labels)
    return weight**2 * gap, (1 - weight) ** 2 * gap


# -- convergence: iterations to a tolerance -----------------------------------------------------


def iterations_to_tolerance(
    gram: torch.Tensor,
    target: torch.Tensor,
    lr: float,
    tol: float,
    initial: torch.Tensor | None = None,
    max_steps: int = 10**7,
) -> torch.Tensor:
    """Smallest ``t`` with ``|u(t) - ytilde|^2 <= tol |u(0) - ytilde|^2`` for the kernel model.

    The squared residual ``sum_k (1 - lr lambda_k/n)^{2t} c_k^2`` is non-increasing in ``t``
    when ``0 < lr lambda_k / n < 2``, so a bisection on ``t`` finds it exactly.

    Returns
    -------
    LongTensor, shape ``(...)`` (one per target); ``max_steps + 1`` if not reached.

    Raises
    ------
    ValueError
        If ``gram`` (shape ``(n, n)``) is singular to working precision (see the module
        docstring), or ``lr`` is outside ``0 < lr lambda_k / n < 2``.
    """
    gram = _check_gram(gram)
    if gram.dim() != 2:
        raise ValueError("gram must have shape (n, n)")
    n = gram.shape[-1]
    target = _check_vector(target, n, "target")
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1); got {tol}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int; got {max_steps!r}")
    values, vectors = spectrum(gram)
    _check_positive_definite(values)
    lr = _check_lr(lr)
    factors = (1 - lr * values / n).abs()
    if torch.any(factors >= 1):
        raise ValueError("lr must satisfy 0 < lr * lambda_k / n < 2 for every eigenvalue")
    start = torch.zeros_like(target) if initial is None else _check_vector(initial, n, "initial")
    energy = ((start - target) @ vectors) ** 2  # (..., n)
    budget = tol * energy.sum(-1, keepdim=True)
    squared = factors**2

    def reached(t: torch.Tensor) -> torch.Tensor:
        return (energy * torch.pow(squared, t[..., None])).sum(-1, keepdim=True) <= budget

    lo = torch.zeros(energy.shape[:-1], dtype=torch.float64)
    hi = torch.full_like(lo, float(max_steps + 1))
    while torch.any(hi - lo > 1):
        mid = torch.floor((lo + hi) / 2)
        ok = reached(mid)[..., 0]
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    return torch.where(reached(lo)[..., 0], lo, hi).long()


def iterations_upper_bound(
    eigenvalues: torch.Tensor, energy: torch.Tensor, lr: float, n: int, tol: float
) -> torch.Tensor:
    """A spectral bound on the iterations to tolerance.

    Split the spectrum after its ``k`` largest eigenvalues. If the target's residual energy
    outside the top ``k`` directions, ``E_tail(k)``, is below ``tol E``, then after
    ``t_k = log((tol E - E_tail(k)) / E_head(k)) / (2 log(1 - lr lambda_k / n))`` steps the
    residual is below tolerance. The bound is ``min_k t_k``: the more of the target's energy sits
    along the top eigenvectors, the smaller it is. This is the sense in which a teacher whose
    outputs are aligned with the student's kernel "reduces the number of iterations".

    Parameters
    ----------
    eigenvalues : Tensor, shape ``(n,)``, descending
    energy : Tensor, shape ``(..., n)``
        ``<v_k, u(0) - ytilde>^2`` in the same order.
    lr : float
    n : int
        Number of training points.
    tol : float in (0, 1)

    Returns
    -------
    Tensor, shape ``(...)``, float64 (ceil of the best ``t_k``)
    """
    if not 0 < tol < 1:
        raise ValueError(f"tol must be in (0, 1); got {tol}")
    lr = _check_lr(lr)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    for name, value in (("eigenvalues", eigenvalues), ("energy", energy)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
        if value.dim() < 1 or value.shape[-1] == 0 or not torch.isfinite(value).all():
            raise ValueError(f"{name} must be a non-empty tensor of finite values")
    if eigenvalues.dim() != 1 or energy.shape[-1] != eigenvalues.shape[0]:
        raise ValueError(
            f"eigenvalues must have shape (n,) and energy (..., n) with the same n; got "
            f"{tuple(eigenvalues.shape)} and {tuple(energy.shape)}"
        )
    if (energy < 0).any():
        raise ValueError("energy must be non-negative (squared coordinates)")
    eigenvalues, energy = eigenvalues.double(), energy.double()
    factors = 1 - lr * eigenvalues / n
    factors = torch.where(factors.abs() < 1e-12, torch.zeros_like(factors), factors)
    if torch.any(factors >= 1) or torch.any(factors < 0):
        raise ValueError("the bound needs 0 < lr * lambda_k / n <= 1 for every eigenvalue")
    total = energy.sum(-1, keepdim=True)
    head = energy.cumsum(-1)
    tail = total - head
    room = tol * total - tail
    log_factors = torch.log(factors.clamp_min(1e-300))
    t_k = torch.log(room.clamp_min(1e-300) / head.clamp_min(1e-300)) / (2 * log_factors)
    t_k = torch.where(factors == 0, torch.ones_like(t_k), t_k.clamp_min(0))
    t_k = torch.where(room > 0, t_k, torch.full_like(t_k, math.inf))
    return torch.ceil(t_k.min(dim=-1).values)


def crossing_interval(
    predicted_norms: torch.Tensor, bound: torch.Tensor, threshold: float
) -> tuple[int, int]:
    """Where a measured residual curve must cross ``threshold`` if it stays within ``bound`` of
    the predicted one: first index with ``predicted - bound <= threshold`` and first index with
    ``predicted + bound <= threshold`` (``len`` if never).

    Parameters
    ----------
    predicted_norms, bound : Tensor, shape ``(T,)`` (one value per step ``0..T-1``)
    """
    for name, value in (("predicted_norms", predicted_norms), ("bound", bound)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    predicted_norms, bound = predicted_norms.double(), bound.double()
    if predicted_norms.shape != bound.shape or predicted_norms.dim() != 1:
        raise ValueError("predicted_norms and bound must be 1-D and of the same length")
    if not torch.isfinite(predicted_norms).all() or (predicted_norms < 0).any():
        raise ValueError("predicted_norms must hold finite, non-negative norms")
    if not torch.isfinite(bound).all() or (bound < 0).any():
        raise ValueError("bound must hold finite, non-negative values")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.floating):
        raise TypeError(f"threshold must be a real number; got {type(threshold).__name__}")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite; got {threshold}")
    lo_hits = torch.nonzero(predicted_norms - bound <= threshold)
    hi_hits = torch.nonzero(predicted_norms + bound <= threshold)
    size = len(predicted_norms)
    first_lo = int(lo_hits[0]) if len(lo_hits) else size
    first_hi = int(hi_hits[0]) if len(hi_hits) else size
    return first_lo, first_hi


# -- what the weights do, and generalisation ----------------------------------------------------


def distance_from_init(gram: torch.Tensor, target: torch.Tensor, steps, lr: float) -> torch.Tensor:
    """``|W(t) - W(0)|_F`` of the kernel model started at ``u(0) = 0``.

    ``W(t) - W(0) = J^T H^{-1} (I - (I - A)^t) ytilde`` with ``A = lr H / n`` and ``J J^T = H``,
    so ``|W(t) - W(0)|_F^2 = sum_k (1 - (1 - lr lambda_k/n)^t)^2 <v_k, ytilde>^2 / lambda_k``;
    at ``t = inf`` it is ``ytilde^T H^{-1} ytilde`` (Arora et al., 2019, Lemma 5.3).

    Returns
    -------
    Tensor, shape ``(T, ...)``

    Raises
    ------
    ValueError
        If ``gram`` (shape ``(n, n)``) is singular to working precision (module docstring).
    """
    gram = _check_gram(gram)
    if gram.dim() != 2:
        raise ValueError("gram must have shape (n, n)")
    n = gram.shape[-1]
    target = _check_vector(target, n, "target")
    values, vectors = spectrum(gram)
    _check_positive_definite(values)
    steps_t = _check_steps(steps)
    lr = _check_lr(lr)
    coeff2 = (target @ vectors) ** 2  # (..., n)
    grown = 1 - (1 - lr * values / n)[None, :] ** steps_t[:, None]  # (T, n)
    shape = (len(steps_t),) + (1,) * (coeff2.dim() - 1) + (n,)
    return ((grown**2 / values).reshape(shape) * coeff2[None]).sum(-1).sqrt()


def generalization_bound(gram: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Leading term ``sqrt(2 ytilde^T H^{-1} ytilde / n)`` of the data-dependent bound of
    Arora et al. (2019, Thm 5.1) for the converged student; shape ``(...)``.

    A smaller ``ytilde^T H^{-1} ytilde`` means the weights travel less: the teacher's PI,
    smoother than the labels, lowers the student's effective capacity.

    ``H^{-1}`` is applied without regularisation: ``gram`` (shape ``(n, n)``) must be positive
    definite to working precision (module docstring), else ``ValueError``.
    """
    gram = _check_gram(gram)
    if gram.dim() != 2:
        raise ValueError("gram must have shape (n, n)")
    n = gram.shape[-1]
    target = _check_vector(target, n, "target")
    values, vectors = spectrum(gram)
    _check_positive_definite(values)
    quad = (((target @ vectors) ** 2) / values).sum(-1)
    return torch.sqrt(2 * quad / n)


def kernel_test_outputs(
    cross_gram: torch.Tensor, gram: torch.Tensor, target: torch.Tensor, steps, lr: float
) -> torch.Tensor:
    """Outputs of the kernel model on new inputs after ``t`` steps (from ``u(0) = 0``).

    ``f_t(x) = K(x, X) H^{-1} (I - (I - lr H/n)^t) ytilde``: the linearised network of Arora et
    al. (2019, Sec. 5) after ``t`` gradient steps.

    Parameters
    ----------
    cross_gram : Tensor, shape ``(n_test, n)``
        ``K(x_test, X)`` from the same kernel.
    gram : Tensor, shape ``(n, n)``
    target : Tensor, shape ``(..., n)``

    Returns
    -------
    Tensor, shape ``(T, ..., n_test)``

    Raises
    ------
    ValueError
        If ``gram`` is singular to working precision (module docstring).
    """
    gram = _check_gram(gram)
    if gram.dim() != 2:
        raise ValueError("gram must have shape (n, n)")
    n = gram.shape[-1]
    if not isinstance(cross_gram, torch.Tensor):
        raise TypeError(f"cross_gram must be a torch.Tensor; got {type(cross_gram).__name__}")
    if cross_gram.dim() != 2 or cross_gram.shape[1] != n:
        raise ValueError(f"cross_gram must have shape (n_test, {n})")
    if not torch.isfinite(cross_gram).all():
        raise ValueError("cross_gram contains NaN or infinite values")
    target = _check_vector(target, n, "target")
    values, vectors = spectrum(gram)
    _check_positive_definite(values)
    steps_t = _check_steps(steps)
    lr = _check_lr(lr)
    grown = 1 - (1 - lr * values / n)[None, :] ** steps_t[:, None]  # (T, n)
    coeff = target @ vectors  # (..., n)
    shape = (len(steps_t),) + (1,) * (coeff.dim() - 1) + (n,)
    alpha = ((grown / values).reshape(shape) * coeff[None]) @ vectors.T  # (T, ..., n)
    return alpha @ cross_gram.double().T


def deviation_bound(
    kernel_errors: torch.Tensor, predicted_norms: torch.Tensor, lr: float, n: int
) -> torch.Tensor:
    """How far a finite network's outputs can be from the kernel model's (a discrete Duhamel, or
    variation-of-constants, argument).

    With ``e(t) = u(t) - ytilde`` for the network (kernel ``H(t)`` along its path) and ``e*(t)``
    for the kernel model (kernel ``H``), ``d(t) = e(t) - e*(t)`` obeys
    ``d(t+1) = (I - lr H(t)/n) d(t) - (lr/n)(H(t) - H) e*(t)``. If ``0 <= lr H(t)/n <= 2 I``,
    ``|d(t)| <= (lr/n) sum_{s<t} |H(s) - H|_op |e*(s)|``.

    Parameters
    ----------
    kernel_errors : Tensor, shape ``(T, ...)``
        ``|H(s) - H|_op`` at steps ``s = 0..T-1`` (measured on the network).
    predicted_norms : Tensor, shape ``(T, ...)``
        ``|e*(s)|`` from :func:`residual_norms`.

    Returns
    -------
    Tensor, shape ``(T, ...)``: the bound on ``|u(t) - u*(t)|`` at ``t = 0..T-1``.
    """
    lr = _check_lr(lr)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    for name, value in (("kernel_errors", kernel_errors), ("predicted_norms", predicted_norms)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    if kernel_errors.shape != predicted_norms.shape:
        raise ValueError("kernel_errors and predicted_norms must have the same shape (T, ...)")
    if torch.any(kernel_errors < 0) or torch.any(predicted_norms < 0):
        raise ValueError("norms must be non-negative")
    terms = (lr / n) * kernel_errors.double() * predicted_norms.double()
    summed = terms.cumsum(0)
    return torch.cat([torch.zeros_like(summed[:1]), summed[:-1]], dim=0)


def tracking_bound(
    linear_gap: torch.Tensor, drift_terms: torch.Tensor, remainders: torch.Tensor
) -> torch.Tensor:
    """A computed bound on ``|u_net(t) - u_kernel(t)|``: the vector form of the discrete Duhamel
    argument, with the step's nonlinearity included.

    Let ``H_m(s)`` be the network's tangent-kernel Gram matrix at step ``s``, ``u_lin`` the
    outputs of the kernel model with ``H_m(0)`` (started at the network's ``u(0)``) and
    ``e_lin = u_lin - ytilde``. A gradient step moves the network's outputs by
    ``-(lr/n) H_m(s) (u(s) - ytilde) + r(s)``, where ``r(s)`` collects the neurons whose
    activation pattern flips during the step. Then ``d = u_net - u_lin`` obeys

    ``d(s+1) = (I - lr H_m(s)/n) d(s) - (lr/n)(H_m(s) - H_m(0)) e_lin(s) + r(s)``,

    and if ``0 <= lr H_m(s)/n <= 2 I`` (``H_m(s)`` is positive semi-definite; the upper end must
    be checked) the first factor has norm at most 1, so
    ``|d(t)| <= sum_{s<t} [(lr/n)|(H_m(s) - H_m(0)) e_lin(s)| + |r(s)|]``; the triangle
    inequality adds ``|u_lin(t) - u_kernel(t)|``. Since
    ``|(H_m(s) - H_m(0)) e| <= |H_m(s) - H_m(0)|_op |e|``, this is never weaker than
    :func:`deviation_bound` applied to ``u_lin`` (which has no remainder term).

    Parameters
    ----------
    linear_gap : Tensor, shape ``(T + 1, ...)``
        ``|u_lin(t) - u_kernel(t)|`` for ``t = 0..T``.
    drift_terms : Tensor, shape ``(T, ...)``
        ``(lr/n) |(H_m(s) - H_m(0)) e_lin(s)|`` for ``s = 0..T-1``.
    remainders : Tensor, shape ``(T, ...)``
        ``|r(s)|`` for ``s = 0..T-1``.

    Returns
    -------
    Tensor, shape ``(T + 1, ...)``, float64: the bound at ``t = 0..T``.
    """
    for name, value in (
        ("linear_gap", linear_gap),
        ("drift_terms", drift_terms),
        ("remainders", remainders),
    ):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
        if torch.any(value < 0) or not torch.all(torch.isfinite(value)):
            raise ValueError(f"{name} must hold finite, non-negative norms")
    if drift_terms.shape != remainders.shape:
        raise ValueError("drift_terms and remainders must have the same shape (T, ...)")
    if linear_gap.shape != (drift_terms.shape[0] + 1, *drift_terms.shape[1:]):
        raise ValueError(
            "linear_gap must have shape (T + 1, ...) for drift_terms of shape (T, ...)"
        )
    summed = (drift_terms.double() + remainders.double()).cumsum(0)
    return linear_gap.double() + torch.cat([torch.zeros_like(summed[:1]), summed], dim=0)


# -- validation helpers -------------------------------------------------------------------------


def _check_gram(gram) -> torch.Tensor:
    if not isinstance(gram, torch.Tensor):
        raise TypeError(f"gram must be a torch.Tensor; got {type(gram).__name__}")
    if gram.dim() not in (2, 3) or gram.shape[-1] != gram.shape[-2]:
        raise ValueError(f"gram must be square, shape (n, n) or (B, n, n); got {tuple(gram.shape)}")
    if gram.shape[-1] == 0:
        raise ValueError("gram must describe at least one point (n >= 1)")
    if gram.is_complex() or gram.dtype == torch.bool:
        raise TypeError(f"gram must be real-valued; got dtype {gram.dtype}")
    gram = gram.double().cpu()
    if not torch.isfinite(gram).all():
        raise ValueError("gram contains NaN or infinite values")
    if not torch.allclose(gram, gram.transpose(-1, -2), atol=1e-10 * (1 + gram.abs().max())):
        raise ValueError("gram must be symmetric")
    return gram


def _check_vector(vector, n: int, name: str) -> torch.Tensor:
    if not isinstance(vector, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(vector).__name__}")
    if vector.dim() < 1 or vector.shape[-1] != n:
        raise ValueError(f"{name} must have shape (..., {n}); got {tuple(vector.shape)}")
    vector = vector.double().cpu()
    if not torch.isfinite(vector).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return vector


def _check_steps(steps) -> torch.Tensor:
    steps_t = torch.as_tensor(np.asarray(steps), dtype=torch.float64).reshape(-1)
    if (
        steps_t.numel() == 0
        or not torch.isfinite(steps_t).all()
        or torch.any(steps_t < 0)
        or torch.any(steps_t != steps_t.round())
    ):
        raise ValueError("steps must be a non-empty sequence of non-negative integers")
    return steps_t


def _check_lr(lr) -> float:
    if isinstance(lr, bool) or not isinstance(lr, int | float | np.floating):
        raise TypeError(f"lr must be a positive float; got {type(lr).__name__}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be finite and > 0; got {lr}")
    return float(lr)


def _check_positive_definite(values: torch.Tensor) -> None:
    """``lambda_min > n eps lambda_max``: positive definite to working precision."""
    n = values.shape[-1]
    floor = n * torch.finfo(torch.float64).eps * float(values.max().clamp(min=0))
    smallest = float(values.min())
    if smallest <= floor:
        raise ValueError(
            "gram must be positive definite (distinct, non-parallel inputs): its smallest "
            f"eigenvalue {smallest:.3g} is <= n eps lambda_max = {floor:.3g}, singular to working "
            "precision (near-duplicate or parallel inputs); H^{-1} is used unregularised, so "
            "remove duplicate inputs"
        )


def _check_weight(weight) -> torch.Tensor:
    if isinstance(weight, bool) or not isinstance(
        weight, int | float | np.floating | np.ndarray | torch.Tensor | list | tuple
    ):
        raise TypeError(f"weight (rho) must be a number or a tensor; got {type(weight).__name__}")
    weight = torch.as_tensor(weight, dtype=torch.float64)
    if not torch.all((weight >= 0) & (weight <= 1)):
        raise ValueError("weight (rho) must lie in [0, 1]")
    return weight


def _check_pair(first, second, first_name: str, second_name: str):
    """Two float tensors ``(..., n)`` with the same ``n >= 1``, finite, as float64."""
    for name, value in ((first_name, first), (second_name, second)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
        if value.dim() < 1 or value.shape[-1] == 0:
            raise ValueError(
                f"{name} must have shape (..., n) with n >= 1; got {tuple(value.shape)}"
            )
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    if first.shape[-1] != second.shape[-1]:
        raise ValueError(
            f"{first_name} and {second_name} must have the same number of samples n; got "
            f"{first.shape[-1]} and {second.shape[-1]}"
        )
    return first.double(), second.double()
