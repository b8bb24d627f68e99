"""Chapter "Why distillation works for linear students" (Phuong & Lampert, ICML 2019).

A linear teacher ``w*`` labels inputs with soft labels ``sigma(<w*, x>)``; a linear or deep linear
student is trained on them by gradient descent. Three factors explain why this works so well.

Experiments
-----------
``optimization_bias``
    Gradient descent from zero takes a linear student to the projection of ``w*`` onto the span of
    the training inputs (optimisation bias), at the linear rate predicted by the Hessian at the
    limit; from a random initialisation, or on hard labels, it lands elsewhere.
``deep_linear``
    A deep linear student from a balanced initialisation keeps the same in-span limit; its
    out-of-span remainder is predicted exactly and vanishes linearly in the initialisation scale.
``minimisers``
    All minimisers of the distillation objective fit the training data equally well, but the one
    gradient descent finds (from a small initialisation) has the lowest transfer risk.
``data_geometry``
    The expected transfer risk against ``n`` for inputs with more or less mass near the teacher's
    boundary: below the generalisation bound, faster decay with better separation, exponent ~ kappa.
``monotonicity``
    Along nested training sets the distilled student's risk never increases (per training set,
    not only on average); a hard-label student's risk often does.
``digits``
    The same comparison on real data (scikit-learn's digits) with a linear teacher: the distilled
    student recovers the teacher exactly once ``n`` reaches the input dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..claims import Claims, t_halfwidth
from ..config import RunConfig, make_generator, single_cpu_thread
from ..data import load_digits_split
from ..data.phuong_lampert import (
    AngularDistribution,
    sample_angular,
    sample_gaussian,
    teacher_direction,
)
from ..losses import binary_cross_entropy
from ..models import DeepLinearStudent, LinearStudent
from ..plots import PALETTE, ROLE_COLORS, figure, plot_measured, plot_predicted
from ..theory import phuong_lampert as theory
from ..train import auto_chunk_size, train
from . import Experiment, stored_run

CHAPTER = "phuong-lampert"
TITLE = "Why distillation works: linear students"
ORDER = 30

DTYPE = torch.float64  # the convergence checks go down to round-off


# -- shared helpers --------------------------------------------------------------------------


def fit_distilled_linear(
    x: torch.Tensor, teacher_probs: torch.Tensor, sample_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """The linear student that minimises the distillation objective, found the way gradient
    descent from zero finds it.

    The binary cross-entropy to a soft label ``y_i`` is minimised, sample by sample, by the logit
    ``z_i = log(y_i / (1 - y_i))``; with ``n <= d`` inputs in general position every logit vector is
    reachable, so the minimisers are the ``w`` with ``<w, x_i> = z_i``. Gradient descent from zero
    stays in the span of the inputs (optimisation bias), where the solution is unique: the
    minimum-norm solution ``w = X^+ z``. Solved by Cholesky on the Gram matrix (``X X^T`` for
    ``n <= d``, ``X^T X`` otherwise), falling back to the pseudo-inverse where that fails. Only the
    soft labels are used - never the teacher's weights.

    Parameters
    ----------
    x : Tensor, shape ``(R, n, d)``
    teacher_probs : Tensor, shape ``(R, n)`` or ``(n,)``, values in ``(0, 1)``
    sample_weight : Tensor, shape ``(R, n)`` or ``(n,)``, optional
        0/1 padding mask: rows with weight 0 are not training inputs.

    Returns
    -------
    Tensor, shape ``(R, d)``
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError("x must be a tensor of shape (R, n, d)")
    probs = teacher_probs.to(x.dtype).expand(x.shape[:2])
    if ((probs <= 0) | (probs >= 1)).any():
        raise ValueError("teacher_probs must be in the open interval (0, 1)")
    logits = torch.log(probs) - torch.log1p(-probs)
    if sample_weight is not None:
        weight = sample_weight.to(x.dtype).expand(x.shape[:2])
        x = x * weight[..., None]
        logits = logits * weight
    return _min_norm_solution(x, logits)


def _min_norm_solution(x: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``X^+ rhs`` per replica (zero rows allowed)."""
    n, d = x.shape[1:]
    if n <= d:
        gram = x @ x.transpose(1, 2)
        # zero (padded) rows: put 1 on their diagonal so the factorisation exists; rhs is 0 there
        empty = (x.abs().sum(-1) == 0).to(x.dtype)
        gram = gram + torch.diag_embed(empty)
        chol, info = torch.linalg.cholesky_ex(gram)
        coeff = torch.cholesky_solve(rhs[..., None], chol)
        w = (x.transpose(1, 2) @ coeff)[..., 0]
    else:
        gram = x.transpose(1, 2) @ x
        chol, info = torch.linalg.cholesky_ex(gram)
        w = torch.cholesky_solve(x.transpose(1, 2) @ rhs[..., None], chol)[..., 0]
    bad = info != 0
    if bad.any():
        w[bad] = (torch.linalg.pinv(x[bad]) @ rhs[bad][..., None])[..., 0]
    return w


def train_span_gd(
    x: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    lr: torch.Tensor,
    sample_weight: torch.Tensor | None = None,
    desc: str = "span GD",
) -> torch.Tensor:
    """Full-batch gradient descent from ``w = 0`` on the mean binary cross-entropy of a linear
    student, run in the coordinates of the span of the inputs.

    From zero every iterate is ``w_t = X^T c_t``, and the update
    ``w <- w - (eta/n) sum_i (sigma(<w, x_i>) - y_i) x_i`` is exactly
    ``c <- c - (eta/n) (sigma(G c) - y)`` with ``G = X X^T``: the same iterates as
    :func:`kdlib.train.train` on a :class:`~kdlib.models.LinearStudent`, at ``n^2`` instead of
    ``n d`` cost per step (a unit test checks the equality).

    Parameters
    ----------
    x : Tensor, shape ``(R, n, d)``
    targets : Tensor, shape ``(R, n)`` or ``(n,)``, in ``[0, 1]`` (hard or soft labels)
    steps : int
    lr : Tensor, shape ``(R,)``
    sample_weight : Tensor, shape ``(R, n)`` or ``(n,)``, optional (0/1 padding mask)

    Returns
    -------
    Tensor, shape ``(R, d)``: the weights after ``steps`` updates.
    """
    weight = (
        torch.ones_like(x[..., 0])
        if sample_weight is None
        else sample_weight.to(x.dtype).expand(x.shape[:2])
    )
    targets = targets.to(x.dtype).expand(x.shape[:2])
    gram = x @ x.transpose(1, 2)
    scale = (lr / weight.sum(-1))[:, None] * weight
    coeff = torch.zeros_like(weight)
    for _ in tqdm(range(steps), desc=desc, disable=steps < 2000, leave=False):
        logits = (gram @ coeff[..., None])[..., 0]
        coeff = coeff - scale * (torch.sigmoid(logits) - targets)
    return (x.transpose(1, 2) @ coeff[..., None])[..., 0]


def _prefix_mask(sizes, seeds: int, n_max: int, device) -> torch.Tensor:
    """0/1 mask ``(len(sizes) * seeds, n_max)``: replica ``i * seeds + j`` uses the first
    ``sizes[i]`` inputs of data set ``j``."""
    n = torch.tensor(np.repeat(sizes, seeds), device=device)
    return (torch.arange(n_max, device=device)[None] < n[:, None]).to(DTYPE)


def _mean_upper_bound(values: np.ndarray, confidence: float) -> np.ndarray:
    """One-sided upper confidence bound on the mean over the last axis (t-distribution)."""
    return values.mean(axis=-1) + t_halfwidth(values, confidence)


def _pointwise_increases(values: np.ndarray, tol: float) -> int:
    """Number of (step, seed) pairs where ``values`` (shape ``(len(sizes), seeds)``) rises by more
    than ``tol`` from one training set to the next, larger one."""
    return int((np.diff(values, axis=0) > tol).sum())


def _size_axis(ax, sizes) -> None:
    """Log-scaled x axis with one labelled tick per training-set size."""
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ax.set_xticks(list(sizes), [str(int(s)) for s in sizes])
    ax.xaxis.set_minor_locator(NullLocator())


def _fit_exponent(sizes: np.ndarray, risk: np.ndarray) -> float:
    """Decay exponent ``a`` in ``risk ~ n^-a``: minus the least-squares log-log slope."""
    return -float(np.polyfit(np.log(sizes), np.log(risk), 1)[0])


# -- 1. optimisation bias: linear student ----------------------------------------------------

VARIANTS = ("zero init, soft labels", "random init, soft labels", "zero init, hard labels")


@dataclass
class OptimizationBiasResult:
    """Gradient descent on the distillation objective, one replica per (variant, n, seed).

    ``variant[r]`` indexes :data:`VARIANTS`; distances are relative to ``|P w*|`` (projection
    prediction) or to the norm of the variant's own predicted limit.
    """

    d: int
    sizes: np.ndarray
    seeds: int
    steps: np.ndarray  # (T,)
    variant: np.ndarray  # (R,)
    n: np.ndarray  # (R,)
    distance_to_projection: np.ndarray  # (T, R)
    slow_component: np.ndarray  # (T, R) |<u, w_t - P w*>| / |P w*|, u the slowest eigendirection
    final_distance_to_own_limit: np.ndarray  # (R,)
    predicted_offset: np.ndarray  # (R,) |(I - P) w(0)| / |P w*|
    final_distance_to_teacher: np.ndarray  # (R,) |w(T) - w*| / |w*|
    contraction: np.ndarray  # (R,) predicted per-step factor rho
    rate_window: tuple[float, float] = (1e-12, 1e-6)


@stored_run
@single_cpu_thread
def run_optimization_bias(config: RunConfig) -> OptimizationBiasResult:
    """Train linear students with :func:`kdlib.train.train` (float64, step ``1/L``) from zero and
    from a random start on soft labels, and from zero on hard labels; record the distance to the
    closed-form limit of the optimisation-bias theorem."""
    d = config.pick(32, 128)
    sizes = np.array([d // 8, d // 4, 4 * d, 8 * d])
    seeds = config.pick(8, 64)
    device = config.device
    gen = make_generator(config.seed)
    n_max = int(sizes.max())
    per_variant = len(sizes) * seeds
    replicas = len(VARIANTS) * per_variant

    x = sample_gaussian(per_variant, n_max, d, gen, DTYPE, device).repeat(len(VARIANTS), 1, 1)
    w_star = torch.randn(d, generator=gen, dtype=DTYPE)
    w_star = (w_star / w_star.norm()).to(device)  # teacher logits ~ N(0, 1)
    mask = _prefix_mask(sizes, seeds, n_max, device).repeat(len(VARIANTS), 1)
    variant = np.repeat(np.arange(len(VARIANTS)), per_variant)
    teacher_logits = (x @ w_star[:, None])[..., 0]
    targets = torch.where(
        torch.as_tensor(variant == 2, device=device)[:, None],
        (teacher_logits > 0).to(DTYPE),
        torch.sigmoid(teacher_logits),
    )
    student = LinearStudent(replicas, d, init="zeros", device=device, dtype=DTYPE)
    w_init = torch.zeros(replicas, d, dtype=DTYPE)
    random_init = torch.randn(per_variant, d, generator=gen, dtype=DTYPE) * w_star.norm().cpu()
    w_init[per_variant : 2 * per_variant] = random_init / math.sqrt(d)
    w_init = w_init.to(device)
    with torch.no_grad():
        student.weight.copy_(w_init[..., None])

    projection = theory.linear_student_limit(x, w_star, None, mask)
    own_limit = theory.linear_student_limit(x, w_star, w_init, mask)
    lr = theory.gd_step_size(x, mask)
    contraction, slow_direction = theory.gd_linearisation(x, projection, lr, mask)
    scale = projection.norm(dim=-1)
    # run until the predicted error rho^t is below 1e-13 for the slowest replica (+ transient)
    slowest = float(contraction[torch.as_tensor(variant < 2, device=device)].max())
    steps = min(int(math.log(1e-13) / math.log(slowest)) + 200, config.pick(3000, 20000))

    def loss_fn(model, _batch):
        return binary_cross_entropy(model(x), targets, sample_weight=mask, check=False)

    def metrics_fn(model):
        w = model.end_to_end()[..., 0]
        error = w - projection
        return {
            "distance": error.norm(dim=-1) / scale,
            "slow_component": (error * slow_direction).sum(-1).abs() / scale,
        }

    result = train(
        student,
        loss_fn,
        steps,
        lr,
        record_every=2,
        metrics_fn=metrics_fn,
        desc="linear students",
    )
    w_final = student.end_to_end()[..., 0].detach()
    offset = (own_limit - projection).norm(dim=-1) / scale
    return OptimizationBiasResult(
        d=d,
        sizes=sizes,
        seeds=seeds,
        steps=result.steps,
        variant=variant,
        n=np.tile(np.repeat(sizes, seeds), len(VARIANTS)),
        distance_to_projection=result.metrics["distance"].numpy(),
        slow_component=result.metrics["slow_component"].numpy(),
        final_distance_to_own_limit=((w_final - own_limit).norm(dim=-1) / own_limit.norm(dim=-1))
        .cpu()
        .numpy(),
        predicted_offset=offset.cpu().numpy(),
        final_distance_to_teacher=((w_final - w_star).norm(dim=-1) / w_star.norm()).cpu().numpy(),
        contraction=contraction.cpu().numpy(),
    )


def measured_rates(result: OptimizationBiasResult, replicas: np.ndarray) -> np.ndarray:
    """Per replica, the slope against the step of the log of the error's component along the
    slowest eigendirection, fitted where it is inside ``result.rate_window`` (the linear phase,
    above round-off); NaN with fewer than 3 points."""
    low, high = result.rate_window
    slopes = []
    for r in replicas:
        dist = result.slow_component[:, r]
        inside = (dist > low) & (dist < high)
        if inside.sum() < 3:
            slopes.append(np.nan)
            continue
        slopes.append(np.polyfit(result.steps[inside], np.log(dist[inside]), 1)[0])
    return np.asarray(slopes)


def check_optimization_bias(result: OptimizationBiasResult, claims: Claims) -> None:
    """The optimisation-bias limit to round-off, its rate, and two ways of landing elsewhere."""
    final = result.distance_to_projection[-1]
    zero_soft = result.variant == 0
    claims.at_most(
        "GD from 0 on soft labels -> projection of w* onto span(X) (max relative distance)",
        measured=float(final[zero_soft].max()),
        bound=1e-9,
        why="float64 round-off (~1e-15 x condition number) plus the GD error rho^T < 1e-13: "
        "the run is as long as the predicted rate below requires",
    )
    big = result.n >= result.d
    claims.at_most(
        "n >= d: the limit is w* itself, from either initialisation (max relative distance)",
        measured=float(result.final_distance_to_teacher[big & (result.variant < 2)].max()),
        bound=1e-9,
        why="inputs in general position span R^d, so the projection is the identity; "
        "tolerance as above",
    )
    replicas = np.flatnonzero(zero_soft)
    slopes = measured_rates(result, replicas)
    predicted = np.log(result.contraction[replicas])
    ok = np.isfinite(slopes)
    claims.close(
        "linear rate: slope of log |error along slowest mode| = log rho (Hessian at the limit)",
        predicted=predicted[ok],
        measured=slopes[ok],
        rtol=1e-3,
        why="fit over 1e-12..1e-6, where the map is linear to < 1e-6 relative; 1e-3 allows for "
        "round-off at the low end of the window",
    )
    random_init = result.variant == 1
    claims.at_most(
        "random init -> P w* + (I - P) w(0) (max relative distance)",
        measured=float(result.final_distance_to_own_limit[random_init].max()),
        bound=1e-9,
        why="same round-off and GD error as for the zero initialisation",
    )
    small = result.n < result.d
    claims.ordered(
        "n < d: the initialisation decides where GD lands (median distance to P w*)",
        {
            "zero init": float(np.median(final[zero_soft & small])),
            "random init": float(np.median(final[random_init & small])),
        },
        order=["zero init", "random init"],
        margin=1e-3,
        why="predicted offset |(I - P) w(0)| / |P w*| is O(1) for a random start; 1e-3 is far "
        "above the round-off of the zero-init distance",
    )
    claims.ordered(
        "hard labels: GD does not converge to P w* (median distance)",
        {
            "soft labels": float(np.median(final[zero_soft])),
            "hard labels": float(np.median(final[result.variant == 2])),
        },
        order=["soft labels", "hard labels"],
        margin=1e-3,
        why="on separable hard labels the logistic loss has no finite minimiser: |w| grows "
        "without bound",
    )


def plot_optimization_bias(result: OptimizationBiasResult):
    """Left: distance to ``P w*`` against the step, with the predicted rates. Right: final
    distance per variant and ``n``, against the predicted offset of the random start."""
    fig, axes = figure(2, 1, width=5.2, height=4.0)
    left, right = axes[0]
    colors = [PALETTE["blue"], PALETTE["green"], PALETTE["purple"], PALETTE["orange"]]
    for i, n in enumerate(result.sizes):
        reps = np.flatnonzero((result.variant == 0) & (result.n == n))
        for k, r in enumerate(reps):
            left.semilogy(
                result.steps,
                np.maximum(result.distance_to_projection[:, r], 1e-17),
                color=colors[i],
                lw=0.8,
                alpha=0.6,
                label=f"n={n}" if k == 0 else None,
            )
        r = reps[np.argmax(result.contraction[reps])]  # the slowest replica of this n
        anchor = result.distance_to_projection[:, r]
        t0 = int(np.argmin(np.abs(anchor - 1e-6)))
        ref = anchor[t0] * result.contraction[r] ** (result.steps - result.steps[t0])
        plot_predicted(
            left,
            result.steps,
            ref,
            label="predicted rate $\\rho^t$ (slowest)" if i == len(result.sizes) - 1 else "",
        )
    left.set_ylim(1e-17, 10)
    left.set(
        xlabel="gradient-descent step",
        ylabel="$|w_t - P w^*| / |P w^*|$",
        title=f"Zero init, soft labels (d={result.d})",
    )
    left.legend(fontsize=8)
    final = result.distance_to_projection[-1]
    markers = ["o", "s", "^"]
    variant_colors = [ROLE_COLORS["soft"], PALETTE["green"], ROLE_COLORS["hard"]]
    for v, name in enumerate(VARIANTS):
        sel = result.variant == v
        jitter = 1 + 0.06 * (v - 1)
        right.scatter(
            result.n[sel] * jitter,
            np.maximum(final[sel], 1e-17),
            marker=markers[v],
            s=14,
            color=variant_colors[v],
            label=name,
            alpha=0.7,
        )
    sel = result.variant == 1
    right.scatter(
        result.n[sel],
        np.maximum(result.predicted_offset[sel], 1e-17),
        marker="_",
        s=120,
        color="k",
        label="predicted: $|(I-P)w_0|$",
    )
    right.axvline(result.d, color="grey", ls=":", lw=1)
    _size_axis(right, result.sizes)
    right.set_yscale("log")
    right.set(
        xlabel="training-set size $n$ (dotted: $n = d$)",
        ylabel="final $|w_T - P w^*| / |P w^*|$",
        title="Where gradient descent lands",
    )
    right.legend(fontsize=7)
    return fig


# -- 2. optimisation bias: deep linear student -----------------------------------------------


@dataclass
class DeepLinearResult:
    """End-to-end vectors of deep linear students against the predicted limit.

    Arrays indexed by replica ``r = (size, scale, seed)`` in that nesting order.
    """

    d: int
    depth: int
    sizes: np.ndarray
    init_scales: np.ndarray
    seeds: int
    n: np.ndarray  # (R,)
    init_scale: np.ndarray  # (R,)
    distance_to_projection: np.ndarray  # (R,) |w_T - P w*| / |P w*|
    predicted_distance: np.ndarray  # (R,) |v_inf| / |P w*|
    distance_to_prediction: np.ndarray  # (R,) |w_T - limit| / |limit|
    loss_gradient_norm: np.ndarray  # (R,) |grad L| at the end
    steps: int  # gradient steps taken (a multiple of the scale's budget, see run_deep_linear)
    initial_loss_gap: np.ndarray  # (R,) L(w(0)) - L(0): the theorem assumes it is negative
    initial_imbalance: float  # max_j |W_j^T W_j - W_{j+1} W_{j+1}^T| / |W_j|^2 at t = 0


MAX_REDRAWS = 20  # redraws of initialisations that miss L(w(0)) < L(0) (see run_deep_linear)
#: Deep linear students train in blocks of the scale's step budget until every replica's loss
#: gradient is below ``STATIONARY_GRADIENT`` (the limit the theorem describes is a stationary
#: point), at most ``MAX_BUDGETS`` blocks: an ill-conditioned draw of the data (a small
#: eigenvalue of its Gram matrix) converges several times slower than the others.
STATIONARY_GRADIENT = 1e-10
MAX_BUDGETS = 4


def _balanced_layers(
    scales: np.ndarray, d: int, depth: int, width: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """Fresh rank-one balanced layers for ``len(scales)`` replicas, replica ``r`` at scale
    ``scales[r]``: ``depth`` tensors of shapes ``(R, d, width) ... (R, width, 1)``."""
    rows = []
    for value in scales:
        block = DeepLinearStudent(
            1,
            d,
            depth=depth,
            width=width,
            init_scale=float(value),
            init="balanced",
            generator=gen,
            dtype=DTYPE,
        )
        rows.append([p.detach() for p in block.layers])
    return [torch.cat([row[j] for row in rows]) for j in range(depth)]


@stored_run
@single_cpu_thread
def run_deep_linear(config: RunConfig) -> DeepLinearResult:
    """Deep linear students (rank-one balanced initialisation, sign chosen so that the loss at
    initialisation is below the loss at zero, redrawn where that fails) trained by gradient
    descent on soft labels."""
    d = config.pick(16, 64)
    depth = 3
    width = config.pick(8, 32)
    sizes = np.array([d // 4, 2 * d])
    init_scales = np.array(
        config.pick([0.025, 0.05, 0.1, 0.2, 0.4], [0.0125, 0.025, 0.05, 0.1, 0.2, 0.4])
    )
    seeds = config.pick(6, 32)
    steps = config.pick(4000, 16000)
    device = config.device
    gen = make_generator(config.seed + 1)
    n_max = int(sizes.max())
    groups = len(sizes) * len(init_scales)
    replicas = groups * seeds

    x = sample_gaussian(seeds, n_max, d, gen, DTYPE, device).repeat(groups, 1, 1)
    w_star = torch.randn(d, generator=gen, dtype=DTYPE)
    w_star = (2.0 * w_star / w_star.norm()).to(device)
    n = np.repeat(sizes, len(init_scales) * seeds)
    scale = np.tile(np.repeat(init_scales, seeds), len(sizes))
    mask = (torch.arange(n_max, device=device)[None] < torch.tensor(n, device=device)[:, None]).to(
        DTYPE
    )
    probs = torch.sigmoid((x @ w_star[:, None])[..., 0])

    layers = []
    for g in range(groups):
        block = DeepLinearStudent(
            seeds,
            d,
            depth=depth,
            width=width,
            init_scale=float(init_scales[g % len(init_scales)]),
            init="balanced",
            generator=gen,
            dtype=DTYPE,
        )
        layers.append([p.detach() for p in block.layers])
    student = DeepLinearStudent(replicas, d, depth=depth, width=width, dtype=DTYPE, device=device)
    with torch.no_grad():
        for j in range(depth):
            student.layers[j].copy_(torch.cat([blk[j] for blk in layers]).to(device))
        # L(w0) < L(0) to first order: w0 must point against grad L(0) = X^T (1/2 - y) / n
        grad_at_zero = (x.transpose(1, 2) @ ((0.5 - probs) * mask)[..., None])[..., 0]

        def point_downhill() -> torch.Tensor:
            """Flip each replica's sign against grad L(0); return L(w(0)) - L(0)."""
            w0 = student.end_to_end()[..., 0]
            student.layers[-1][(w0 * grad_at_zero).sum(-1) > 0] *= -1
            return binary_cross_entropy(student(x), probs, mask, check=False) - math.log(2)

        # The theorem assumes L(w(0)) < L(0) = log 2. A direction nearly orthogonal to the
        # gradient can miss it at the larger scales (second order wins): such replicas are drawn
        # again, i.e. initialisations are sampled conditionally on the hypothesis.
        initial_loss_gap = point_downhill()
        for _ in range(MAX_REDRAWS):
            bad = torch.nonzero(initial_loss_gap >= 0)[:, 0]
            if len(bad) == 0:
                break
            fresh = _balanced_layers(scale[bad.cpu().numpy()], d, depth, width, gen)
            for j, layer in enumerate(fresh):
                student.layers[j][bad] = layer.to(device)
            initial_loss_gap = point_downhill()
        w_init = student.end_to_end()[..., 0].clone()
        initial_imbalance = _imbalance(list(student.layers))

    projection = theory.linear_student_limit(x, w_star, None, mask)
    limit = theory.deep_linear_limit(x, w_star, w_init, depth, mask)
    # step 1/L of the end-to-end dynamics near the limit: its preconditioner has norm
    # N |w|^{2 - 2/N} and the loss Hessian is at most lambda_max(X^T X / n) / 4
    lr = theory.gd_step_size(x, mask) / (depth * limit.norm(dim=-1) ** (2 - 2 / depth))

    def loss_fn(model, _batch):
        return binary_cross_entropy(model(x), probs, sample_weight=mask, check=False)

    taken = 0
    for _ in range(MAX_BUDGETS):
        train(student, loss_fn, steps, lr, record_every=steps, desc="deep linear students")
        taken += steps
        grad = _end_to_end_gradient(student, x, probs, mask)
        if float(grad.norm(dim=-1).max()) <= STATIONARY_GRADIENT:
            break
    with torch.no_grad():
        w_final = student.end_to_end()[..., 0]
    ref = projection.norm(dim=-1)
    return DeepLinearResult(
        d=d,
        depth=depth,
        sizes=sizes,
        init_scales=init_scales,
        seeds=seeds,
        n=n,
        init_scale=scale,
        distance_to_projection=((w_final - projection).norm(dim=-1) / ref).cpu().numpy(),
        predicted_distance=((limit - projection).norm(dim=-1) / ref).cpu().numpy(),
        distance_to_prediction=((w_final - limit).norm(dim=-1) / limit.norm(dim=-1)).cpu().numpy(),
        loss_gradient_norm=grad.norm(dim=-1).cpu().numpy(),
        initial_loss_gap=initial_loss_gap.cpu().numpy(),
        initial_imbalance=initial_imbalance,
        steps=taken,
    )


def _end_to_end_gradient(
    student: DeepLinearStudent, x: torch.Tensor, probs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Gradient of the soft-label loss with respect to the end-to-end vector, ``(R, d)``:
    ``X^T (sigmoid(X w) - p) / n`` over each replica's first ``n`` points."""
    with torch.no_grad():
        w = student.end_to_end()[..., 0]
        z = (x @ w[..., None])[..., 0]
        grad = (x.transpose(1, 2) @ ((torch.sigmoid(z) - probs) * mask)[..., None])[..., 0]
        return grad / mask.sum(-1, keepdim=True)


def _imbalance(layers: list[torch.Tensor]) -> float:
    """Largest relative violation of balancedness ``W_j^T W_j = W_{j+1} W_{j+1}^T`` over the
    layers (shape ``(R, in, out)``) and replicas."""
    worst = 0.0
    for lower, upper in zip(layers[:-1], layers[1:], strict=True):
        gap = lower.transpose(1, 2) @ lower - upper @ upper.transpose(1, 2)
        scale = (lower**2).sum((1, 2))
        worst = max(worst, float((torch.linalg.matrix_norm(gap) / scale).max()))
    return worst


def check_deep_linear(result: DeepLinearResult, claims: Claims) -> None:
    """The theorem's hypotheses at initialisation, the in-span limit, the predicted remainder,
    and its linear dependence on the scale."""
    big = result.n >= result.d
    small = ~big
    claims.at_most(
        "deep linear hypotheses: balanced layers at t = 0 (max relative imbalance)",
        measured=result.initial_imbalance,
        bound=1e-12,
        why="the rank-one balanced initialisation is exact up to float64 round-off",
    )
    claims.at_most(
        "deep linear hypotheses: L(w(0)) < L(0) for every replica (max of L(w(0)) - L(0))",
        measured=float(result.initial_loss_gap.max()),
        bound=0.0,
        why="the theorem's condition that keeps gradient flow away from w = 0; the sign of the "
        "initialisation is chosen for it to first order, this checks it exactly",
    )
    claims.at_most(
        f"depth {result.depth}: every student reached a stationary point, max |grad L(w_T)|",
        measured=float(result.loss_gradient_norm.max()),
        bound=1e-6,
        why=f"after {result.steps} steps; the theorem describes the limit of gradient flow; on "
        "the slowest draw measured (seed 3), |w_T - w_inf| was about 70 |grad L|, so 1e-6 leaves "
        "the comparisons below (2% of a remainder of at least 0.02) a margin of 5x",
    )
    claims.at_most(
        f"depth {result.depth}, n >= d: end-to-end weight -> w* (max relative distance)",
        measured=float(result.distance_to_projection[big].max()),
        bound=1e-6,
        why="the inputs span R^d, so no remainder survives; 1e-6 allows for the slow final "
        "phase of the non-convex dynamics within the step budget",
    )
    claims.close(
        f"depth {result.depth}, n < d: |w_T - P w*| = predicted remainder |v_inf|",
        predicted=result.predicted_distance[small],
        measured=result.distance_to_projection[small],
        rtol=0.02,
        why="the prediction is exact for gradient flow; gradient descent with step 1/L breaks "
        "balancedness by O(step^2) per step, which shifts the remainder by about 1%",
    )
    claims.at_most(
        f"depth {result.depth}, n < d: w_T = P w* + v_inf, the predicted limit (max of "
        "|w_T - w_inf| / |w_inf|)",
        measured=float(result.distance_to_prediction[small].max()),
        bound=0.02,
        why="the whole vector, not only the remainder's norm: same in-span limit P w*, remainder "
        "along (I - P) w(0); same 2% allowance for gradient descent as above",
    )
    scales = result.init_scales
    measured = [result.distance_to_projection[small & (result.init_scale == s)] for s in scales]
    predicted = [result.predicted_distance[small & (result.init_scale == s)] for s in scales]
    from ..claims import fit_slope

    claims.slope(
        "remainder grows linearly in the initialisation scale (log-log slope)",
        scales,
        np.stack(measured),
        predicted=fit_slope(scales, np.stack(predicted)),
        tol=0.05,
        why="predicted slope is the fitted slope of the exact formula (1 in the small-scale "
        "limit); 0.05 covers the 1-2% discretisation error above",
    )


def plot_deep_linear(result: DeepLinearResult):
    """Distance of the end-to-end weight to ``P w*`` against the initialisation scale."""
    fig, axes = figure(1, 1, width=5.6, height=4.0)
    ax = axes[0][0]
    small = result.n < result.d
    for k, s in enumerate(result.init_scales):
        sel = small & (result.init_scale == s)
        ax.scatter(
            np.full(sel.sum(), s) * (1 + 0.03 * np.linspace(-1, 1, sel.sum())),
            result.distance_to_projection[sel],
            s=14,
            color=ROLE_COLORS["soft"],
            label=f"measured, n={result.sizes[0]} < d" if k == 0 else None,
        )
        ax.scatter(
            np.full(sel.sum(), s) * (1 + 0.03 * np.linspace(-1, 1, sel.sum())),
            result.predicted_distance[sel],
            marker="_",
            s=90,
            color="k",
            label="predicted $|v_\\infty|$" if k == 0 else None,
        )
    big = ~small
    ax.scatter(
        result.init_scale[big],
        np.maximum(result.distance_to_projection[big], 1e-17),
        marker="s",
        s=14,
        color=PALETTE["green"],
        label=f"measured, n={result.sizes[-1]} >= d",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(
        xlabel="initialisation scale $s$ (each layer)",
        ylabel="$|w_T - P w^*| / |P w^*|$",
        title=f"Deep linear students (depth {result.depth}, d={result.d})",
    )
    ax.legend(fontsize=8)
    return fig


# -- 3. which minimiser: the bias matters ------------------------------------------------------


@dataclass
class MinimisersResult:
    """Transfer risk of minimisers ``P w* + (I - P) w0`` of the distillation objective (the limits
    of GD from ``w0``, by the optimisation-bias theorem), for random ``w0`` of relative size
    ``offsets``.

    ``risk`` has shape ``(len(offsets), len(sizes), seeds)``.
    """

    d: int
    distribution: AngularDistribution
    sizes: np.ndarray
    offsets: np.ndarray
    risk: np.ndarray
    train_loss_gap: float  # max over replicas of |L(minimiser) - L(P w*)|
    projection_error: float  # relative difference between the two projection routes


@stored_run
@single_cpu_thread
def run_minimisers(config: RunConfig) -> MinimisersResult:
    """All minimisers interpolate the teacher's logits; compare their exact transfer risks."""
    d = config.pick(100, 1000)
    sizes = np.array(config.pick([4, 8, 16, 32, 64], [4, 8, 16, 32, 64, 128, 256, 512]))
    offsets = np.array([0.0, 0.25, 0.5, 1.0])
    seeds = config.pick(100, 1000)
    distribution = AngularDistribution("polynomial", kappa=1.0)
    gen = make_generator(config.seed + 2)
    device = config.device
    x, _ = sample_angular(seeds, int(sizes.max()), d, distribution, gen, DTYPE, device)
    w_star = 4.0 * teacher_direction(d, DTYPE, device)
    direction = torch.randn(seeds, d, generator=gen, dtype=DTYPE).to(device)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    risk = np.zeros((len(offsets), len(sizes), seeds))
    gap = 0.0
    for i, n in enumerate(sizes):
        xs = x[:, :n]
        projection = _project(xs, w_star.expand(seeds, d))
        outside = direction - _project(xs, direction)
        base_loss = _soft_loss(xs, projection, w_star)
        for k, offset in enumerate(offsets):
            # the limit of GD from w0 = offset |w*| direction: P w* + (I - P) w0
            w = projection + offset * w_star.norm() * outside
            gap = max(gap, float((_soft_loss(xs, w, w_star) - base_loss).abs().max()))
            angle = theory.angle_between(w, w_star).cpu().numpy()
            risk[k, i] = theory.transfer_risk_of_angle(angle, d, distribution)
    # the fast projection above against the theory's (SVD) on a subset of the training sets
    check = slice(0, min(seeds, 32))
    reference = theory.span_projection(x[check], w_star)
    projection_error = float(
        (
            (_project(x[check], w_star.expand(len(reference), d)) - reference).norm(dim=-1)
            / reference.norm(dim=-1)
        ).max()
    )
    return MinimisersResult(d, distribution, sizes, offsets, risk, gap, projection_error)


def _project(x: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """``P v = X^+ X v`` per replica, by the Cholesky route of :func:`fit_distilled_linear`
    (fast on large batches; the theory's SVD route checks it)."""
    return _min_norm_solution(x, (x @ vectors[..., None])[..., 0])


def _soft_loss(x: torch.Tensor, w: torch.Tensor, w_star: torch.Tensor) -> torch.Tensor:
    """Mean soft-label cross-entropy of students ``w`` (R, d) on inputs ``x`` (R, n, d)."""
    logits = (x @ w[..., None])[..., 0]
    probs = torch.sigmoid(x @ w_star)
    return binary_cross_entropy(logits, probs, check=False)


def check_minimisers(result: MinimisersResult, claims: Claims) -> None:
    """Equal training loss, unequal risk: the smallest-offset minimiser is the best."""
    claims.at_most(
        "projection by Cholesky = projection by SVD (max relative difference)",
        measured=result.projection_error,
        bound=1e-8,
        why="two float64 routes; the Gram matrix squares the condition number of the inputs",
    )
    claims.at_most(
        "every P w* + (I - P) w0 attains the same training loss (max difference)",
        measured=result.train_loss_gap,
        bound=1e-10,
        why="they give the same logits on every training input; float64 round-off",
    )
    mean = result.risk.mean(axis=-1)
    names = [f"offset {o:g}" for o in result.offsets]
    for i in (0, len(result.sizes) - 1):
        claims.ordered(
            f"n={result.sizes[i]}: mean transfer risk grows with the offset from P w*",
            dict(zip(names, mean[:, i], strict=True)),
            order=names,
            why=f"means over {result.risk.shape[-1]} training sets; exact risk per student",
        )


def plot_minimisers(result: MinimisersResult):
    """Transfer risk against ``n`` for minimisers at increasing offset from ``P w*``."""
    fig, axes = figure(1, 1, width=5.6, height=4.0)
    ax = axes[0][0]
    colors = [ROLE_COLORS["soft"], PALETTE["green"], PALETTE["orange"], ROLE_COLORS["hard"]]
    for k, offset in enumerate(result.offsets):
        label = "GD from 0: $P w^*$" if offset == 0 else f"offset {offset:g} $|w^*|$"
        plot_measured(ax, result.sizes, result.risk[k], label, color=colors[k])
    _size_axis(ax, result.sizes)
    ax.set_yscale("log")
    ax.set(
        xlabel="training-set size $n$",
        ylabel="transfer risk $R(w)$",
        title=f"Minimisers of the distillation loss ({result.distribution.label}, d={result.d})",
    )
    ax.legend(fontsize=8)
    return fig


# -- 4. data geometry ----------------------------------------------------------------------------


@dataclass
class DataGeometryResult:
    """Exact transfer risks of distilled students, ``risk[g, i, s]`` for geometry ``g``, size
    ``sizes[i]``, training set ``s``; ``bound[g, i]`` the generalisation bound;
    ``max_angle_error`` the largest angle difference between the fitted students and the theory's
    projection."""

    d: int
    distributions: list
    sizes: np.ndarray
    risk: np.ndarray
    bound: np.ndarray
    rate: np.ndarray  # corollary rates, NaN where none
    above_margin: np.ndarray  # (G, len(sizes), seeds) bool: student angle > margin
    max_angle_error: float
    confidence: float = 0.99
    fit_from: int = 4


def geometry_distributions() -> list[AngularDistribution]:
    """Three polynomial geometries (mass near the boundary ~ t^kappa) and one angular margin."""
    return [
        AngularDistribution("polynomial", kappa=0.5),
        AngularDistribution("polynomial", kappa=1.0),
        AngularDistribution("polynomial", kappa=2.0),
        AngularDistribution("margin", margin=math.pi / 16),
    ]


GEOMETRY_COPIES = 6  # working copies of a seed's inputs in run_data_geometry (memory estimate)


@stored_run
@single_cpu_thread
def run_data_geometry(
    config: RunConfig, distributions: list[AngularDistribution] | None = None
) -> DataGeometryResult:
    """Distil students on nested training sets from each geometry (default
    :func:`geometry_distributions`); exact risk per student."""
    d = config.pick(200, 1000)
    sizes = np.array(config.pick([2, 4, 8, 16, 32, 64], [2, 4, 8, 16, 32, 64, 128, 256, 512]))
    seeds = config.pick(200, 2000)
    distributions = geometry_distributions() if distributions is None else list(distributions)
    gen = make_generator(config.seed + 3)
    device = config.device
    w_star = 4.0 * teacher_direction(d, DTYPE, device)
    risk = np.zeros((len(distributions), len(sizes), seeds))
    above = np.zeros(risk.shape, dtype=bool)
    angle_error = 0.0
    n_max = int(sizes.max())
    # seeds in chunks that fit in memory: the inputs and the solver's intermediates, about
    # GEOMETRY_COPIES copies of (n_max, d) float64 per seed (full scale: 8 GB of inputs alone)
    chunk = auto_chunk_size(seeds, GEOMETRY_COPIES * n_max * d * 8, device)
    for g, dist in enumerate(tqdm(distributions, desc="geometries", leave=False)):
        for start in range(0, seeds, chunk):
            part = slice(start, min(start + chunk, seeds))
            x, _ = sample_angular(part.stop - start, n_max, d, dist, gen, DTYPE, device)
            probs = torch.sigmoid(x @ w_star)
            for i, n in enumerate(sizes):
                w = fit_distilled_linear(x[:, :n], probs[:, :n])
                angle = theory.angle_between(w, w_star)
                if start == 0:  # the theory's SVD route, on a subset
                    sub = slice(0, min(len(x), 64))
                    projection = theory.span_projection(x[sub, :n], w_star)
                    reference = theory.angle_between(projection, w_star)
                    angle_error = max(angle_error, float((angle[sub] - reference).abs().max()))
                angle = angle.cpu().numpy()
                risk[g, i, part] = theory.transfer_risk_of_angle(angle, d, dist)
                above[g, i, part] = angle > dist.margin
    bound = np.stack([theory.risk_bound(sizes, dist) for dist in distributions])
    rate = np.full(bound.shape, np.nan)
    for g, dist in enumerate(distributions):
        if dist.kind == "polynomial":
            rate[g, sizes >= 3] = theory.polynomial_rate(sizes[sizes >= 3], dist.kappa)
        else:
            rate[g] = theory.margin_rate(sizes, dist.margin)
    return DataGeometryResult(d, distributions, sizes, risk, bound, rate, above, angle_error)


def decay_exponents(result: DataGeometryResult) -> tuple[np.ndarray, np.ndarray]:
    """Fitted decay exponents ``a`` (``E[R] ~ n^-a``) of the measured mean risk and of the bound,
    for the polynomial geometries, over ``n >= fit_from``."""
    fit = result.sizes >= result.fit_from
    measured, bound = [], []
    for g, dist in enumerate(result.distributions):
        if dist.kind != "polynomial":
            continue
        measured.append(_fit_exponent(result.sizes[fit], result.risk[g][fit].mean(-1)))
        bound.append(_fit_exponent(result.sizes[fit], result.bound[g][fit]))
    return np.array(measured), np.array(bound)


def _bootstrap_exponent_slope(result: DataGeometryResult, draws: int = 200) -> float:
    """Bootstrap (over training sets) standard error of the log-log slope of exponent vs kappa."""
    rng = np.random.default_rng(0)
    fit = result.sizes >= result.fit_from
    poly = [g for g, dist in enumerate(result.distributions) if dist.kind == "polynomial"]
    kappas = np.array([result.distributions[g].kappa for g in poly])
    seeds = result.risk.shape[-1]
    slopes = []
    for _ in range(draws):
        idx = rng.integers(0, seeds, seeds)
        exps = [
            _fit_exponent(result.sizes[fit], result.risk[g][fit][:, idx].mean(-1)) for g in poly
        ]
        slopes.append(np.polyfit(np.log(kappas), np.log(exps), 1)[0])
    return float(np.std(slopes, ddof=1))


def check_data_geometry(result: DataGeometryResult, claims: Claims) -> None:
    """Below the bound; faster decay with better separation; exponent proportional to kappa;
    with a margin, the risk is exactly zero once a training input is close enough to the axis."""
    from scipy import stats

    claims.at_most(
        "solver = projection P w* of the optimisation-bias theorem (max angle difference, radians)",
        measured=result.max_angle_error,
        bound=1e-8,
        why="two independent float64 routes (Cholesky on the soft labels' logits vs SVD "
        "projection of w*); near-collinear inputs make the Gram matrix ill-conditioned",
    )
    for g, dist in enumerate(result.distributions):
        upper = _mean_upper_bound(result.risk[g], result.confidence)
        claims.at_most(
            f"{dist.label}: E[R_n] <= generalisation bound (max over n of upper CI / bound)",
            measured=float(np.max(upper / result.bound[g])),
            bound=1.0,
            why=f"one-sided {result.confidence:.0%} t upper bound on the mean over training sets",
        )
    measured, bound = decay_exponents(result)
    poly = [dist for dist in result.distributions if dist.kind == "polynomial"]
    names = [dist.label for dist in poly]
    claims.ordered(
        "better separation, faster decay (fitted exponent a in E[R] ~ n^-a)",
        dict(zip(names, measured, strict=True)),
        order=names,
        why=f"least-squares fits of log mean risk on log n for n >= {result.fit_from}",
    )
    for name, m, b in zip(names, measured, bound, strict=True):
        claims.at_least(
            f"{name}: risk decays at least as fast as the bound (fitted exponents)",
            measured=float(m),
            bound=float(b),
            why="if E[R_n] <= B(n) for every n and both follow power laws, the risk's exponent is "
            "at least the bound's",
        )
    kappas = np.array([dist.kappa for dist in poly])
    se = _bootstrap_exponent_slope(result)
    claims.slope(
        "decay exponent proportional to kappa: slope of log a against log kappa",
        kappas,
        measured,
        predicted=1.0,
        tol=max(3 * se, 0.05),
        why="an observation beyond the corollary (an upper bound says nothing about the risk's "
        "own exponent): the heuristic tan(gamma_n) ~ 1/n, R ~ (tan(gamma)/sqrt(d))^kappa of "
        f"exercise ex-rate (b). tol = 3 bootstrap SE over training sets ({se:.3f}), at least 0.05",
    )
    for g, dist in enumerate(result.distributions):
        if dist.kind != "margin":
            continue
        seeds = result.above_margin.shape[-1]
        count = result.above_margin[g].sum(-1)
        lower = np.array(
            [
                stats.beta.ppf(1 - result.confidence, c, seeds - c + 1) if c > 0 else 0.0
                for c in count
            ]
        )
        claims.at_most(
            f"{dist.label}: P[R_n > 0] <= F(pi/2 - m)^n (max over n of lower CI - bound)",
            measured=float(np.max(lower - result.rate[g])),
            bound=0.0,
            why=f"one-sided {result.confidence:.0%} Clopper-Pearson lower bound on the fraction "
            "of training sets whose student is further than the margin from w*",
        )
        expected = seeds * float(result.rate[g][-1])
        claims.at_most(
            f"{dist.label}: at n={result.sizes[-1]} no training set leaves its student further "
            "than the margin (count)",
            measured=float(count[-1]),
            bound=0.0,
            why=f"the bound allows an expected {expected:.2g} such training sets out of {seeds}: "
            "risk exactly zero at finite n",
        )


def plot_data_geometry(result: DataGeometryResult):
    """Left: measured risk and the bound against ``n``. Right: for the margin geometry, the
    fraction of training sets with non-zero risk against its bound."""
    fig, axes = figure(2, 1, width=5.2, height=4.2)
    left, right = axes[0]
    colors = [ROLE_COLORS["hard"], PALETTE["orange"], ROLE_COLORS["soft"], PALETTE["green"]]
    for g, dist in enumerate(result.distributions):
        if dist.kind == "polynomial":
            plot_measured(left, result.sizes, result.risk[g], dist.label, color=colors[g])
            plot_predicted(left, result.sizes, result.bound[g], label="", color=colors[g])
        else:
            frac = result.above_margin[g].mean(-1)
            right.plot(result.sizes, frac, "o-", color=colors[g], label="measured $P[R_n > 0]$")
            plot_predicted(
                right,
                result.sizes,
                result.rate[g],
                label="bound $F(\\pi/2 - m)^n$",
                color=colors[g],
            )
    left.plot([], [], "k--", label="bound (same colour)")
    _size_axis(left, result.sizes)
    left.set_yscale("log")
    left.set(
        xlabel="training-set size $n$",
        ylabel="expected transfer risk $E[R_n]$",
        title=f"Polynomial geometries (d={result.d})",
    )
    left.legend(fontsize=7)
    _size_axis(right, result.sizes)
    right.set(
        xlabel="training-set size $n$",
        ylabel="fraction of training sets",
        title=f"Angular margin m = {result.distributions[-1].margin:.3f} rad",
    )
    right.legend(fontsize=8)
    return fig


# -- 5. strong monotonicity -------------------------------------------------------------------


@dataclass
class MonotonicityResult:
    """Exact risks along nested training sets, ``(len(sizes), seeds)``, soft vs hard labels."""

    d: int
    distribution: AngularDistribution
    sizes: np.ndarray
    soft_risk: np.ndarray
    hard_risk: np.ndarray
    soft_angle: np.ndarray  # angle between student and w*, same shape
    hard_angle: np.ndarray
    hard_steps: int
    angle_tol: float  # 10 x the solver's angle error: smaller changes are not resolved
    confidence: float = 0.99


@stored_run
@single_cpu_thread
def run_monotonicity(config: RunConfig, hard_steps: int | None = None) -> MonotonicityResult:
    """Grow each training set one block at a time; distil (soft) or train by gradient descent
    on the teacher's hard labels for ``hard_steps`` steps (hard; default 600 quick, 5000 full)."""
    d = config.pick(100, 500)
    sizes = np.array(config.pick([2, 4, 8, 16, 32, 64], [2, 4, 8, 16, 32, 64, 128, 256]))
    seeds = config.pick(192, 500)
    hard_steps = config.pick(600, 5000) if hard_steps is None else int(hard_steps)
    distribution = AngularDistribution("polynomial", kappa=1.0)
    gen = make_generator(config.seed + 4)
    device = config.device
    n_max = int(sizes.max())
    x, _ = sample_angular(seeds, n_max, d, distribution, gen, DTYPE, device)
    w_star = 4.0 * teacher_direction(d, DTYPE, device)
    probs = torch.sigmoid(x @ w_star)

    soft_angle = np.zeros((len(sizes), seeds))
    gap = 0.0
    for i, n in enumerate(sizes):
        w = fit_distilled_linear(x[:, :n], probs[:, :n])
        angle = theory.angle_between(w, w_star)
        sub = slice(0, min(seeds, 64))  # the theory's SVD route, on a subset
        exact = theory.angle_between(theory.span_projection(x[sub, :n], w_star), w_star)
        gap = max(gap, float((angle[sub] - exact).abs().max()))
        soft_angle[i] = angle.cpu().numpy()
    # hard-label students: one batched run over the seeds per training-set size (grouped by
    # size rather than padded: a padded copy of every set for every size did not fit in 24 GB
    # at full scale)
    hard_labels = (x[..., 0] > 0).to(DTYPE)
    hard_angle = np.zeros((len(sizes), seeds))
    for i, n in enumerate(sizes):
        prefix = x[:, :n]
        lr = theory.gd_step_size(prefix)
        w_hard = train_span_gd(
            prefix, hard_labels[:, :n], hard_steps, lr, desc=f"hard-label students, n={n}"
        )
        hard_angle[i] = theory.angle_between(w_hard, w_star).cpu().numpy()
    return MonotonicityResult(
        d=d,
        distribution=distribution,
        sizes=sizes,
        soft_risk=theory.transfer_risk_of_angle(soft_angle, d, distribution),
        hard_risk=theory.transfer_risk_of_angle(hard_angle, d, distribution),
        soft_angle=soft_angle,
        hard_angle=hard_angle,
        hard_steps=hard_steps,
        angle_tol=max(10 * gap, 1e-12),
    )


def check_monotonicity(result: MonotonicityResult, claims: Claims) -> None:
    """Soft: monotone per training set and on average. Hard: not per training set."""
    claims.monotone(
        "distilled student: E[R_n] decreases along nested training sets",
        result.sizes,
        result.soft_risk,
        direction="decreasing",
        strict=True,
        confidence=result.confidence,
        why="paired one-sided t-tests across training sets, Bonferroni over steps",
    )
    steps = result.soft_risk[1:].size
    # on the symmetric distribution the risk is an increasing function of the angle to w*
    # (R(gamma), tested against Monte Carlo in the library's tests), so it rises exactly when the
    # angle does. For the distilled student the angle cannot rise (a projection onto a larger span
    # keeps more of w*): this claim certifies the solver and the reduction; the hard-label claim
    # below is the one the data could contradict.
    soft_up = _pointwise_increases(result.soft_angle, result.angle_tol)
    hard_up = _pointwise_increases(result.hard_angle, result.angle_tol)
    claims.at_most(
        f"distilled student: angle to w*, hence risk, never rises on any of {steps} nested steps "
        "(count)",
        measured=soft_up,
        bound=0,
        why="strong monotonicity: the angle of the projection P_n w* to w* is non-increasing in "
        "the span, and R(gamma) increases with gamma on a symmetric distribution; changes below "
        f"10x the solver's angle error ({result.angle_tol:.1e} rad) are ignored",
    )
    claims.at_least(
        f"hard-label student (GD, {result.hard_steps} steps): risk rises on some nested steps",
        measured=hard_up,
        bound=1,
        why="hard labels do not have the property; same resolution as for the soft student",
    )
    claims.ordered(
        f"n={result.sizes[-1]}: distilled student beats the hard-label student (mean risk)",
        {"soft": result.soft_risk[-1].mean(), "hard": result.hard_risk[-1].mean()},
        order=["soft", "hard"],
        why="means over the same training sets",
    )


def plot_monotonicity(result: MonotonicityResult, traces: int = 12):
    """Left: mean risk against ``n``. Right: individual learning curves (nested sets)."""
    fig, axes = figure(2, 1, width=5.2, height=4.0)
    left, right = axes[0]
    plot_measured(left, result.sizes, result.soft_risk, "soft", color=ROLE_COLORS["soft"])
    plot_measured(left, result.sizes, result.hard_risk, "hard", color=ROLE_COLORS["hard"])
    _size_axis(left, result.sizes)
    left.set_yscale("log")
    left.set(
        xlabel="training-set size $n$",
        ylabel="expected transfer risk",
        title=f"Mean over training sets ({result.distribution.label}, d={result.d})",
    )
    left.legend(fontsize=8)
    for s in range(min(traces, result.soft_risk.shape[1])):
        right.plot(result.sizes, result.soft_risk[:, s], color=ROLE_COLORS["soft"], lw=0.8)
        right.plot(result.sizes, result.hard_risk[:, s], color=ROLE_COLORS["hard"], lw=0.8)
    right.plot([], [], color=ROLE_COLORS["soft"], label="soft labels (distillation)")
    right.plot(
        [], [], color=ROLE_COLORS["hard"], label=f"hard labels ({result.hard_steps} GD steps)"
    )
    _size_axis(right, result.sizes)
    right.set_yscale("log")
    right.set(xlabel="training-set size $n$", ylabel="transfer risk", title="One curve per seed")
    right.legend(fontsize=8)
    return fig


# -- 6. real data: digits ----------------------------------------------------------------------


@dataclass
class DigitsResult:
    """Transfer risk (disagreement with the teacher on the test split), ``(len(sizes), seeds)``."""

    d: int
    sizes: np.ndarray
    soft_risk: np.ndarray
    hard_risk: np.ndarray
    teacher_accuracy: float
    hard_steps: int
    n_test: int
    spans: np.ndarray  # (len(sizes), seeds), bool: the training subset spans R^d (rank d)
    confidence: float = 0.99


@stored_run
@single_cpu_thread
def run_digits(config: RunConfig) -> DigitsResult:
    """A linear teacher (logistic regression on digits 0-4 vs 5-9, pixels not blank in at least
    5% of the training images plus a bias feature) and linear students on nested random subsets
    of the training split."""
    sizes = np.array(config.pick([8, 16, 32, 64, 128], [8, 16, 32, 64, 128, 256, 512, 1024]))
    seeds = config.pick(24, 200)
    hard_steps = config.pick(600, 5000)
    device = config.device
    split = load_digits_split(seed=config.seed, dtype=DTYPE)
    # pixels that are not blank in at least 5% of the training images (plus a bias): with every
    # non-constant pixel kept (d = 62), 56 of 200 random 1024-image subsets miss a rare pixel
    blank = split.x_train == split.x_train.min(0).values
    keep = (~blank).to(DTYPE).mean(0) >= 0.05
    x_train = _with_bias(split.x_train[:, keep]).to(device)
    x_test = _with_bias(split.x_test[:, keep]).to(device)
    y_train = (split.y_train >= 5).to(DTYPE).to(device)
    y_test = (split.y_test >= 5).to(DTYPE).to(device)
    d = x_train.shape[1]

    teacher = LinearStudent(1, d, device=device, dtype=DTYPE)
    lr = float(theory.gd_step_size(x_train[None])[0])
    train(
        teacher,
        lambda m, _: binary_cross_entropy(m(x_train), y_train, check=False),
        config.pick(1500, 5000),
        lr,
        weight_decay=1e-2,
        desc="teacher",
    )
    w_star = teacher.weight.detach()[0, :, 0]
    teacher_accuracy = float((((x_test @ w_star) > 0).to(DTYPE) == y_test).to(DTYPE).mean())

    gen = make_generator(config.seed + 5)
    n_max = int(sizes.max())
    index = torch.stack([torch.randperm(len(x_train), generator=gen)[:n_max] for _ in range(seeds)])
    x = x_train[index.to(device)]  # (seeds, n_max, d): nested prefixes
    teacher_logits = x @ w_star
    teacher_test = (x_test @ w_star) > 0

    soft = np.zeros((len(sizes), seeds))
    spans = np.zeros((len(sizes), seeds), dtype=bool)
    for i, n in enumerate(sizes):
        w = fit_distilled_linear(x[:, :n], torch.sigmoid(teacher_logits[:, :n]))
        soft[i] = ((x_test @ w.T > 0) != teacher_test[:, None]).to(DTYPE).mean(0).cpu().numpy()
        # some pixels are almost always blank: even a large subset can miss a direction
        spans[i] = (torch.linalg.matrix_rank(x[:, :n]) == d).cpu().numpy()
    # hard-label students grouped by training-set size, as in run_monotonicity (a padded copy
    # per size needs a (sizes x seeds, n_max, n_max) Gram matrix: 13 GB at full scale)
    hard_labels = (teacher_logits > 0).to(DTYPE)
    hard = np.zeros((len(sizes), seeds))
    for i, n in enumerate(sizes):
        prefix = x[:, :n]
        lr = theory.gd_step_size(prefix)
        w_hard = train_span_gd(prefix, hard_labels[:, :n], hard_steps, lr, desc=f"hard, n={n}")
        wrong = (x_test @ w_hard.T > 0) != teacher_test[:, None]
        hard[i] = wrong.to(DTYPE).mean(0).cpu().numpy()
    return DigitsResult(
        d=d,
        sizes=sizes,
        soft_risk=soft,
        hard_risk=hard,
        teacher_accuracy=teacher_accuracy,
        hard_steps=hard_steps,
        n_test=len(x_test),
        spans=spans,
    )


def _with_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


def check_digits(result: DigitsResult, claims: Claims) -> None:
    """Exact recovery for ``n >= d``; soft beats hard; soft is monotone."""
    spans = result.spans
    claims.at_least(
        "digits: training subsets that span the feature space (rank d), count",
        measured=int(spans.sum()),
        bound=1,
        why="the next claim is about these subsets; with none it would be vacuous",
    )
    claims.at_most(
        "digits, subsets of rank d: distilled student = teacher (max test disagreement)",
        measured=float(result.soft_risk[spans].max()),
        bound=0.0,
        why="optimisation bias: when the training inputs span the feature space the limit is w* "
        "itself; disagreement is counted exactly on the test split",
    )
    for i in (0, len(result.sizes) // 2):
        claims.ordered(
            f"digits, n={result.sizes[i]}: soft labels beat hard labels (mean transfer risk)",
            {"soft": result.soft_risk[i].mean(), "hard": result.hard_risk[i].mean()},
            order=["soft", "hard"],
            why="same nested subsets for both students",
        )
    claims.monotone(
        "digits: distilled student's risk does not rise along nested subsets",
        result.sizes,
        result.soft_risk,
        direction="decreasing",
        strict=False,
        confidence=result.confidence,
        why="paired one-sided t-tests across subsets, Bonferroni over steps",
    )


def plot_digits(result: DigitsResult):
    """Transfer risk on the test digits against ``n``."""
    fig, axes = figure(1, 1, width=5.6, height=4.0)
    ax = axes[0][0]
    floor = 0.5 / result.n_test
    plot_measured(ax, result.sizes, np.maximum(result.soft_risk, floor), "soft")
    plot_measured(ax, result.sizes, np.maximum(result.hard_risk, floor), "hard")
    ax.axvline(result.d, color="grey", ls=":", lw=1, label=f"n = d = {result.d}")
    _size_axis(ax, result.sizes)
    ax.set_yscale("log")
    ax.set(
        xlabel="training-set size $n$",
        ylabel=f"test disagreement with the teacher (0 drawn at {floor:.0e})",
        title="Digits 0-4 vs 5-9, linear teacher",
    )
    ax.legend(fontsize=8)
    return fig


EXPERIMENTS = [
    Experiment(
        "optimization_bias", run_optimization_bias, check_optimization_bias, plot_optimization_bias
    ),
    Experiment("deep_linear", run_deep_linear, check_deep_linear, plot_deep_linear),
    Experiment("minimisers", run_minimisers, check_minimisers, plot_minimisers),
    Experiment("data_geometry", run_data_geometry, check_data_geometry, plot_data_geometry),
    Experiment("monotonicity", run_monotonicity, check_monotonicity, plot_monotonicity),
    Experiment("digits", run_digits, check_digits, plot_digits),
]
