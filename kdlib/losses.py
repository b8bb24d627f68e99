"""Losses for hard labels, soft labels and knowledge distillation, batched over replicas.

All losses take logits of shape ``(R, n, k)`` (``k = 1`` or a trailing-free ``(R, n)`` for the
binary losses) and return one value per replica, shape ``(R,)``: the mean over the ``n`` samples,
or a weighted mean when ``sample_weight`` (shape ``(n,)`` or ``(R, n)``, non-negative) is given.
Summing the result over replicas and calling ``backward`` gives every replica its own gradient.

Targets may be shared by all replicas (no leading ``R``) or per replica.

Notation (chapter 1 of the book): student logits ``z_s``, teacher logits ``z_t``, temperature
``T``, ``p^T = softmax(z / T)``. Hinton et al.'s distillation loss is
``T^2 * KL(p_t^T || p_s^T)``; its gradient in ``z_s`` is ``T (p_s^T - p_t^T)``, and without the
``T^2`` factor it is ``(p_s^T - p_t^T) / T``.

Every public function validates its arguments (shapes, temperature, weights, label range, finite
targets) when ``check=True`` (the default). Training loops that call a loss thousands of times on
data already checked may pass ``check=False`` to avoid a device synchronisation per step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "binary_cross_entropy",
    "cross_entropy",
    "soft_cross_entropy",
    "kd_loss",
    "distillation_loss",
    "softmax_with_temperature",
    "kl_divergence_from_logits",
    "log_softmax",
    "softmax",
]


def _check_logits(logits: torch.Tensor, name: str = "student_logits") -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be floating point; got dtype {logits.dtype}")
    if logits.dim() != 3:
        raise ValueError(f"{name} must have shape (R, n, k); got {tuple(logits.shape)}")


def _check_temperature(temperature) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise TypeError(f"temperature must be a real number; got {type(temperature).__name__}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be finite and > 0; got {temperature}")
    return float(temperature)


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise TypeError(f"alpha must be a real number in [0, 1]; got {type(alpha).__name__}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    return float(alpha)


def _broadcast_target(target: torch.Tensor, like: torch.Tensor, name: str) -> torch.Tensor:
    """Accept ``like.shape`` or ``like.shape[1:]`` and return a tensor of ``like.shape``."""
    if target.device != like.device:
        raise ValueError(f"{name} is on {target.device} but the logits are on {like.device}")
    if target.shape == like.shape:
        return target
    if target.shape == like.shape[1:]:
        return target.expand_as(like)
    raise ValueError(
        f"{name} must have shape {tuple(like.shape)} or {tuple(like.shape[1:])}; "
        f"got {tuple(target.shape)}"
    )


def _check_finite(tensor: torch.Tensor, name: str) -> None:
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _reduce(per_sample: torch.Tensor, sample_weight: torch.Tensor | None, check: bool):
    """Mean over samples (last axis) per replica, optionally weighted."""
    if sample_weight is None:
        return per_sample.mean(dim=-1)
    if check:
        if not isinstance(sample_weight, torch.Tensor):
            raise TypeError("sample_weight must be a torch.Tensor")
        _check_finite(sample_weight, "sample_weight")
        if (sample_weight < 0).any():
            raise ValueError("sample_weight must be non-negative")
    weight = _broadcast_target(sample_weight.to(per_sample.dtype), per_sample, "sample_weight")
    total = weight.sum(dim=-1)
    if check and (total <= 0).any():
        raise ValueError("sample_weight must have a positive sum for every replica")
    return (per_sample * weight).sum(dim=-1) / total


def _vector_lanes() -> int:
    """Floats per vector register in PyTorch's CPU kernels (16 with AVX-512, else 8)."""
    return 16 if "AVX512" in torch.backends.cpu.get_cpu_capability() else 8


_LANES = _vector_lanes()


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """``log_softmax`` over the last axis, fast on the CPU for few classes.

    PyTorch's CPU kernel vectorises along the class axis, so with fewer classes than a vector
    register holds (16 floats with AVX-512) it runs row by row, 2-4x slower than needed for
    forward and backward (``python -m kdlib bench --kernels``, "log-softmax, 10 cls"). With the
    classes as the first axis of a ``(k, rows)`` copy it vectorises across the rows instead.
    Values agree with ``torch.log_softmax`` to rounding (a few ulps); CUDA and many classes take
    the plain call. Every loss here uses it."""
    return _class_first(torch.log_softmax, logits)


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """``softmax`` over the last axis, with :func:`log_softmax`'s fast CPU path for few
    classes."""
    return _class_first(torch.softmax, logits)


def _class_first(function, logits: torch.Tensor) -> torch.Tensor:
    k = logits.shape[-1]
    if logits.device.type != "cpu" or k >= _LANES or logits.dim() < 2:
        return function(logits, dim=-1)
    rows = logits.reshape(-1, k).transpose(0, 1).contiguous()
    return function(rows, dim=0).transpose(0, 1).reshape(logits.shape)


def softmax_with_temperature(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``softmax(logits / T)`` over the last axis (any leading shape)."""
    temperature = _check_temperature(temperature)
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point torch.Tensor")
    return torch.softmax(logits / temperature, dim=-1)


def binary_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Binary cross-entropy ``-y log s(z) - (1-y) log(1-s(z))`` with hard or soft ``y`` in [0, 1].

    Parameters
    ----------
    logits : Tensor, shape ``(R, n)`` or ``(R, n, 1)``
        Student logits ``z``.
    targets : Tensor, shape ``(n,)`` or ``(R, n)`` (a trailing 1 allowed)
        Probabilities of the positive class: 0/1 for hard labels, a teacher's ``sigma(z_t)`` for
        soft labels.

    Returns
    -------
    Tensor, shape ``(R,)``
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError("logits must be a floating-point torch.Tensor")
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor; got {type(targets).__name__}")
    if logits.dim() == 3:
        if logits.shape[-1] != 1:
            raise ValueError(
                f"binary logits must have shape (R, n) or (R, n, 1); got {tuple(logits.shape)}"
            )
        logits = logits[..., 0]
    if logits.dim() != 2:
        raise ValueError(
            f"binary logits must have shape (R, n) or (R, n, 1); got {tuple(logits.shape)}"
        )
    if (
        targets.dim() >= 1
        and targets.shape[-1] == 1
        and targets.dim() in (2, 3)
        and targets.shape[:-1] in (logits.shape, logits.shape[1:])
    ):
        targets = targets[..., 0]
    targets = _broadcast_target(targets.to(logits.dtype), logits, "targets")
    if check:
        _check_finite(targets, "targets")
        if ((targets < 0) | (targets > 1)).any():
            raise ValueError("targets must be probabilities in [0, 1]")
    per_sample = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return _reduce(per_sample, sample_weight, check)


def _checked_labels(labels, logits: torch.Tensor, check: bool) -> torch.Tensor:
    """Integer ``labels`` broadcast to ``logits[..., 0]``, as int64; their range is checked when
    ``check``."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor; got {type(labels).__name__}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"labels must be an integer tensor; got dtype {labels.dtype}")
    labels = _broadcast_target(labels.long(), logits[..., 0], "labels")
    k = logits.shape[-1]
    if check and ((labels < 0) | (labels >= k)).any():
        raise ValueError(f"labels must be in 0..{k - 1} (k={k} classes)")
    return labels


def _checked_teacher(teacher_logits, student_logits: torch.Tensor, check: bool) -> torch.Tensor:
    """``teacher_logits`` broadcast to the student's shape and dtype; finite when ``check``."""
    if not isinstance(teacher_logits, torch.Tensor):
        raise TypeError(
            f"teacher_logits must be a torch.Tensor; got {type(teacher_logits).__name__}"
        )
    teacher_logits = _broadcast_target(
        teacher_logits.to(student_logits.dtype), student_logits, "teacher_logits"
    )
    if check:
        _check_finite(teacher_logits, "teacher_logits")
    return teacher_logits


def cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Multi-class cross-entropy with hard labels, ``-log softmax(z)_y``.

    Parameters
    ----------
    logits : Tensor, shape ``(R, n, k)``
    labels : LongTensor, shape ``(n,)`` or ``(R, n)``, values in ``0..k-1``

    Returns
    -------
    Tensor, shape ``(R,)``
    """
    _check_logits(logits, "logits")
    labels = _checked_labels(labels, logits, check)
    log_probs = log_softmax(logits)
    per_sample = -log_probs.gather(-1, labels[..., None])[..., 0]
    return _reduce(per_sample, sample_weight, check)


def soft_cross_entropy(
    logits: torch.Tensor,
    target_probs: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Cross-entropy against soft targets, ``-sum_k p_k log softmax(z)_k``.

    Parameters
    ----------
    logits : Tensor, shape ``(R, n, k)``
    target_probs : Tensor, shape ``(n, k)`` or ``(R, n, k)``
        Rows are probability vectors (non-negative, summing to one within 1e-4).

    Returns
    -------
    Tensor, shape ``(R,)``
    """
    _check_logits(logits, "logits")
    if not isinstance(target_probs, torch.Tensor):
        raise TypeError(f"target_probs must be a torch.Tensor; got {type(target_probs).__name__}")
    target_probs = _broadcast_target(target_probs.to(logits.dtype), logits, "target_probs")
    if check:
        _check_finite(target_probs, "target_probs")
        if (target_probs < 0).any():
            raise ValueError("target_probs must be non-negative")
        if not torch.allclose(
            target_probs.sum(-1),
            torch.ones((), dtype=logits.dtype, device=logits.device),
            atol=1e-4,
        ):
            raise ValueError("each row of target_probs must sum to 1")
    per_sample = -(target_probs * log_softmax(logits)).sum(-1)
    return _reduce(per_sample, sample_weight, check)


# Taylor coefficients of f(u) = e^u - 1 - u = sum_{j>=2} u^j / j!, for the small-u branch.
_EXPM1_MINUS_U = [1.0 / math.factorial(j) for j in range(2, 14)]
_SMALL_U = 0.5
# Terms kept per dtype: for |u| <= 1/2 the relative truncation error after u^J is about
# 2 |u|^(J-1) / (J+1)!: 5.6e-15 for J = 13 (float64), 2.2e-9 for J = 9, below float32's
# rounding (6e-8), so float32 and narrower need only the terms up to u^9.
_TERMS = {torch.float64: 12}
_TERMS_OTHERWISE = 8


def _expm1_minus_u(u: torch.Tensor) -> torch.Tensor:
    """``e^u - 1 - u`` for ``|u| <= 0.5`` without cancellation (series to ``u^13`` in float64,
    ``u^9`` otherwise: the truncation error is below ``1e-13``, resp. ``3e-9``, relative)."""
    coefficients = _EXPM1_MINUS_U[: _TERMS.get(u.dtype, _TERMS_OTHERWISE)]
    result = torch.zeros_like(u)
    for coefficient in reversed(coefficients):
        result = (result + coefficient) * u
    return result * u


def kl_divergence_from_logits(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor
) -> torch.Tensor:
    """``KL(softmax(a) || softmax(b))`` over the last axis, accurate also when ``a ~ b``.

    The textbook form ``sum p (log p - log q)`` subtracts nearly equal numbers when the two
    distributions are close (high temperature): in float32 its relative error grows like
    ``eps / |a - b|^2`` (0.6% at ``T = 1000`` for unit logits). For samples whose centred logit
    difference ``u = (a - b) - E_q[a - b]`` is small (``max |u| <= 0.5``) we use the exact identity
    ``KL = (E_q[u^2] + E_q[u f(u)]) / (1 + S) - log1p(S)``, ``f(u) = e^u - 1 - u``,
    ``S = E_q[f(u)]``, which has no cancellation; other samples use the textbook form.
    """
    log_p = log_softmax(teacher_logits)
    log_q = log_softmax(student_logits)
    textbook = (log_p.exp() * (log_p - log_q)).sum(-1)
    q = log_q.exp()
    diff = teacher_logits - student_logits
    diff = diff - diff.mean(-1, keepdim=True)
    u = diff - (q * diff).sum(-1, keepdim=True)
    small = u.abs().amax(-1) <= _SMALL_U
    u_small = torch.where(small[..., None], u, torch.zeros_like(u))  # no overflow in this branch
    f = _expm1_minus_u(u_small)
    s = (q * f).sum(-1)
    stable = ((q * u_small * u_small).sum(-1) + (q * u_small * f).sum(-1)) / (1 + s) - torch.log1p(
        s
    )
    return torch.where(small, stable, textbook)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    t_squared: bool = True,
    sample_weight: torch.Tensor | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Hinton et al.'s distillation loss ``T^2 KL(softmax(z_t/T) || softmax(z_s/T))``.

    The KL divergence differs from the soft cross-entropy only by the teacher's entropy, which
    does not depend on the student: same gradient, but the loss is 0 when the student matches.

    Parameters
    ----------
    student_logits : Tensor, shape ``(R, n, k)``
    teacher_logits : Tensor, shape ``(n, k)`` or ``(R, n, k)``
    temperature : float
        ``T > 0``.
    t_squared : bool
        Multiply by ``T^2`` (default), which keeps the gradient's size roughly independent of
        ``T`` (Hinton et al., 2015, Sec. 2).

    Returns
    -------
    Tensor, shape ``(R,)``
    """
    _check_logits(student_logits)
    temperature = _check_temperature(temperature)
    teacher_logits = _checked_teacher(teacher_logits, student_logits, check)
    per_sample = kl_divergence_from_logits(
        teacher_logits / temperature, student_logits / temperature
    )
    if t_squared:
        per_sample = per_sample * temperature**2
    return _reduce(per_sample, sample_weight, check)


def distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    alpha: float = 0.5,
    sample_weight: torch.Tensor | None = None,
    check: bool = True,
) -> torch.Tensor:
    """The mixed loss ``alpha * CE(labels) + (1 - alpha) * kd_loss(T)``.

    ``alpha = 1`` is plain hard-label training, ``alpha = 0`` pure distillation.

    Returns
    -------
    Tensor, shape ``(R,)``
    """
    alpha = _check_alpha(alpha)
    # At alpha 0 or 1 the other term has weight 0: the same value (and gradient) without
    # computing it; its inputs are still validated.
    if alpha == 0:
        _check_logits(student_logits)
        _checked_labels(labels, student_logits, check)
        return kd_loss(student_logits, teacher_logits, temperature, True, sample_weight, check)
    if alpha == 1:
        _check_logits(student_logits)
        _check_temperature(temperature)
        _checked_teacher(teacher_logits, student_logits, check)
        return cross_entropy(student_logits, labels, sample_weight, check)
    hard = cross_entropy(student_logits, labels, sample_weight, check)
    soft = kd_loss(student_logits, teacher_logits, temperature, True, sample_weight, check)
    return alpha * hard + (1 - alpha) * soft
