"""Self-distillation as label averaging, and the partial-label (PLL) student.

Jeong & Chung, *Rethinking Self-Distillation: Label Averaging and Enhanced Soft Label Refinement
with Partial Labels*, ICLR 2025 (arXiv:2402.10482; v1 titled *Understanding Self-Distillation and
Partial Label Learning in Multi-Class Classification with Label Noise*).

Setting (the book's notation, the paper's Section 2). ``N`` training points, ``K`` classes,
fixed features ``phi(x_i)`` (rows of ``Phi``, shape ``(N, p)``), Gram matrix ``G = Phi Phi^T``.
A linear softmax head without bias ``p_i = softmax(W^T phi_i)`` is trained on targets ``T``
(rows in the simplex) with the mean cross-entropy plus ``lam/2 ||W||_F^2``. The teacher is
trained on the given (possibly noisy) one-hot labels ``Y``; the student of round ``t >= 1`` on
the softmax outputs of round ``t - 1`` *on the training points*.

What lives here
---------------
* The exact stationarity condition of one round, ``P = softmax((T - P) G / (N lam))`` and
  ``W = Phi^T (T - P) / (N lam)`` (:func:`fixed_point_residual`, :func:`representer_weights`).
* The paper's closed form after linearising the softmax at zero logits: one round maps targets to
  ``P = U + M (T - U)`` with ``U = 1/K`` and ``M = G (G + K N lam I)^{-1}``, so after ``t`` rounds
  ``P^(t) = U + M^(t+1) (Y - U)``: labels averaged with weights ``M^(t+1)``, which shrink the
  eigen-components of ``Y`` by ``(mu_r / (mu_r + K N lam))^(t+1)`` (:func:`sd_outputs`,
  :func:`averaging_weights`). Fast enough for interactive use (one eigendecomposition, then a
  matrix product per evaluation).
* Class-structured ("block") Gram matrices, where the outputs depend only on a point's true class
  and given label, so the dynamics reduce to ``K x K`` *types*: the linearised three-scale formula,
  the corruption condition and the minimum number of rounds for 100% accuracy
  (:func:`block_sd_outputs`, :func:`corruption_condition`, :func:`minimum_rounds`,
  :func:`noise_threshold`), and the exact (not linearised) softmax dynamics reduced to types
  (:func:`type_exact_outputs`).
* The PLL student: refined targets (top two teacher labels, 1/2 each) and one round
  (:func:`pll_targets`, :func:`pll_outputs`).

Where the formulas come from. The paper's theorem texts were not available offline to the author
of this module; every formula below was re-derived from the objective above (the official code's
objective, ``numerical_solving.py``) and is checked numerically in ``tests/``. Docstrings say
"(paper Sec. X)" for the part of the paper a result belongs to and "(derived)" where the exact form
is this book's derivation. Rounds are counted as in the paper's code: round 0 is the teacher,
round ``t`` the ``t``-th student; ``tau = t + 1`` is the number of applications of ``M``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "GramSpectrum",
    "shrinkage",
    "averaging_weights",
    "linear_step",
    "sd_outputs",
    "sd_test_outputs",
    "pll_targets",
    "pll_outputs",
    "fixed_point_residual",
    "representer_weights",
    "softmax_remainder",
    "accumulated_remainder",
    "block_gram_eigenvalues",
    "block_sd_outputs",
    "block_margins",
    "corruption_condition",
    "minimum_rounds",
    "noise_threshold",
    "pll_condition",
    "first_full_accuracy_round",
    "type_linear_outputs",
    "type_exact_outputs",
    "type_accuracy",
    "block_accuracy_curves",
]


# -- validation helpers ------------------------------------------------------------------------


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"{name} must be a positive real number; got {type(value).__name__}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and > 0; got {value}")
    return value


def _n_classes(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"n_classes must be an int >= 2; got {type(value).__name__}")
    if value < 2:
        raise ValueError(f"n_classes must be >= 2; got {value}")
    return int(value)


def _rounds(rounds) -> list[int]:
    if isinstance(rounds, int | np.integer) and not isinstance(rounds, bool):
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0; got {rounds}")
        return list(range(int(rounds) + 1))
    try:
        values = list(rounds)
    except TypeError:
        raise TypeError(
            f"rounds must be an int or a list of ints; got {type(rounds).__name__}"
        ) from None
    if any(isinstance(r, bool) or not isinstance(r, int | np.integer) for r in values):
        raise TypeError(f"rounds must be an int or a list of ints; got {rounds!r}")
    out = [int(r) for r in values]
    if not out or min(out) < 0:
        raise ValueError(
            f"rounds must be a non-negative int or a non-empty list of them; got {rounds}"
        )
    return out


def _as_tensor(x, name: str) -> torch.Tensor:
    """A float64 tensor from a tensor or array (the closed forms run in float64)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array; got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be real-valued; got dtype {x.dtype}")
    x = x.to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _one_hot(
    labels, n_classes: int | None, like: torch.Tensor | None = None, name: str = "labels"
) -> torch.Tensor:
    """Accept integer labels ``(..., N)`` or targets ``(..., N, K)``; return float64 targets."""
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or array; got {type(labels).__name__}")
    if labels.is_floating_point():
        if labels.dim() < 1:
            raise ValueError(f"{name} (float targets) must have shape (..., N, K)")
        if n_classes is not None and labels.shape[-1] != n_classes:
            raise ValueError(
                f"{name} (float targets) have {labels.shape[-1]} classes, expected {n_classes}"
            )
        if not torch.isfinite(labels).all():
            raise ValueError(f"{name} contains NaN or infinite values")
        return labels.to(torch.float64)
    if labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(
            f"{name} must be integer class indices or float targets; got {labels.dtype}"
        )
    if n_classes is None:
        raise ValueError(f"n_classes is needed with integer {name}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{name} must lie in 0..{n_classes - 1}")
    out = torch.nn.functional.one_hot(labels.long(), n_classes).to(torch.float64)
    return out if like is None else out.to(like.device)


# -- the general (any Gram matrix) closed form -------------------------------------------------


@dataclass(frozen=True)
class GramSpectrum:
    """Eigendecomposition ``G = V diag(mu) V^T`` of a training Gram matrix, computed once.

    Attributes
    ----------
    eigenvalues : Tensor, shape ``(N,)``
        ``mu_r >= 0`` (tiny negative round-off is clipped to 0).
    eigenvectors : Tensor, shape ``(N, N)``
        Orthonormal columns ``v_r``.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor

    @property
    def n_train(self) -> int:
        """Number of training points N."""
        return int(self.eigenvalues.shape[0])

    @classmethod
    def from_gram(cls, gram) -> GramSpectrum:
        """From a symmetric positive semi-definite ``(N, N)`` Gram matrix.

        Ill-conditioned and singular Gram matrices (near-duplicate or duplicate points) are fine:
        the closed forms never invert ``G``, only ``G + K N lam I`` (the ridge ``lam`` is the
        regularisation), through the shrinkage ``mu / (mu + K N lam)`` of each eigenvalue.
        Eigenvalues in ``[-1e-8 max|mu|, 0)`` are round-off and are set to 0.

        Raises
        ------
        ValueError
            If ``gram`` is empty, not square, contains NaN/inf, is not symmetric, or has an
            eigenvalue below ``-1e-8 * max|eigenvalue|`` (not a Gram matrix of any feature map).
        """
        g = _as_tensor(gram, "gram")
        if g.dim() != 2 or g.shape[0] != g.shape[1] or g.shape[0] == 0:
            raise ValueError(f"gram must be a square (N, N) matrix, N >= 1; got {tuple(g.shape)}")
        if not torch.allclose(g, g.T, atol=1e-10 * max(1.0, float(g.abs().max()))):
            raise ValueError("gram must be symmetric")
        mu, v = torch.linalg.eigh(g)
        if mu.min() < -1e-8 * max(1.0, float(mu.abs().max())):
            raise ValueError(f"gram must be positive semi-definite; min eigenvalue {mu.min():.3g}")
        return cls(mu.clamp_min(0.0), v)

    @classmethod
    def from_features(cls, features) -> GramSpectrum:
        """From features ``(N, p)`` (rows ``phi(x_i)``): ``G = Phi Phi^T``."""
        x = _as_tensor(features, "features")
        if x.dim() != 2:
            raise ValueError(f"features must have shape (N, p); got {tuple(x.shape)}")
        return cls.from_gram(x @ x.T)

    def gram(self) -> torch.Tensor:
        """The Gram matrix ``V diag(mu) V^T``."""
        return (self.eigenvectors * self.eigenvalues) @ self.eigenvectors.T


def shrinkage(eigenvalues, lam: float, n_classes: int) -> torch.Tensor:
    """Per-round shrinkage ``s_r = mu_r / (mu_r + K N lam)`` of each eigen-component (derived;
    paper Sec. 3: label averaging is governed by the Gram matrix's eigenvectors).

    ``N`` is the number of eigenvalues. The extra ``K`` comes from the softmax Jacobian at zero
    logits, ``(I - 11^T/K)/K``.

    Regularisation and precision. ``K N lam`` is what keeps the closed forms finite for singular
    ``G``; it must stay above the precision of the eigenvalues themselves, ``N eps max(mu)``
    (``eps`` the float64 machine epsilon, the usual "singular to working precision" threshold):
    below it, directions that ``G`` cannot resolve (round-off eigenvalues of duplicate points)
    would be shrunk by round-off rather than by ``lam``.

    Raises
    ------
    ValueError
        If ``eigenvalues`` is not a non-empty 1-D array of finite values ``>= 0``, if ``lam`` is
        not finite and positive, or if ``K N lam < N eps max(mu)``.
    """
    mu = _eigenvalues(eigenvalues)
    lam = _positive(lam, "lam")
    k = _n_classes(n_classes)
    _check_precision(mu, lam, k)
    return mu / (mu + k * mu.shape[-1] * lam)


def _eigenvalues(eigenvalues) -> torch.Tensor:
    mu = _as_tensor(eigenvalues, "eigenvalues")
    if mu.dim() != 1 or mu.numel() == 0:
        raise ValueError(f"eigenvalues must have shape (N,), N >= 1; got {tuple(mu.shape)}")
    if (mu < 0).any():
        raise ValueError(f"eigenvalues must be >= 0 (a Gram matrix); min {float(mu.min()):.3g}")
    return mu


def _check_precision(mu: torch.Tensor, lam: float, k: int) -> None:
    """``K N lam >= N eps max(mu)``, i.e. ``K lam >= eps max(mu)`` (see :func:`shrinkage`)."""
    floor = torch.finfo(torch.float64).eps * float(mu.max())
    if k * lam < floor:
        n = mu.shape[-1]
        raise ValueError(
            f"lam = {lam:.3g} is below the precision of the Gram matrix: K N lam = "
            f"{k * n * lam:.3g} < N eps max(mu) = {n * floor:.3g}; use lam >= {floor / k:.3g} "
            "so that lam, not round-off, shrinks the directions G cannot resolve"
        )


def _check_broadcast(targets: torch.Tensor, probs: torch.Tensor) -> None:
    """``targets`` broadcasts against ``probs`` ``(..., N, K)`` with the same ``(N, K)``."""
    try:
        torch.broadcast_shapes(targets.shape, probs.shape)
    except RuntimeError:
        ok = False
    else:
        ok = targets.dim() >= 2 and targets.shape[-2:] == probs.shape[-2:]
    if not ok:
        raise ValueError(
            f"targets must have shape (..., {probs.shape[-2]}, {probs.shape[-1]}) broadcasting "
            f"with probs {tuple(probs.shape)}; got {tuple(targets.shape)}"
        )


def _check_spectrum(spectrum) -> GramSpectrum:
    if not isinstance(spectrum, GramSpectrum):
        raise TypeError(
            "spectrum must be a GramSpectrum (GramSpectrum.from_gram or .from_features); "
            f"got {type(spectrum).__name__}"
        )
    return spectrum


def _targets(labels, n_classes: int | None, n_train: int, name: str = "labels") -> torch.Tensor:
    """Integer labels ``(..., N)`` or targets ``(..., N, K)`` whose rows sum to one, as float64
    targets ``(..., N, K)`` for ``N = n_train`` training points."""
    is_float = isinstance(labels, torch.Tensor | np.ndarray) and (
        labels.dtype.is_floating_point
        if isinstance(labels, torch.Tensor)
        else np.issubdtype(labels.dtype, np.floating)
    )
    t = _one_hot(labels, n_classes, name=name)
    if t.dim() < 2 or t.shape[-2] != n_train:
        shape = "(..., N, K)" if is_float else "(..., N)"
        got = tuple(labels.shape)
        raise ValueError(f"{name} must have shape {shape} with N = {n_train}; got {got}")
    if is_float and not torch.allclose(
        t.sum(-1), torch.ones((), dtype=t.dtype, device=t.device), rtol=0, atol=1e-6
    ):
        raise ValueError(f"{name} (float targets) must have rows summing to 1")
    return t


def averaging_weights(spectrum: GramSpectrum, lam: float, n_classes: int, applications: int = 1):
    """The label-averaging matrix ``M^tau`` with ``M = G (G + K N lam I)^{-1}``, shape ``(N, N)``.

    After ``t`` rounds (``tau = t + 1`` applications) the linearised outputs are
    ``P^(t) = 1/K + M^tau (Y - 1/K)``: row ``i`` says how much of every training label is averaged
    into point ``i``'s prediction (paper Sec. 3, "label averaging"; derived).
    """
    if isinstance(applications, bool) or not isinstance(applications, int) or applications < 0:
        raise ValueError(f"applications must be an int >= 0; got {applications!r}")
    _check_spectrum(spectrum)
    s = shrinkage(spectrum.eigenvalues, lam, n_classes) ** applications
    v = spectrum.eigenvectors
    return (v * s) @ v.T


def linear_step(targets, spectrum: GramSpectrum, lam: float) -> torch.Tensor:
    """One round of the linearised dynamics: ``P = 1/K + M (T - 1/K)``.

    Parameters
    ----------
    targets : Tensor, shape ``(..., N, K)``
        Rows in the simplex (the teacher's outputs on the training points; the linearised outputs
        of an earlier round, which sum to one but may leave the simplex, are accepted too).

    Returns
    -------
    Tensor, shape ``(..., N, K)``
        The student's linearised outputs on the training points (paper Sec. 2-3; derived).
    """
    _check_spectrum(spectrum)
    t = _targets(targets, None, spectrum.n_train, "targets")
    k = t.shape[-1]
    s = shrinkage(spectrum.eigenvalues, lam, k)
    v = spectrum.eigenvectors.to(t.device)
    coef = v.T @ (t - 1.0 / k)
    return 1.0 / k + v @ (s.to(t.device)[:, None] * coef)


def sd_outputs(
    labels,
    spectrum: GramSpectrum,
    lam: float,
    rounds,
    n_classes: int | None = None,
    centred: bool = False,
) -> torch.Tensor:
    """Linearised outputs of the teacher (round 0) and of every SD round on the training points.

    ``P^(t) = 1/K + V diag(s^(t+1)) V^T (Y - 1/K)``, ``s = mu / (mu + K N lam)`` (paper Sec. 3,
    closed form of the ``t``-th student's output; derived with softmax linearised at 0).

    Parameters
    ----------
    labels : LongTensor ``(..., N)`` or float Tensor ``(..., N, K)``
        Given labels (or any initial targets).
    spectrum : GramSpectrum
    lam : float
        Ridge parameter (PyTorch ``weight_decay``) of every round.
    rounds : int or list of int
        ``t`` (then rounds ``0..t``) or the list of rounds wanted.
    n_classes : int, optional
        Needed with integer labels.
    centred : bool
        Return ``P - 1/K`` instead of ``P``. Use it to take the argmax after many rounds: ``P``
        tends to ``1/K`` and adding ``1/K`` loses the differences to round-off.

    Returns
    -------
    Tensor, shape ``(len(rounds), ..., N, K)``
    """
    _check_spectrum(spectrum)
    y = _targets(labels, n_classes, spectrum.n_train)
    k = y.shape[-1]
    wanted = _rounds(rounds)
    s = shrinkage(spectrum.eigenvalues, lam, k).to(y.device)
    v = spectrum.eigenvectors.to(y.device)
    coef = v.T @ (y - 1.0 / k)  # (..., N, K)
    powers = torch.stack([s ** (t + 1) for t in wanted])  # (T, N)
    scaled = powers.view(len(wanted), *([1] * (coef.dim() - 2)), -1, 1) * coef  # (T, ..., N, K)
    out = _left_multiply(v, scaled)
    return out if centred else out + 1.0 / k


def sd_test_outputs(
    labels,
    spectrum: GramSpectrum,
    cross_gram,
    lam: float,
    rounds,
    n_classes: int | None = None,
    centred: bool = False,
) -> torch.Tensor:
    """Linearised outputs of the round-``t`` model at new points (derived).

    The round-``t`` student was trained on ``P^(t-1)``; by the representer form its logits at a
    point with cross-Gram row ``g`` (``g_i = <phi(x), phi(x_i)>``) are ``(T - P)^T g / (N lam)``,
    which linearised gives ``P(x) = 1/K + (Y - 1/K)^T M^t (G + K N lam I)^{-1} g``.

    Parameters
    ----------
    cross_gram : Tensor, shape ``(m, N)``
        ``<phi(x_new_a), phi(x_i)>``.

    Returns
    -------
    Tensor, shape ``(len(rounds), ..., m, K)``
    """
    _check_spectrum(spectrum)
    y = _targets(labels, n_classes, spectrum.n_train)
    k = y.shape[-1]
    g = _as_tensor(cross_gram, "cross_gram").to(y.device)
    if g.dim() != 2 or g.shape[1] != spectrum.n_train:
        raise ValueError(
            f"cross_gram must have shape (m, {spectrum.n_train}); got {tuple(g.shape)}"
        )
    lam = _positive(lam, "lam")
    mu = spectrum.eigenvalues.to(y.device)
    s = shrinkage(mu, lam, k)
    v = spectrum.eigenvectors.to(y.device)
    coef = v.T @ (y - 1.0 / k)
    gv = g @ v  # (m, N)
    scale = 1.0 / (mu + k * spectrum.n_train * lam)
    wanted = _rounds(rounds)
    powers = torch.stack([scale * s**t for t in wanted])
    scaled = powers.view(len(wanted), *([1] * (coef.dim() - 2)), -1, 1) * coef
    out = _left_multiply(gv, scaled)
    return out if centred else out + 1.0 / k


def _left_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for ``a`` ``(m, N)`` and ``b`` ``(..., N, K)`` as one matrix product."""
    lead, (n, k) = b.shape[:-2], b.shape[-2:]
    flat = b.reshape(-1, n, k).permute(1, 0, 2).reshape(n, -1)
    out = (a @ flat).reshape(a.shape[0], -1, k).permute(1, 0, 2)
    return out.reshape(*lead, a.shape[0], k)


def pll_targets(teacher_probs) -> torch.Tensor:
    """Refined targets of the PLL student: 1/2 on each of the teacher's two largest outputs.

    Paper Sec. 5: "selecting the top two labels with the highest values and assigning a weight of
    1/2 to each, setting all the other entries to zero". Ties are broken towards the smaller class
    index (``torch.topk`` on CPU and CUDA may differ on exact ties; pass tie-free inputs where it
    matters).

    Parameters
    ----------
    teacher_probs : Tensor, shape ``(..., N, K)`` with ``K >= 2``
    """
    p = _one_hot(teacher_probs, None, name="teacher_probs")
    if p.dim() < 1 or p.shape[-1] < 2:
        raise ValueError("teacher_probs needs K >= 2 classes")
    # stable tie-breaking: argmax picks the first maximum
    first = p.argmax(-1, keepdim=True)
    masked = p.scatter(-1, first, -math.inf)
    second = masked.argmax(-1, keepdim=True)
    out = torch.zeros_like(p)
    return out.scatter(-1, first, 0.5).scatter(-1, second, 0.5)


def pll_outputs(teacher_probs, spectrum: GramSpectrum, lam: float) -> torch.Tensor:
    """Linearised outputs of the PLL student: one round on :func:`pll_targets` (paper Sec. 5).

    Returns
    -------
    Tensor, shape ``(..., N, K)``
    """
    return linear_step(pll_targets(teacher_probs), spectrum, lam)


# -- exact stationarity (no linearisation) ----------------------------------------------------


def fixed_point_residual(probs, targets, gram, lam: float) -> torch.Tensor:
    """``P - softmax((T - P) G / (N lam))``: zero exactly at the minimiser of one round (paper
    Sec. 2, the first-order condition of the regularised cross-entropy; derived).

    Shapes: ``probs``, ``targets`` ``(..., N, K)``; ``gram`` ``(N, N)``.
    """
    p = _as_tensor(probs, "probs")
    t = _as_tensor(targets, "targets").to(p.device)
    g = _as_tensor(gram, "gram").to(p.device)
    lam = _positive(lam, "lam")
    if p.dim() < 2 or p.shape[-2] == 0 or p.shape[-1] == 0:
        raise ValueError(f"probs must have shape (..., N, K), N, K >= 1; got {tuple(p.shape)}")
    _check_broadcast(t, p)
    n = p.shape[-2]
    if g.shape != (n, n):
        raise ValueError(f"gram must have shape ({n}, {n}); got {tuple(g.shape)}")
    return p - torch.softmax(g @ (t - p) / (n * lam), -1)


def representer_weights(probs, targets, features, lam: float) -> torch.Tensor:
    """``W = Phi^T (T - P) / (N lam)``, shape ``(..., p, K)``: the minimiser's weights in terms of
    its own outputs (derived from the first-order condition; paper Sec. 2)."""
    p = _as_tensor(probs, "probs")
    t = _as_tensor(targets, "targets").to(p.device)
    x = _as_tensor(features, "features").to(p.device)
    lam = _positive(lam, "lam")
    if p.dim() < 2 or p.shape[-2] == 0:
        raise ValueError(f"probs must have shape (..., N, K), N >= 1; got {tuple(p.shape)}")
    _check_broadcast(t, p)
    if x.dim() != 2 or x.shape[0] != p.shape[-2]:
        raise ValueError(
            f"features must have shape ({p.shape[-2]}, p) to match probs; got {tuple(x.shape)}"
        )
    return x.T @ (t - p) / (x.shape[0] * lam)


def softmax_remainder(logits) -> torch.Tensor:
    """``softmax(z) - 1/K - (z - mean(z)) / K``: what the linearisation drops (order ``|z|^2``).

    The exact one-round outputs satisfy ``P - P_lin = R(Z) (I - M)`` with ``P_lin`` the linear step
    and ``R`` this remainder at the exact logits ``Z`` (derived), so
    ``||P - P_lin||_F <= ||R(Z)||_F``.
    """
    z = _as_tensor(logits, "logits")
    if z.dim() < 1 or z.shape[-1] == 0:
        raise ValueError(f"logits must have shape (..., K), K >= 1; got {tuple(z.shape)}")
    k = z.shape[-1]
    return torch.softmax(z, -1) - 1.0 / k - (z - z.mean(-1, keepdim=True)) / k


def accumulated_remainder(logits, spectrum: GramSpectrum, lam) -> torch.Tensor:
    """``E_t = sum_{s <= t} M^(t-s) (I - M) R(Z_s)``: exact outputs minus the closed form.

    With ``P_s`` the exact outputs of round ``s`` and ``Z_s`` their logits,
    ``P_t - P_t^closed = M (P_{t-1} - P_{t-1}^closed) + (I - M) R(Z_t)`` exactly (derived from
    :func:`softmax_remainder`), so the deviation from the paper's closed form is the remainders
    of every round, averaged by the same weights as the labels.

    Parameters
    ----------
    logits : Tensor ``(T+1, R, N, K)``
        Exact (or trained) logits of rounds ``0..T`` for R replicas.
    lam : float or Tensor ``(R,)``

    Returns
    -------
    Tensor ``(T+1, R, N, K)``
    """
    _check_spectrum(spectrum)
    z = _as_tensor(logits, "logits")
    if z.dim() != 4 or z.shape[2] != spectrum.n_train or 0 in z.shape:
        raise ValueError(
            f"logits must have shape (T+1, R, {spectrum.n_train}, K); got {tuple(z.shape)}"
        )
    k = z.shape[-1]
    if isinstance(lam, bool) or not isinstance(lam, int | float | np.floating | torch.Tensor):
        raise TypeError(f"lam must be a float or a Tensor of shape (R,); got {type(lam).__name__}")
    lam_t = torch.as_tensor(lam, dtype=torch.float64).cpu()
    if lam_t.shape not in ((), (z.shape[1],)):
        raise ValueError(
            f"lam must be a scalar or have shape ({z.shape[1]},); got {tuple(lam_t.shape)}"
        )
    if not (torch.isfinite(lam_t) & (lam_t > 0)).all():
        raise ValueError("lam must be finite and > 0")
    _check_precision(spectrum.eigenvalues, float(lam_t.min()), k)
    lam_t = lam_t.expand(z.shape[1])
    v = spectrum.eigenvectors
    mu = spectrum.eigenvalues
    s = mu[None, :] / (mu[None, :] + k * spectrum.n_train * lam_t[:, None])  # (R, N)
    rem = v.T @ softmax_remainder(z)  # eigen-coordinates, (T+1, R, N, K)
    acc = torch.zeros_like(rem[0])
    out = []
    for t in range(z.shape[0]):
        acc = s[:, :, None] * acc + (1 - s)[:, :, None] * rem[t]
        out.append(v @ acc)
    return torch.stack(out)


# -- class-structured (block) Gram matrices ---------------------------------------------------


def block_gram_eigenvalues(n_classes: int, n_per_class: int, c: float, d: float):
    """Eigenvalues of the block Gram matrix ``G_ii = 1``, ``G_ij = c`` (same class), ``d`` (else).

    Returns ``(mu0, mu1, mu2)`` with multiplicities ``(N - K, K - 1, 1)``:
    ``mu0 = 1 - c`` (instance-specific: differences inside a class),
    ``mu1 = 1 - c + n (c - d)`` (class indicators minus their mean),
    ``mu2 = 1 - c + n (c - d) + N d`` (the constant vector) (paper Sec. 4's feature model; derived).
    """
    k = _n_classes(n_classes)
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class must be an int >= 1; got {n_per_class!r}")
    for value, name in ((c, "c"), (d, "d")):
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    if not (0 <= d <= c < 1):
        raise ValueError(
            f"need 0 <= d <= c < 1 for a positive definite block Gram; got c={c}, d={d}"
        )
    mu0 = 1.0 - c
    mu1 = mu0 + n_per_class * (c - d)
    mu2 = mu1 + k * n_per_class * d
    return mu0, mu1, mu2


def _block_shrinkage(n_classes, n_per_class, c, d, lam):
    mus = block_gram_eigenvalues(n_classes, n_per_class, c, d)
    lam = _positive(lam, "lam")
    big = n_classes * n_classes * n_per_class * lam  # K N lam
    return tuple(mu / (mu + big) for mu in mus)


def _fractions(label_fractions) -> torch.Tensor:
    q = _as_tensor(label_fractions, "label_fractions")
    if q.dim() != 2 or q.shape[0] != q.shape[1]:
        raise ValueError(f"label_fractions must be (K, K); got {tuple(q.shape)}")
    if (q < -1e-12).any() or not torch.allclose(q.sum(1), torch.ones_like(q[:, 0]), atol=1e-9):
        raise ValueError("label_fractions rows must be non-negative and sum to 1")
    return q


def block_sd_outputs(label_fractions, n_per_class: int, c: float, d: float, lam: float, rounds):
    """Linearised outputs in the block model, per type (true class ``j``, given label ``l``).

    For a point of true class ``j`` with given label ``l`` after ``tau = t + 1`` applications,
    ``P_k = 1/K + s0^tau (1[l = k] - q_jk) + s1^tau (q_jk - qbar_k) + s2^tau (qbar_k - 1/K)``,
    with ``q_jk`` the fraction of class ``j`` labelled ``k`` and ``qbar_k`` its class average
    (paper Sec. 3-4: the instance's own label, its class's average label, the global frequency;
    derived). Exact for the linearised dynamics.

    Parameters
    ----------
    label_fractions : Tensor ``(K, K)``
        ``q[j, k]``; rows sum to one (classes of equal size ``n_per_class``).
    rounds : int or list of int

    Returns
    -------
    Tensor, shape ``(len(rounds), K, K, K)``: ``[t, j, l, k]``.
    """
    q = _fractions(label_fractions)
    k = q.shape[0]
    s0, s1, s2 = _block_shrinkage(k, n_per_class, c, d, lam)
    qbar = q.mean(0)
    own = torch.eye(k, dtype=q.dtype)[None, :, :] - q[:, None, :]  # [j, l, k]
    cls = (q - qbar)[:, None, :].expand(k, k, k)
    glob = (qbar - 1.0 / k)[None, None, :].expand(k, k, k)
    out = [
        1.0 / k + s0 ** (t + 1) * own + s1 ** (t + 1) * cls + s2 ** (t + 1) * glob
        for t in _rounds(rounds)
    ]
    return torch.stack(out)


def block_margins(label_fractions, n_per_class: int, c: float, d: float, lam: float, rounds):
    """Smallest margin ``P_j - max_{k != j} P_k`` over the types present, per round (derived).

    Positive at round ``t`` iff every training point is classified correctly (100% accuracy on
    the training points against their true labels). Types with ``q[j, l] = 0`` are ignored.

    Returns
    -------
    Tensor, shape ``(len(rounds),)``
    """
    q = _fractions(label_fractions)
    out = block_sd_outputs(q, n_per_class, c, d, lam, rounds) - 1.0 / q.shape[0]
    k = q.shape[0]
    true = torch.arange(k)
    own = out[:, true, :, true].permute(1, 0, 2)  # [t, j, l]: P_j of type (j, l)
    others = out.clone()
    others[:, true, :, true] = -math.inf
    gap = own - others.max(-1).values  # [t, j, l]
    present = q > 0
    return gap[:, present].min(-1).values


def corruption_condition(label_fractions) -> torch.Tensor:
    """Per class, whether the true label is the strict plurality of the given labels,
    ``q_jj > q_jk`` for all ``k != j`` (paper Sec. 4's label-corruption condition; derived).

    For symmetric noise at rate ``eta`` this is ``eta < (K - 1) / K``. Returns a bool ``(K,)``.
    """
    q = _fractions(label_fractions)
    diag = q.diagonal()
    off = q - torch.diag(diag) - torch.eye(q.shape[0], dtype=q.dtype) * 2.0
    return diag > off.max(1).values


def minimum_rounds(label_fractions, n_per_class: int, c: float, d: float, lam: float) -> float:
    """Applications ``tau*`` of ``M`` after which every training point is classified correctly.

    ``tau* = floor(log((1 + D) / D) / log(s1 / s0)) + 1`` with
    ``D = min_{j, l present, l != j} (q_jj - q_jl)`` and
    ``s1 / s0 = mu1 (mu0 + K N lam) / (mu0 (mu1 + K N lam))`` (paper Sec. 4, minimum number of
    distillation rounds; derived for the linearised dynamics with balanced label frequencies).
    The number of SD rounds after the teacher is ``tau* - 1``; ``tau* = 1`` means the teacher is
    already 100% correct. Returns ``inf`` if :func:`corruption_condition` fails for some class,
    or if ``c = d`` while some label is wrong (then ``s1 = s0``: the rounds shrink a point's own
    label and its class average alike and never correct it; :func:`noise_threshold` is 0 there).

    Raises
    ------
    ValueError
        If the label frequencies are not balanced (``mean_j q_jk != 1/K``): then the global term of
        :func:`block_sd_outputs` shifts the margins; use :func:`first_full_accuracy_round` on
        :func:`block_margins` instead.
    """
    q = _fractions(label_fractions)
    k = q.shape[0]
    if not torch.allclose(q.mean(0), torch.full((k,), 1.0 / k, dtype=q.dtype), atol=1e-12):
        raise ValueError(
            "minimum_rounds needs balanced label frequencies (columns of q averaging 1/K)"
        )
    if not bool(corruption_condition(q).all()):
        return math.inf
    off = ~torch.eye(k, dtype=torch.bool)
    present = (q > 0) & off
    if not present.any():
        return 1.0
    delta = float((q.diagonal()[:, None] - q)[present].min())
    s0, s1, _ = _block_shrinkage(k, n_per_class, c, d, lam)
    if s1 <= s0:  # c = d: the class term never outgrows the own-label term
        return math.inf
    return float(math.floor(math.log((1 + delta) / delta) / math.log(s1 / s0)) + 1)


def noise_threshold(
    rounds: int,
    n_classes: int,
    n_per_class: int,
    c: float,
    d: float,
    lam: float,
    max_share: float | None = None,
) -> float:
    """Largest noise rate at which ``rounds`` SD rounds reach 100% accuracy (derived).

    Noise at exact fractions ``q_jj = 1 - eta``, flips shared over the wrong labels with largest
    share exactly ``w`` (symmetric noise: ``w = 1 / (K - 1)``), so ``D = 1 - eta (1 + w)``;
    :func:`minimum_rounds` ``<= rounds + 1`` iff ``D > 1 / (r^(rounds+1) - 1)`` with ``r = s1/s0``:
    ``eta < (1 - 1 / (r^(rounds+1) - 1)) / (1 + w)`` (0 if negative). The corruption condition
    is ``eta < 1 / (1 + w)``; where :func:`pll_condition` holds, the PLL student reaches 100% in
    one round up to there, so it beats ``rounds``-round SD on ``[threshold, 1 / (1 + w))``
    (paper Sec. 5's comparison; derived). A rate equal to the threshold fails (strict condition).
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds must be an int >= 0; got {rounds!r}")
    k = _n_classes(n_classes)
    w = 1.0 / (k - 1) if max_share is None else float(max_share)
    if not 0 < w <= 1:
        raise ValueError(f"max_share must be in (0, 1]; got {max_share}")
    s0, s1, _ = _block_shrinkage(k, n_per_class, c, d, lam)
    grow = (s1 / s0) ** (rounds + 1) - 1
    need = 1.0 / grow if grow > 0 else math.inf
    return max(0.0, (1 - need) / (1 + w))


def pll_condition(
    label_fractions, n_per_class: int, c: float, d: float, lam: float
) -> torch.Tensor:
    """Per class, whether one PLL round classifies every training point correctly (linearised
    block model with balanced label frequencies; derived, paper Sec. 5).

    The conditions of the chapter's theorem:

    (a) the corruption condition; (b) the most frequent wrong label ``m_j`` of class ``j`` is
    unique, and ``c > d`` (else ``s1 = s0`` and the teacher's outputs tie); (c) some wrong label
    ``l`` other than ``m_j`` occurs in class ``j`` whose points keep it above ``m_j`` in the
    teacher, ``s0 (1 + x) > s1 x`` with ``x = q_jm - q_jl``. Under (a) and (b) the teacher's top
    two are ``{l, j}`` for such a point and ``{j, m_j}`` for every other point of the class, so the
    class means of the refined targets put 1/2 on ``j`` and, thanks to (c), less on ``m_j``.
    Without (c) every point's pair is ``{j, m_j}`` and the student ties the two. Condition (c)
    holds for every ``lam`` small enough (``s1 / s0 -> 1``) and fails for a strongly regularised
    teacher, whose outputs forget a point's own label (``s0 << s1``).

    The theorem also needs the refined targets balanced (each label's mean over all points 1/K),
    so that the block model's global term leaves the margins alone; noise symmetric under a
    cyclic shift of the classes, as in the chapter's experiment, gives this. That involves every
    class, so it is certified only when (a) and (b) hold in all of them: otherwise no class is.

    Returns a bool ``(K,)``.

    Raises
    ------
    ValueError
        If the given label frequencies are not balanced, or if (a) and (b) hold in every class
        but the refined targets are not balanced: the theorem does not apply; compute the student
        with :func:`type_linear_outputs` instead.
    """
    q = _fractions(label_fractions)
    k = q.shape[0]
    uniform = torch.full((k,), 1.0 / k, dtype=q.dtype)
    if not torch.allclose(q.mean(0), uniform, atol=1e-12):
        raise ValueError(
            "pll_condition needs balanced label frequencies (columns of q averaging 1/K)"
        )
    s0, s1, _ = _block_shrinkage(k, n_per_class, c, d, lam)
    eye = torch.eye(k, dtype=torch.bool)
    off = q.masked_fill(eye, -1.0)
    top = off.max(1).values
    m = off.argmax(1)
    unique_top = (off == top[:, None]).sum(1) == 1
    basic = corruption_condition(q) & unique_top & (s1 > s0)
    if not bool(basic.all()):
        return torch.zeros(k, dtype=torch.bool)
    x = top[:, None] - q  # x[j, l] = q_jm - q_jl
    other = (q > 0) & ~eye & (torch.arange(k)[None, :] != m[:, None])
    keeps = other & (s0 * (1 + x) > s1 * x)  # point labelled l keeps l above m_j in the teacher
    # refined class means: 1/2 on j; the partner is l for the points that keep l, m_j otherwise
    partner = torch.where(keeps, q, torch.zeros_like(q))
    partner[torch.arange(k), m] = 1.0 - partner.sum(1)
    refined = 0.5 * (torch.eye(k, dtype=q.dtype) + partner)
    if not torch.allclose(refined.mean(0), uniform, atol=1e-12):
        raise ValueError(
            "pll_condition needs balanced refined targets (each label's mean 1/K); compute the "
            "student with type_linear_outputs instead"
        )
    return keeps.any(1)


def first_full_accuracy_round(accuracy, atol: float = 0.0) -> int:
    """First index ``t`` with ``accuracy[t] >= 1 - atol``; ``-1`` if there is none.

    ``accuracy`` is a 1-D sequence of accuracies in ``[0, 1]``; ``atol`` in ``[0, 1)``.
    """
    if isinstance(atol, bool) or not isinstance(atol, int | float | np.floating):
        raise TypeError(f"atol must be a real number in [0, 1); got {type(atol).__name__}")
    if not 0 <= atol < 1:
        raise ValueError(f"atol must be in [0, 1); got {atol}")
    acc = np.asarray(accuracy, dtype=float)
    if acc.ndim != 1:
        raise ValueError(f"accuracy must be 1-D (one value per round); got shape {acc.shape}")
    if not np.all(np.isfinite(acc)) or np.any((acc < 0) | (acc > 1)):
        raise ValueError("accuracy must hold finite values in [0, 1]")
    hit = np.flatnonzero(acc >= 1.0 - atol)
    return int(hit[0]) if hit.size else -1


# -- reduction to types for any class-structured Gram -----------------------------------------


def _type_kernel(kappa: torch.Tensor, counts: torch.Tensor):
    """Type-level kernel for a class-structured Gram: ``G_ii = 1``, ``G_ij = kappa[c_i, c_j]``.

    Types ``a = (class j, given label l)`` (flattened ``j * K + l``) with ``counts[j, l]`` points.
    A point of type ``a`` sees ``sum_b Kt[a, b] n_b r_b`` with
    ``Kt[a, b] = (1 - kappa_jj) 1[a = b] / n_a + kappa[j(a), j(b)]``; absent types get weight 0
    and a unit diagonal (they do not change the others' solution).
    """
    c, k = counts.shape
    cls = torch.arange(c).repeat_interleave(k)
    n = counts.reshape(-1).to(torch.float64)
    safe = torch.where(n > 0, n, torch.ones_like(n))
    kt = kappa[cls][:, cls].clone()
    kt += torch.diag((1 - kappa.diagonal()[cls]) / safe)
    return kt, n, cls


def _check_type_inputs(kappa, counts, lam):
    kap = _as_tensor(kappa, "kappa")
    cnt = counts if isinstance(counts, torch.Tensor) else torch.as_tensor(np.asarray(counts))
    if kap.dim() != 2 or kap.shape[0] != kap.shape[1]:
        raise ValueError(f"kappa must be a square (C, C) matrix; got {tuple(kap.shape)}")
    if cnt.dim() != 2 or cnt.shape[0] != kap.shape[0]:
        raise ValueError(
            f"counts must have shape (C, K) with C = {kap.shape[0]}; got {tuple(cnt.shape)}"
        )
    if cnt.is_complex() or cnt.dtype == torch.bool:
        raise TypeError(f"counts must be real-valued; got dtype {cnt.dtype}")
    if cnt.shape[1] < 2:
        raise ValueError(f"counts must have K >= 2 columns (given labels); got {tuple(cnt.shape)}")
    if not torch.isfinite(cnt.to(torch.float64)).all() or (cnt < 0).any():
        raise ValueError("counts must be finite and non-negative")
    if not cnt.sum() > 0:
        raise ValueError("counts must have a positive total (at least one point)")
    if ((cnt > 0) & (cnt.to(torch.float64) < torch.finfo(torch.float64).tiny)).any():
        raise ValueError(
            "counts must be 0 or at least 2.2e-308 (float64's smallest normal number; the type "
            "kernel divides by the counts)"
        )
    if not ((kap.diagonal() < 1).all() and torch.allclose(kap, kap.T)):
        raise ValueError("kappa must be symmetric with diagonal < 1")
    if torch.linalg.eigvalsh(kap).min() < -1e-12:
        raise ValueError("kappa must be positive semi-definite (else no feature map has this Gram)")
    return kap, cnt.to(torch.float64), _positive(lam, "lam")


def _type_targets(targets, c: int, k: int) -> torch.Tensor:
    """Initial targets per type, ``(C * K, K)``, rows summing to one (default: one-hot ``l``)."""
    if targets is None:
        return torch.eye(k, dtype=torch.float64).repeat(c, 1)
    t = _as_tensor(targets, "targets")
    if t.shape != (c * k, k):
        raise ValueError(f"targets must have shape ({c * k}, {k}); got {tuple(t.shape)}")
    if not torch.allclose(t.sum(-1), torch.ones((), dtype=t.dtype), rtol=0, atol=1e-6):
        raise ValueError("targets must have rows summing to 1")
    return t


def type_linear_outputs(kappa, counts, lam: float, rounds, targets=None) -> torch.Tensor:
    """Linearised SD dynamics reduced to types, for any class-structured Gram (derived).

    ``G_ii = 1`` and ``G_ij = kappa[class_i, class_j]`` (``kappa`` is ``(C, C)``; block model:
    ``c`` on the diagonal and ``d`` elsewhere; superclasses: a third level). Outputs depend only on
    the type ``(true class, given label)``; one round maps type targets to
    ``P - U = (I + B)^{-1} B (T - U)`` with ``B = Kt diag(n) / (K N lam)`` (:func:`_type_kernel`).

    Parameters
    ----------
    kappa : Tensor ``(C, C)``
    counts : Tensor ``(C, K)``
        Number of points of true class ``j`` with given label ``l`` (non-negative, a positive
        total; fractional counts, the population version, are fine).
    targets : Tensor ``(C * K, K)``, optional
        Initial targets per type; default the given labels (one-hot ``l``).

    Returns
    -------
    Tensor, shape ``(len(rounds), C * K, K)`` (type ``a = j * K + l``).
    """
    kap, cnt, lam = _check_type_inputs(kappa, counts, lam)
    c, k = cnt.shape
    t0 = _type_targets(targets, c, k)
    kt, n, _ = _type_kernel(kap, cnt)
    big_n = float(n.sum())
    b = kt * n[None, :] / (k * big_n * lam)
    step = torch.linalg.solve(torch.eye(c * k, dtype=torch.float64) + b, b)
    cur = t0 - 1.0 / k
    wanted = _rounds(rounds)
    kept = {}
    for t in range(max(wanted) + 1):
        cur = step @ cur
        kept[t] = cur + 1.0 / k
    return torch.stack([kept[t] for t in wanted])


def type_exact_outputs(
    kappa, counts, lam: float, rounds, targets=None, tol: float = 1e-12, max_iter: int = 200
) -> torch.Tensor:
    """Exact (softmax, not linearised) SD dynamics reduced to types (derived).

    Each round solves the exact stationarity condition of the regularised cross-entropy for the
    class-structured Gram, ``z_a = sum_b Kt[a, b] n_b (t_b - p_b) / (N lam)``,
    ``p_a = softmax(z_a)``, by Newton's method on the equivalent strictly convex problem in the
    type logits ``Z``: ``sum_a (n_a / N) CE(t_a, softmax(z_a)) + lam / 2 tr(Z^T Kt^{-1} Z)``.
    It predicts a trained linear head's outputs on all ``N`` points from ``K^2`` types.

    Conditioning. The Newton objective uses ``Kt^{-1}``; the smallest eigenvalue of ``Kt`` is at
    least ``min_a (1 - kappa_jj) / n_a``, so when the within-class correlation ``kappa_jj``
    approaches 1 (the points of a class become near-duplicates) ``Kt`` becomes singular. With
    ``S = D^{-1/2} Kt D^{-1/2}``, ``D = diag(Kt)`` (the scaling removes the harmless
    ill-conditioning of types with tiny counts, whose diagonal ``(1 - kappa_jj) / n_a`` is huge),
    the input is accepted while ``lambda_min(S) > C K eps lambda_max(S)`` (not singular to working
    precision; the outputs' accuracy then degrades like ``cond(S) eps``) and refused beyond
    (:func:`type_linear_outputs` needs no inverse and has no such limit).

    Parameters
    ----------
    kappa, counts, lam, rounds, targets :
        As in :func:`type_linear_outputs`.
    tol : float
        Newton stops when the gradient's largest entry is below ``tol`` (``> 0``).
    max_iter : int
        Newton iterations per round, ``>= 1``.

    Returns
    -------
    Tensor, shape ``(len(rounds), C * K, K)``.

    Raises
    ------
    ValueError
        On invalid inputs (see :func:`type_linear_outputs`), or if ``Kt`` is singular to working
        precision (``kappa``'s diagonal too close to 1 for the class sizes).
    """
    kap, cnt, lam = _check_type_inputs(kappa, counts, lam)
    if isinstance(tol, bool) or not isinstance(tol, int | float) or not (0 < tol < math.inf):
        raise ValueError(f"tol must be a finite number > 0; got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int; got {max_iter!r}")
    c, k = cnt.shape
    t = _type_targets(targets, c, k)
    kt, n, _ = _type_kernel(kap, cnt)
    scale = kt.diagonal().rsqrt()
    eigenvalues = torch.linalg.eigvalsh(kt * scale[:, None] * scale[None, :])
    if eigenvalues[0] <= c * k * torch.finfo(torch.float64).eps * eigenvalues[-1]:
        raise ValueError(
            "kappa's diagonal is too close to 1 for these class sizes: the type kernel is singular "
            f"to working precision (scaled eigenvalues {float(eigenvalues[0]):.3g} .. "
            f"{float(eigenvalues[-1]):.3g}); use type_linear_outputs or a smaller kappa_jj"
        )
    w = n / n.sum()
    kinv = torch.linalg.inv(kt)
    a = c * k
    z = torch.zeros(a, k, dtype=torch.float64)
    wanted = _rounds(rounds)
    kept = {}
    for r in range(max(wanted) + 1):
        z = _newton_types(z, t, w, kinv, lam, tol, max_iter)
        p = torch.softmax(z, -1)
        if r in wanted:
            kept[r] = p
        t = p
    return torch.stack([kept[r] for r in wanted])


def _newton_types(z, t, w, kinv, lam, tol, max_iter):
    a, k = z.shape

    def objective(zz):
        logp = torch.log_softmax(zz, -1)
        return -(w[:, None] * t * logp).sum() + 0.5 * lam * (zz * (kinv @ zz)).sum()

    eye_k = torch.eye(k, dtype=z.dtype)
    for _ in range(max_iter):
        p = torch.softmax(z, -1)
        grad = w[:, None] * (p - t) + lam * (kinv @ z)
        if float(grad.abs().max()) < tol:
            break
        # Hessian: blockdiag_a(w_a (diag p_a - p_a p_a^T)) + lam kinv (x) I_K
        jac = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        hess = torch.kron((lam * kinv).contiguous(), eye_k).view(a, k, a, k)
        idx = torch.arange(a)
        hess[idx, :, idx, :] += w[:, None, None] * jac
        hess = hess.view(a * k, a * k)
        step = -torch.linalg.solve(hess, grad.reshape(-1)).reshape(a, k)
        f0, slope, size = objective(z), float((grad * step).sum()), 1.0
        slack = 1e-13 * abs(float(f0))  # round-off: do not backtrack below what float64 resolves
        while size > 1e-10 and objective(z + size * step) > f0 + 1e-4 * size * slope + slack:
            size *= 0.5
        z = z + size * step
    return z


def type_accuracy(type_outputs, counts) -> torch.Tensor:
    """Accuracy against the true classes of type-level outputs ``(..., C * K, K)`` weighted by the
    type counts ``(C, K)``; ties (equal top outputs) count as errors. Returns ``(...)``."""
    out = _as_tensor(type_outputs, "type_outputs")
    cnt = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    if cnt.dim() != 2:
        raise ValueError(f"counts must have shape (C, K); got {tuple(cnt.shape)}")
    if not torch.isfinite(cnt).all() or (cnt < 0).any() or not cnt.sum() > 0:
        raise ValueError("counts must be finite, non-negative, with a positive total")
    c, k = cnt.shape
    if out.dim() < 2 or out.shape[-2:] != (c * k, k):
        raise ValueError(
            f"type_outputs must have shape (..., {c * k}, {k}) for counts of shape ({c}, {k}); "
            f"got {tuple(out.shape)}"
        )
    true = torch.arange(c).repeat_interleave(k)
    mine = out[..., torch.arange(c * k), true]
    others = out.clone()
    others[..., torch.arange(c * k), true] = -math.inf
    correct = (mine > others.max(-1).values).to(torch.float64)
    return (correct * cnt.reshape(-1)).sum(-1) / cnt.sum()


def block_accuracy_curves(
    n_classes: int,
    n_per_class: int,
    c: float,
    d: float,
    lam: float,
    eta: float,
    rounds: int,
    max_share: float | None = None,
) -> dict:
    """Accuracy on the training points per SD round and of one PLL round, linearised block model
    with noise at exact fractions (fast: ``K^2`` types; meant for interactive sliders).

    Noise: ``1 - eta`` kept; the flips of class ``j`` go to ``j + 1`` with share ``max_share`` and
    are spread evenly over the other wrong labels (``max_share = 1/(K-1)``, the default: symmetric
    noise). Fractions are used as they are (no rounding to counts), i.e. the population version.

    Returns
    -------
    dict with ``"sd"`` (ndarray ``(rounds + 1,)``, round 0 = teacher), ``"pll"`` (float),
    ``"tau_star"`` (:func:`minimum_rounds`), ``"threshold"`` (:func:`noise_threshold` for this
    ``rounds``).
    """
    k = _n_classes(n_classes)
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class must be an int >= 1; got {n_per_class!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int | np.integer) or rounds < 0:
        raise ValueError(f"rounds must be an int >= 0; got {rounds!r}")
    w = 1.0 / (k - 1) if max_share is None else float(max_share)
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1]; got {eta}")
    if k > 2 and not 1.0 / (k - 1) - 1e-12 <= w <= 1:
        raise ValueError(f"max_share must be in [1/(K-1), 1]; got {w}")
    rest = (1 - w) / (k - 2) if k > 2 else 0.0
    q = torch.zeros(k, k, dtype=torch.float64)
    for j in range(k):
        q[j, j] = 1 - eta
        for s_ in range(1, k):
            q[j, (j + s_) % k] = eta * (w if s_ == 1 else rest)
    counts = q * n_per_class
    kappa = torch.full((k, k), float(d), dtype=torch.float64)
    kappa.fill_diagonal_(float(c))
    sd = type_linear_outputs(kappa, counts, lam, rounds)
    pll = type_linear_outputs(kappa, counts, lam, [0], targets=pll_targets(sd[0]))
    balanced = bool(torch.allclose(q.mean(0), torch.full((k,), 1.0 / k, dtype=torch.float64)))
    return {
        "sd": type_accuracy(sd, counts).numpy(),
        "pll": float(type_accuracy(pll, counts)[0]),
        "tau_star": minimum_rounds(q, n_per_class, c, d, lam) if balanced else math.nan,
        "threshold": noise_threshold(rounds, k, n_per_class, c, d, lam, max_share=w),
    }
