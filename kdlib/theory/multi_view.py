"""Predicted accuracies on multi-view data: Allen-Zhu & Li (2023).

"Towards Understanding Ensemble, Knowledge Distillation and Self-Distillation in Deep Learning"
(ICLR 2023; arXiv 2012.09816). Data (see :mod:`kdlib.data.multi_view`): every class ``i`` has two
views ``v_{i,1}, v_{i,2}``; a fraction ``1 - mu`` of points (multi-view) carries both views of
its class, a fraction ``mu`` (single-view) carries only one, chosen uniformly. Learner: the
two-layer patch network ``F_i(X) = sum_r sum_p ReLU~(<w_{i,r}, x_p>)`` trained by gradient
descent from a small random initialisation.

The paper's theorems (stated for ``k -> infinity``; errors are test errors, in units of ``mu``):

* Theorem 1 (single model): training accuracy 100%, test error in ``[0.49 mu, 0.51 mu]``;
* Theorem 2 (ensemble of ``K = Omega~(1)`` independently trained models): test error
  ``<= 0.001 mu``;
* Theorem 3 (knowledge distillation of the ensemble into one model of the same size): test
  error ``<= 0.01 mu``;
* Theorem 4 (self-distillation, one model distilled into a fresh one): test error
  ``<= 0.26 mu``.

All four follow from one dichotomy in the proofs: gradient descent makes each model learn, for
each class, the view that wins a *lottery* decided at initialisation (the "tensor power method"
dynamics ``a' ~ a^{q-1}`` of the smoothed ReLU amplify the larger initial correlation), after
which the multi-view data are fitted and the other view is never learned. A learned view
classifies its single-view points correctly, an unlearned view does not. The functions below
turn that dichotomy into numbers at *finite* ensemble size, so they can be compared with
simulations; the finite-``K`` forms are our arithmetic on the paper's mechanism, and reduce to
the theorems' values for large ``K``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "PAPER_ERROR_BOUNDS",
    "single_model_error",
    "view_miss_probability",
    "ensemble_error",
    "distillation_error",
    "self_distillation_error",
    "error_from_views",
    "lottery_winner",
    "blowup_time",
]

#: Test-error intervals of Theorems 1-4, in units of the single-view fraction ``mu``.
PAPER_ERROR_BOUNDS: dict[str, tuple[float, float]] = {
    "single": (0.49, 0.51),
    "ensemble": (0.0, 0.001),
    "distillation": (0.0, 0.01),
    "self-distillation": (0.0, 0.26),
}


def _check_mu(mu) -> np.ndarray:
    try:
        values = np.asarray(mu, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(
            f"mu (the single-view fraction) must be a real number; got {mu!r}"
        ) from None
    if not np.all(np.isfinite(values)) or np.any((values < 0) | (values > 1)):
        raise ValueError(f"mu (the single-view fraction) must lie in [0, 1]; got {mu!r}")
    return values


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def _out(values: np.ndarray):
    return float(values) if values.ndim == 0 else values


def single_model_error(mu):
    """Test error of one trained model: ``mu / 2`` (Theorem 1: in ``[0.49 mu, 0.51 mu]``).

    Each class's lottery-winning view is learned, the other is not; half of the single-view test
    points carry the unlearned view and are misclassified, multi-view points are all correct.

    Parameters
    ----------
    mu : float or array_like
        Single-view fraction(s) of the test distribution, in ``[0, 1]``.

    Returns
    -------
    float or ndarray
        Same shape as ``mu``.
    """
    return _out(_check_mu(mu) / 2)


def view_miss_probability(n_models: int) -> float:
    """Probability that a given view is learned by none of ``n_models`` independent models:
    ``2^{-K}``.

    Each model learns exactly one of the two views of a class, each with probability 1/2 by the
    symmetry of the data, independently across models (independent initialisations).
    """
    return 0.5 ** _check_count(n_models, "n_models")


def ensemble_error(mu, n_members: int):
    """Test error of the average of ``K`` independently trained models: ``mu 2^{-K}``.

    The ensemble classifies a single-view point correctly as soon as one member learned its
    view (Theorem 2's mechanism), so it errs with probability :func:`view_miss_probability`.
    For ``K >= 10`` this is below the theorem's ``0.001 mu``.
    """
    n_members = _check_count(n_members, "n_members")
    return _out(_check_mu(mu) * view_miss_probability(n_members))


def distillation_error(mu, n_members: int):
    """Test error of one model distilled from a ``K``-member ensemble: the ensemble's,
    ``mu 2^{-K}`` (Theorem 3: the student learns every view that some member learned, because
    the ensemble's outputs on multi-view data reveal them)."""
    return ensemble_error(mu, n_members)


def self_distillation_error(mu):
    """Test error after self-distillation: ``mu / 4`` (Theorem 4: at most ``0.26 mu``).

    The student learns its own lottery-winning view and, through the teacher's outputs, the
    teacher's; the two lotteries are independent, so a view is missed by both with probability
    ``1/4``. This is an ensemble of two, distilled.
    """
    return _out(_check_mu(mu) * view_miss_probability(2))


def error_from_views(mu, learned) -> np.ndarray:
    """Test error predicted from which views a model has learned (the theorems' dichotomy).

    ``error = (1 - mu) P[class has no learned view] + mu P[view not learned]``, with classes and
    views weighted equally (labels uniform, the single view chosen uniformly).

    Parameters
    ----------
    mu : float
        Single-view fraction of the test distribution.
    learned : array_like of bool, shape ``(..., k, 2)``
        ``learned[..., i, l]``: the model learned view ``l`` of class ``i``.

    Returns
    -------
    ndarray, shape ``(...)``
    """
    mu_values = _check_mu(mu)
    if mu_values.ndim != 0:
        raise ValueError(f"mu must be a single number here; got shape {mu_values.shape}")
    mu = float(mu_values)
    flags = np.asarray(learned)
    if flags.ndim < 2 or flags.shape[-1] != 2 or flags.shape[-2] < 1:
        raise ValueError(f"learned must have shape (..., k, 2) with k >= 1; got {flags.shape}")
    if flags.dtype != bool and not np.isin(flags, (0, 1)).all():
        raise ValueError("learned must hold booleans (or 0/1 values)")
    flags = flags.astype(bool)
    no_view = ~flags.any(-1)
    return (1 - mu) * no_view.mean(-1) + mu * (~flags).mean((-2, -1))


def lottery_winner(init_correlations) -> np.ndarray:
    """The view each class is predicted to learn, from the initial weights.

    The paper's lottery: with ``Lambda_{i,l} = max_r [<w_{i,r}^{(0)}, v_{i,l}>]^+`` the view with
    the larger ``Lambda`` grows first and wins (the growth ``a' ~ a^{q-1}`` makes the first to
    reach the linear part of the smoothed ReLU take all the gradient; see :func:`blowup_time`).

    Parameters
    ----------
    init_correlations : array_like, shape ``(..., k, m, 2)``
        ``<w_{i,r}^{(0)}, v_{i,l}>`` for every neuron ``r`` of class ``i``.

    Returns
    -------
    ndarray of int, shape ``(..., k)``
        ``0`` or ``1``: the predicted winning view.
    """
    corr = np.asarray(init_correlations, dtype=float)
    if corr.ndim < 3 or corr.shape[-1] != 2 or 0 in corr.shape:
        raise ValueError(
            f"init_correlations must have shape (..., k, m, 2) with k, m >= 1; got {corr.shape}"
        )
    if not np.all(np.isfinite(corr)):
        raise ValueError("init_correlations contains NaN or infinite values")
    lam = np.clip(corr, 0.0, None).max(axis=-2)  # (..., k, 2)
    return np.argmax(lam, axis=-1)


def blowup_time(a0, rate: float, power: int):
    """Time at which ``a' = rate a^{power - 1}``, ``a(0) = a0 > 0``, blows up (``power >= 3``).

    ``a(t) = a0 (1 - t / t*)^{-1/(power-2)}`` with ``t* = 1 / ((power - 2) rate a0^{power-2})``:
    the growth of a view's correlation while it is in the polynomial part of the smoothed ReLU
    (the paper's tensor-power-method phase). Larger ``a0`` wins the race, and a larger
    ``power`` separates the finishing times more: ``t*_1 / t*_2 = (a0_2 / a0_1)^{power-2}``.

    Parameters
    ----------
    a0 : float or array_like
        Initial correlation(s), ``> 0``.
    rate : float
        Growth constant, ``> 0``.
    power : int
        The smoothed ReLU's exponent ``q >= 3``.
    """
    if isinstance(power, bool) or not isinstance(power, int) or power < 3:
        raise ValueError(f"power must be an int >= 3; got {power!r}")
    if not (isinstance(rate, int | float) and math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be finite and > 0; got {rate!r}")
    start = np.asarray(a0, dtype=float)
    if np.any(~np.isfinite(start)) or np.any(start <= 0):
        raise ValueError(f"a0 must be finite and > 0; got {a0!r}")
    return _out(1.0 / ((power - 2) * rate * start ** (power - 2)))
