"""Features with a prescribed Gram matrix, and label-noise models (Jeong & Chung, ICLR 2025).

The paper analyses self-distillation for a *fixed* feature map through the Gram matrix of the
training features. Its synthetic model (and the official ``numerical_solving.py``) uses a block
Gram matrix: 1 on the diagonal, ``c`` between points of the same class, ``d`` between classes.
This module builds explicit features with such Gram matrices (so a real linear head can be
trained on them), more general *class-structured* Gram matrices (e.g. superclasses), and the
label-noise models of the paper's experiments.

Every random draw uses a seeded CPU ``torch.Generator``: a seed gives the same data everywhere.

Class-structured features
-------------------------
For a symmetric PSD ``(C, C)`` matrix ``kappa`` with diagonal < 1 and class sizes ``n_j``,
:func:`class_structured_features` returns ``Phi`` of shape ``(N, N + C)`` with
``<phi_i, phi_i> = 1`` and ``<phi_i, phi_j> = kappa[class_i, class_j]`` for ``i != j``:
``phi_i = [sqrt(1 - kappa_jj) e_i, L[class_i]]`` with ``L L^T = kappa``.

Noise models (a row-stochastic transition matrix ``C[j, k]`` = P(given k | true j))
----------------------------------------------------------------------------------
``symmetric``        ``1 - eta`` on the diagonal, ``eta / (K - 1)`` elsewhere (the official
                     synthetic solver and the paper's Appendix C "sym");
``asymmetric``       the official ``asym``: ``eta / K`` everywhere off the diagonal plus an extra
                     ``eta / K`` to the next class;
``cyclic``           a share of the flips (default 1/2) to the next class, the rest spread over
                     the others: a confusable neighbour without ties among the wrong labels;
``class_confusable`` the paper's main ``cc`` noise: ``eta`` spread uniformly over the other classes
                     of the same cluster of confusable classes (clusters from complete-linkage
                     clustering of class-mean feature correlations, threshold 0.8 of the largest
                     merge distance, as in the official code); a class alone in its cluster keeps
                     its labels (the official code has no rule for it).

Labels are corrupted either at random (:func:`corrupt_labels`, each label independently, as in the
official code) or with exact fractions (:func:`corrupt_labels_exact`: in every class exactly
``round(C[j, k] n_j)`` points get label ``k``), which makes the empirical label fractions equal to
``C`` and the theory's population statements exact.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

__all__ = [
    "block_kappa",
    "hierarchical_kappa",
    "class_structured_gram",
    "class_structured_features",
    "class_labels",
    "symmetric_transition",
    "asymmetric_transition",
    "cyclic_transition",
    "class_confusable_transition",
    "corrupt_labels",
    "corrupt_labels_exact",
    "label_fractions",
    "type_counts",
]


def _check_sizes(class_sizes) -> list[int]:
    try:
        values = list(class_sizes)
    except TypeError:
        raise TypeError(
            f"class_sizes must be a sequence of ints; got {type(class_sizes).__name__}"
        ) from None
    for value in values:
        if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"class_sizes must be a sequence of ints; got {class_sizes!r}")
    sizes = [int(s) for s in values]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"class_sizes must list at least two positive sizes; got {class_sizes}")
    return sizes


def _check_kappa(kappa, n_classes: int) -> torch.Tensor:
    kap = torch.as_tensor(np.asarray(kappa), dtype=torch.float64)
    if kap.shape != (n_classes, n_classes):
        raise ValueError(
            f"kappa must have shape ({n_classes}, {n_classes}); got {tuple(kap.shape)}"
        )
    if not torch.isfinite(kap).all():
        raise ValueError("kappa contains NaN or infinite values")
    if not torch.allclose(kap, kap.T):
        raise ValueError("kappa must be symmetric")
    if (kap.diagonal() >= 1).any() or (kap.diagonal() < 0).any():
        raise ValueError("kappa's diagonal (within-class correlation) must lie in [0, 1)")
    if torch.linalg.eigvalsh(kap).min() < -1e-12:
        raise ValueError("kappa must be positive semi-definite (else no feature map has this Gram)")
    return kap


def block_kappa(n_classes: int, c: float, d: float) -> torch.Tensor:
    """``(K, K)`` matrix with ``c`` on the diagonal and ``d`` elsewhere (the paper's block model:
    intra-class correlation ``c``, inter-class correlation ``d``; needs ``0 <= d <= c < 1``)."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2; got {n_classes!r}")
    _check_real(c, "c")
    _check_real(d, "d")
    if not 0 <= d <= c < 1:
        raise ValueError(f"need 0 <= d <= c < 1; got c={c}, d={d}")
    kap = torch.full((n_classes, n_classes), float(d), dtype=torch.float64)
    kap.fill_diagonal_(float(c))
    return kap


def hierarchical_kappa(superclass_of_class, c: float, b: float, d: float) -> torch.Tensor:
    """Three-level correlations: ``c`` within a class, ``b`` between classes of the same
    superclass, ``d`` otherwise (needs ``0 <= d <= b <= c < 1``).

    Parameters
    ----------
    superclass_of_class : sequence of int
        The superclass of each class, e.g. ``[0, 0, 1, 1]``.
    """
    sup = list(superclass_of_class)
    if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in sup):
        raise TypeError(f"superclass_of_class must be a sequence of ints; got {sup!r}")
    sup = [int(s) for s in sup]
    if len(sup) < 2:
        raise ValueError("superclass_of_class must list at least two classes")
    for value, name in ((c, "c"), (b, "b"), (d, "d")):
        _check_real(value, name)
    if not 0 <= d <= b <= c < 1:
        raise ValueError(f"need 0 <= d <= b <= c < 1; got c={c}, b={b}, d={d}")
    k = len(sup)
    kap = torch.full((k, k), float(d), dtype=torch.float64)
    for i in range(k):
        for j in range(k):
            if i == j:
                kap[i, j] = c
            elif sup[i] == sup[j]:
                kap[i, j] = b
    return kap


def class_labels(class_sizes) -> torch.Tensor:
    """True class of each point, classes in blocks: ``[0]*n_0 + [1]*n_1 + ...`` (LongTensor)."""
    sizes = _check_sizes(class_sizes)
    return torch.cat([torch.full((s,), j, dtype=torch.long) for j, s in enumerate(sizes)])


def class_structured_gram(class_sizes, kappa) -> torch.Tensor:
    """The ``(N, N)`` Gram matrix: 1 on the diagonal, ``kappa[class_i, class_j]`` elsewhere."""
    sizes = _check_sizes(class_sizes)
    kap = _check_kappa(kappa, len(sizes))
    cls = class_labels(sizes)
    gram = kap[cls][:, cls].clone()
    gram.fill_diagonal_(1.0)
    return gram


def class_structured_features(
    class_sizes,
    kappa,
    perturbation: float = 0.0,
    perturbation_dim: int = 8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Explicit features whose Gram matrix is :func:`class_structured_gram` (float64).

    Parameters
    ----------
    class_sizes : sequence of int
        Points per class (classes stored in blocks, see :func:`class_labels`).
    kappa : ``(C, C)``
        Within/between-class correlations (symmetric PSD, diagonal < 1).
    perturbation : float
        ``eps >= 0``: replace ``eps`` of each point's instance-specific part by a random unit
        vector in ``R^perturbation_dim``, so that ``G = G_block + eps (U U^T - I)`` with the rows
        of ``U`` on the sphere: unit diagonal, off-diagonal entries perturbed by about
        ``eps / sqrt(perturbation_dim)``. (The official solver adds i.i.d. uniform noise to ``G``
        itself, which need not stay symmetric or PSD; this keeps a real feature map.) Needs
        ``eps <= 1 - max(diag kappa)``.
    perturbation_dim : int
        Dimension of the random unit vectors, ``>= 1``.
    generator : torch.Generator, optional
        Source of the perturbation (required when ``perturbation > 0``).

    Returns
    -------
    Tensor, shape ``(N, N + C)`` or ``(N, N + C + perturbation_dim)``.
    """
    sizes = _check_sizes(class_sizes)
    kap = _check_kappa(kappa, len(sizes))
    _check_real(perturbation, "perturbation")
    if (
        isinstance(perturbation_dim, bool)
        or not isinstance(perturbation_dim, numbers.Integral)
        or perturbation_dim < 1
    ):
        raise ValueError(f"perturbation_dim must be a positive int; got {perturbation_dim!r}")
    if not perturbation >= 0 or perturbation > 1 - float(kap.diagonal().max()):
        raise ValueError(
            f"perturbation must be in [0, 1 - max(diag kappa)] = "
            f"[0, {1 - float(kap.diagonal().max()):.3g}]; got {perturbation}"
        )
    cls = class_labels(sizes)
    n = len(cls)
    evals, evecs = torch.linalg.eigh(kap)
    root = evecs * evals.clamp_min(0).sqrt()  # root @ root.T = kappa
    own = torch.sqrt(1 - kap.diagonal()[cls] - perturbation)
    parts = [torch.diag(own), root[cls]]
    if perturbation > 0:
        if generator is None:
            raise ValueError("a generator is required when perturbation > 0")
        _check_generator(generator)
        u = torch.randn(n, perturbation_dim, generator=generator, dtype=torch.float64)
        parts.append(math.sqrt(perturbation) * u / u.norm(dim=1, keepdim=True))
    return torch.cat(parts, dim=1)


def symmetric_transition(n_classes: int, eta: float) -> torch.Tensor:
    """``1 - eta`` on the diagonal, ``eta / (K - 1)`` elsewhere (``0 <= eta <= 1``)."""
    _check_eta(eta)
    k = _check_k(n_classes)
    out = torch.full((k, k), eta / (k - 1), dtype=torch.float64)
    out.fill_diagonal_(1 - eta)
    return out


def asymmetric_transition(n_classes: int, eta: float) -> torch.Tensor:
    """The official ``asym`` noise: ``eta / K`` to every other class, plus ``eta / K`` more to the
    next class ``(j + 1) mod K``; ``1 - eta`` stays."""
    _check_eta(eta)
    k = _check_k(n_classes)
    out = torch.full((k, k), eta / k, dtype=torch.float64)
    out.fill_diagonal_(1 - eta)
    for j in range(k):
        out[j, (j + 1) % k] += eta / k
    return out


def cyclic_transition(n_classes: int, eta: float, shares=None) -> torch.Tensor:
    """``1 - eta`` stays; a flipped label of class ``j`` goes to ``j + 1 + s (mod K)`` with
    probability ``shares[s]`` (default ``(1/2, 1/(2(K-2)), ...)``: the next class is the most
    confusable one, the rest share the other half). The true label stays the strict plurality iff
    ``eta < 1 / (1 + max(shares))``.
    """
    _check_eta(eta)
    k = _check_k(n_classes)
    if shares is None:
        shares = [0.5] + [0.5 / (k - 2)] * (k - 2) if k > 2 else [1.0]
    shares = [float(x) for x in shares]
    if len(shares) != k - 1 or min(shares) < 0 or not math.isclose(sum(shares), 1.0):
        raise ValueError(f"shares must be K - 1 = {k - 1} non-negative numbers summing to 1")
    out = torch.zeros(k, k, dtype=torch.float64)
    for j in range(k):
        out[j, j] = 1 - eta
        for s_, share in enumerate(shares):
            out[j, (j + 1 + s_) % k] += eta * share
    return out


def class_confusable_transition(features, labels, eta: float, n_classes: int | None = None):
    """The paper's class-confusable (``cc``) noise, computed from features as the official code's
    ``get_confusable_class`` does.

    Class-mean correlations of the centred, unit-normalised features; complete-linkage clustering of
    ``1 - correlation`` cut at 0.8 of the largest merge distance; within a cluster of ``m >= 2``
    classes, ``eta / (m - 1)`` to each other member. Singleton clusters keep their labels.

    Parameters
    ----------
    features : array or Tensor, shape ``(N, p)``
        Finite features of the ``N`` points.
    labels : integer array or Tensor, shape ``(N,)``
        Classes in ``0..K-1``; every class must have at least one point.
    eta : float in ``[0, 1]``
    n_classes : int, optional
        ``K``; default ``max(labels) + 1``.

    Returns
    -------
    (Tensor ``(K, K)``, ndarray of cluster ids ``(K,)``)
    """
    from scipy.cluster import hierarchy

    _check_eta(eta)
    x = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"features must have shape (N, p) with N >= 1; got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("features contains NaN or infinite values")
    y = _as_labels(labels, "labels")
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"labels must have shape ({x.shape[0]},) to match features; got {tuple(y.shape)}"
        )
    if n_classes is None:
        if int(y.max()) < 1:
            raise ValueError("labels must contain at least two classes (or pass n_classes)")
        if int(y.min()) < 0:
            raise ValueError(f"labels must lie in 0..K-1; got min {int(y.min())}")
    k = int(y.max()) + 1 if n_classes is None else _check_k(n_classes)
    _check_label_range(y, k, "labels")
    missing = sorted(set(range(k)) - set(y.unique().tolist()))
    if missing:
        raise ValueError(f"labels must contain every class 0..{k - 1}; missing {missing}")
    z = x - x.mean(0)
    z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
    corr = z @ z.T
    mean = torch.zeros(k, k, dtype=torch.float64)
    for i in range(k):
        for j in range(k):
            mean[i, j] = corr[y == i][:, y == j].mean()
    dist = (1 - mean).numpy()
    link = hierarchy.linkage(dist, method="complete")  # rows as observations, as the paper's code
    clusters = hierarchy.fcluster(link, 0.8 * link[:, 2].max(), criterion="distance")
    out = torch.eye(k, dtype=torch.float64)
    for i in range(k):
        mates = [j for j in range(k) if clusters[j] == clusters[i] and j != i]
        if mates:
            out[i, i] = 1 - eta
            for j in mates:
                out[i, j] = eta / len(mates)
    return out, clusters


def corrupt_labels(labels, transition, generator: torch.Generator) -> torch.Tensor:
    """Draw each given label independently from ``transition[true label]`` (official code's way).

    Parameters
    ----------
    labels : LongTensor ``(N,)`` or ``(R, N)``
    transition : ``(K, K)`` row-stochastic
    generator : torch.Generator (CPU)
    """
    y = _as_labels(labels, "labels")
    trans = _check_transition(transition)
    if y.dim() not in (1, 2) or y.numel() == 0:
        raise ValueError(f"labels must have shape (N,) or (R, N), N >= 1; got {tuple(y.shape)}")
    _check_label_range(y, trans.shape[0], "labels")
    _check_generator(generator)
    rows = trans[y.reshape(-1)]
    draws = torch.multinomial(rows, 1, generator=generator).reshape(y.shape)
    return draws


def corrupt_labels_exact(labels, transition) -> torch.Tensor:
    """Corrupt with exact fractions: in class ``j`` (of size ``n_j``) exactly ``m_jk`` points get
    label ``k``, ``m_jk`` = ``transition[j, k] * n_j`` rounded by largest remainders (so each row
    sums to ``n_j``). Deterministic: within a class, the first points keep their label, then come
    the flipped ones in increasing order of ``k``.
    """
    y = _as_labels(labels, "labels")
    if y.dim() != 1:
        raise ValueError(f"labels must have shape (N,); got {tuple(y.shape)}")
    trans = _check_transition(transition)
    _check_label_range(y, trans.shape[0], "labels")
    out = y.clone()
    for j in range(trans.shape[0]):
        idx = torch.nonzero(y == j).flatten()
        counts = _largest_remainder(trans[j] * len(idx))
        order = [j] + [k for k in range(trans.shape[0]) if k != j]
        start = 0
        for k in order:
            out[idx[start : start + counts[k]]] = k
            start += counts[k]
    return out


def label_fractions(true_labels, given_labels, n_classes: int) -> torch.Tensor:
    """``q[j, k]``: fraction of class-``j`` points whose given label is ``k`` (float64 ``(K, K)``;
    leading replica axes allowed: ``(R, N)`` inputs give ``(R, K, K)``)."""
    counts = type_counts(true_labels, given_labels, n_classes)
    return counts / counts.sum(-1, keepdim=True).clamp_min(1)


def type_counts(true_labels, given_labels, n_classes: int) -> torch.Tensor:
    """``n[j, k]``: number of points of true class ``j`` with given label ``k`` (float64).

    ``true_labels`` ``(N,)`` or ``(R, N)``, ``given_labels`` of the same shape or ``(R, N)``
    (integers in ``0..n_classes-1``); leading replica axes give ``(R, K, K)``.
    """
    k = _check_k(n_classes)
    t = _as_labels(true_labels, "true_labels")
    g = _as_labels(given_labels, "given_labels")
    if t.dim() < 1 or g.dim() < 1 or t.shape[-1] != g.shape[-1] or t.dim() > g.dim():
        raise ValueError(
            "true_labels and given_labels must have shapes (..., N) with the same N (given_labels "
            f"may add replica axes); got {tuple(t.shape)} and {tuple(g.shape)}"
        )
    _check_label_range(t, k, "true_labels")
    _check_label_range(g, k, "given_labels")
    t = t.expand_as(g) if t.dim() < g.dim() else t
    flat = (t * k + g).reshape(-1, t.shape[-1])
    counts = torch.zeros(flat.shape[0], k * k, dtype=torch.float64)
    counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float64))
    return counts.reshape(*t.shape[:-1], k, k)


# -- private helpers ----------------------------------------------------------------------------


def _check_real(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")


def _check_generator(generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a CPU torch.Generator; got {type(generator).__name__}")


def _as_labels(labels, name: str) -> torch.Tensor:
    """Integer labels as a LongTensor (floats are refused rather than truncated)."""
    y = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))
    if y.numel() == 0:
        return y.long()
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices; got dtype {y.dtype}")
    return y.long()


def _check_label_range(y: torch.Tensor, n_classes: int, name: str) -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(
            f"{name} must lie in 0..{n_classes - 1}; got values in {int(y.min())}..{int(y.max())}"
        )


def _check_eta(eta) -> None:
    if isinstance(eta, bool) or not isinstance(eta, int | float | np.floating):
        raise TypeError(f"eta must be a real number in [0, 1]; got {type(eta).__name__}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1]; got {eta}")


def _check_k(n_classes) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer) or n_classes < 2:
        raise ValueError(f"n_classes must be an int >= 2; got {n_classes!r}")
    return int(n_classes)


def _check_transition(transition) -> torch.Tensor:
    trans = torch.as_tensor(np.asarray(transition), dtype=torch.float64)
    if trans.dim() != 2 or trans.shape[0] != trans.shape[1]:
        raise ValueError(f"transition must be a square (K, K) matrix; got {tuple(trans.shape)}")
    if (trans < 0).any() or not torch.allclose(
        trans.sum(1), torch.ones(trans.shape[0], dtype=trans.dtype)
    ):
        raise ValueError("transition rows must be non-negative and sum to 1")
    return trans


def _largest_remainder(values: torch.Tensor) -> list[int]:
    total = int(round(float(values.sum())))
    base = torch.floor(values + 1e-9)
    rest = total - int(base.sum())
    order = torch.argsort(values - base, descending=True, stable=True)
    out = base.long()
    out[order[:rest]] += 1
    return out.tolist()
