"""Closed forms for Hinton et al.'s distillation loss (Hinton, Vinyals & Dean, 2015, Sec. 2).

Notation: student logits ``z_s``, teacher logits ``z_t`` (last axis: ``K`` classes), temperature
``T``, ``p = softmax(z_t / T)``, ``q = softmax(z_s / T)``, and the distillation loss
``L_T = T^2 KL(p || q)``.

* Gradient (Hinton et al., eq. 2): ``d KL(p||q) / d z_s = (q - p) / T``, so
  ``d L_T / d z_s = T (q - p)``.
* High-temperature limit (Hinton et al., eqs. 3-4): writing ``delta = (z_s - mean z_s) -
  (z_t - mean z_t)`` (zero-mean logit difference),
  ``T (q - p) -> delta / K`` and ``L_T -> |delta|^2 / (2K)``: distillation becomes matching
  zero-mean logits with a squared loss. The next term of the expansion in ``1/T`` does not vanish
  in general, so the error of both limits shrinks like ``T^{-1}`` (predicted log-log slope -1).
* Without the ``T^2`` factor the gradient is ``(q - p)/T ~ delta/(K T^2)``: it shrinks like
  ``T^{-2}``, which is why the factor is there.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "kd_gradient",
    "high_temperature_loss_limit",
    "high_temperature_gradient_limit",
    "predicted_gradient_exponent",
    "predicted_limit_error_exponent",
]


def _check(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    for name, value in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor")
        if value.dim() < 1 or value.shape[-1] < 1:
            raise ValueError(
                f"{name} must have a class axis of size K >= 1 (shape (..., K)); "
                f"got {tuple(value.shape)}"
            )
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError("student_logits and teacher_logits must have the same number of classes")
    try:
        torch.broadcast_shapes(student_logits.shape, teacher_logits.shape)
    except RuntimeError:
        raise ValueError(
            "student_logits and teacher_logits must broadcast together; got shapes "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        ) from None
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise TypeError("temperature must be a real number")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be finite and > 0; got {temperature}")


def kd_gradient(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    t_squared: bool = True,
) -> torch.Tensor:
    """Gradient of the per-sample distillation loss with respect to the student's logits.

    ``(softmax(z_s/T) - softmax(z_t/T)) / T``, times ``T^2`` if ``t_squared`` (Hinton et al.,
    2015, eq. 2). Shapes broadcast; the last axis is the class axis.

    Raises
    ------
    TypeError
        If the logits are not floating-point tensors, ``temperature`` is not a real number or
        ``t_squared`` is not a bool.
    ValueError
        If the logits have no class axis, contain NaN/inf, or do not broadcast, or if
        ``temperature`` is not finite and positive.
    """
    _check(student_logits, teacher_logits, temperature)
    if not isinstance(t_squared, bool):
        raise TypeError(f"t_squared must be a bool; got {type(t_squared).__name__}")
    diff = torch.softmax(student_logits / temperature, -1) - torch.softmax(
        teacher_logits / temperature, -1
    )
    return diff * temperature if t_squared else diff / temperature


def _centred_difference(student_logits: torch.Tensor, teacher_logits: torch.Tensor):
    delta = student_logits - teacher_logits
    return delta - delta.mean(-1, keepdim=True)


def high_temperature_gradient_limit(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor
) -> torch.Tensor:
    """``lim_{T->inf} T (q - p) = delta / K`` (Hinton et al., 2015, eq. 4)."""
    _check(student_logits, teacher_logits, 1.0)
    return _centred_difference(student_logits, teacher_logits) / student_logits.shape[-1]


def high_temperature_loss_limit(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor
) -> torch.Tensor:
    """``lim_{T->inf} T^2 KL(p||q) = |delta|^2 / (2K)``, per sample (class axis reduced)."""
    _check(student_logits, teacher_logits, 1.0)
    delta = _centred_difference(student_logits, teacher_logits)
    return delta.pow(2).sum(-1) / (2 * student_logits.shape[-1])


def predicted_gradient_exponent(t_squared: bool) -> float:
    """Large-``T`` exponent of the gradient's size: 0 with the ``T^2`` factor, -2 without."""
    if not isinstance(t_squared, bool):
        raise TypeError(f"t_squared must be a bool; got {type(t_squared).__name__}")
    return 0.0 if t_squared else -2.0


def predicted_limit_error_exponent() -> float:
    """Exponent of the error of the high-temperature limits: ``O(T^{-1})`` (first neglected
    term of the expansion of ``softmax(z/T)`` in ``1/T``)."""
    return -1.0
