"""Chapter "Privileged information in the kernel regime" (Rahbar, Panahi, Bhattacharyya, Dubhashi
& Haghir Chehreghani, arXiv:2003.13438; CIKM 2022): a very wide two-layer student trained on a loss
that mixes the labels and a teacher's privileged information (PI).

Experiments
-----------
``dynamics``
    Wide students follow the closed-form kernel dynamics (within a computed tracking bound),
    and their outputs move from the labels to the teacher's PI as the mixing weight ``rho`` grows;
    training error against data and PI, measured vs predicted, for three student capacities
    (how many of the teacher's input coordinates the student sees).
``convergence``
    Iterations to a tolerance with and without PI, across widths: the predicted ordering (PI is
    learned faster when the teacher is expressible by the student), the dependence on how the
    target's energy spreads over the Gram spectrum, and the approach of finite-width students to
    the kernel prediction at rate ``m^{-1/2}``.
``generalization``
    scikit-learn's digits (binary: digit >= 5), a kernel teacher that saw the whole training
    split: test error of students trained with PI vs labels only, measured vs the kernel model's
    prediction, with clean and with noisy labels; the weights travel less with PI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..claims import Claims, fit_slope, paired_difference, t_halfwidth
from ..config import RunConfig, make_generator
from ..data import load_digits_split
from ..data.privileged_information import make_teacher_student_data, student_view
from ..models import TwoLayerReLU
from ..ntk import empirical_ntk, relu_ntk
from ..plots import PALETTE, ROLE_COLORS, figure, plot_measured, plot_predicted
from ..theory import privileged_information as theory
from . import Experiment, stored_run

CHAPTER = "privileged-information"
TITLE = "Privileged information in the kernel regime"
ORDER = 70

__all__ = [
    "CHAPTER",
    "TITLE",
    "ORDER",
    "EXPERIMENTS",
    "Trajectory",
    "train_wide_student",
    "run_dynamics",
    "check_dynamics",
    "plot_dynamics",
    "run_convergence",
    "check_convergence",
    "plot_convergence",
    "convergence_table",
    "run_generalization",
    "check_generalization",
    "plot_generalization",
    "summary_table",
]

#: Coverage of three normal standard errors, used for the t intervals of this chapter.
THREE_SIGMA = 0.9973


# -- the batched wide student -------------------------------------------------------------------


@dataclass
class Trajectory:
    """What :func:`train_wide_student` records (tensors on the CPU, float64).

    Attributes
    ----------
    outputs : Tensor, shape ``(steps + 1, R, n)``
        Training outputs ``u(t)`` before each step and after the last.
    initial_gram : Tensor, shape ``(R, n, n)``
        The empirical NTK Gram matrix at initialisation, ``H_m(0)``.
    kernel_steps : ndarray of int, shape ``(K,)``
        Steps at which the empirical NTK was measured again.
    kernel_drift : Tensor, shape ``(K, R)``
        ``|H_m(t) - H_m(0)|_op`` at those steps.
    step_gain : Tensor, shape ``(K, R)``
        ``lr lambda_max(H_m(t)) / n`` at those steps: the tracking bound needs it ``<= 2``.
    drift_terms : Tensor, shape ``(steps, R)``
        ``(lr/n) |(H_m(s) - H_m(0)) e_lin(s)|`` at every step ``s``, with ``e_lin`` the residual
        of the kernel model that uses ``H_m(0)`` (computed with Jacobian-vector products).
    remainders : Tensor, shape ``(steps, R)``
        ``|r(s)|``, ``r(s) = u(s+1) - u(s) - J(s) (W(s+1) - W(s))``: what the step did beyond its
        linearisation (neurons whose activation pattern flipped during the step), exactly.
    test_outputs : Tensor, shape ``(R, n_test)`` or None
        Outputs on the test inputs after the last step.
    distance : Tensor, shape ``(R,)``
        ``|W(T) - W(0)|_F``.
    """

    outputs: torch.Tensor
    initial_gram: torch.Tensor
    kernel_steps: np.ndarray
    kernel_drift: torch.Tensor
    step_gain: torch.Tensor
    drift_terms: torch.Tensor
    remainders: torch.Tensor
    test_outputs: torch.Tensor | None
    distance: torch.Tensor


def train_wide_student(
    model: TwoLayerReLU,
    x: torch.Tensor,
    target: torch.Tensor,
    lr: torch.Tensor,
    steps: int,
    kernel_every: int | None = None,
    x_test: torch.Tensor | None = None,
    desc: str = "wide students",
    progress: bool | None = None,
    chunk: int | None = None,
) -> Trajectory:
    """Full-batch gradient descent on ``1/(2n) |u - ytilde|^2`` (the mixed loss up to a constant)
    for every replica of a first-layer-trained :class:`~kdlib.models.TwoLayerReLU` at once, with
    what the kernel-tracking bound needs measured along the way.

    The gradient is written out (``dL/dw_r = (1/n) sum_i (u_i - ytilde_i) m^{-1/2} a_r
    1[<w_r, x_i> > 0] x_i``): two batched matrix products a step, no autograd graph. Three more
    a step give the terms of :func:`~kdlib.theory.privileged_information.tracking_bound`: the
    tangent kernel applied to the linearised model's residual, ``H_m(s) e_lin(s) =
    J(s) J(s)^T e_lin(s)``, and the step's exact remainder beyond its linearisation.

    Parameters
    ----------
    model : TwoLayerReLU
        ``out_features=1``, no bias, second layer fixed; ``hidden`` is updated in place.
    x : Tensor, shape ``(R, n, d)``
    target : Tensor, shape ``(R, n)``
        Mixed targets ``ytilde``.
    lr : Tensor, shape ``(R,)``
    steps : int
    kernel_every : int, optional
        Measure the empirical NTK every this many steps (and at the first and last); default
        ``steps // 5``.
    x_test : Tensor, shape ``(R, n_test, d)``, optional
        Test inputs: their outputs after the last step are recorded.
    desc, progress :
        The tqdm bar's label, and whether to show it (default: for runs of at least 2000 steps;
        the experiments show it at full scale, where a few hundred steps take minutes on a CPU).
    chunk : int, optional
        Replicas per pass of a step (default: from a memory budget, see ``_replica_chunk``);
        replicas are independent, so it changes only the order of float roundings.
    """
    if model.hidden_bias is not None or model.output.requires_grad or model.out_features != 1:
        raise ValueError("train_wide_student needs out_features=1, no bias, a fixed second layer")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int; got {steps!r}")
    weights = model.hidden.data
    replicas, width = model.replicas, model.width
    if x.dim() != 3 or x.shape[0] != replicas:
        raise ValueError(f"x must have shape ({replicas}, n, d); got {tuple(x.shape)}")
    signs = model.output[..., 0] / math.sqrt(width)  # (R, m)
    n = x.shape[-2]
    if target.shape != (replicas, n):
        raise ValueError(f"target must have shape ({replicas}, {n}); got {tuple(target.shape)}")
    if lr.shape != (replicas,):
        raise ValueError(f"lr must have shape ({replicas},); got {tuple(lr.shape)}")
    every = kernel_every or max(steps // 5, 1)
    kernel_steps = sorted(set(range(0, steps + 1, every)) | {steps})
    start = weights.clone()
    rates = lr.to(weights)[:, None, None]
    rate64 = lr.to(weights.device, torch.float64)[:, None]  # (R, 1)
    target64 = target.to(weights.device, torch.float64)
    outputs, drift, gain, first = [], [], [], {}
    drift_terms, remainders = [], []
    linear_step = None
    e_lin = torch.empty(replicas, n, device=weights.device, dtype=torch.float64)

    def measure_kernel() -> None:
        gram = empirical_ntk(model, x).double()
        first.setdefault("gram", gram)
        drift.append(_op_norm(gram - first["gram"]))
        gain.append(rate64[:, 0] * torch.linalg.eigvalsh(gram)[..., -1] / n)

    show = progress if progress is not None else steps >= 2000
    if chunk is None:
        chunk = _replica_chunk(n * width, weights.device)
    elif isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be a positive int; got {chunk!r}")
    pre_buf = torch.empty(min(chunk, replicas), n, width).to(weights)
    mask_buf = torch.empty_like(pre_buf)
    u = torch.empty(replicas, n).to(weights)
    kernel_v = torch.empty(replicas, n, 2, device=weights.device, dtype=torch.float64)
    for step in tqdm(range(steps + 1), desc=desc, leave=False, disable=not show):
        if step in kernel_steps:
            measure_kernel()
        for start_r in range(0, replicas, chunk):
            part = slice(start_r, start_r + chunk)
            count = min(chunk, replicas - start_r)
            pre = torch.matmul(x[part], weights[part].transpose(1, 2), out=pre_buf[:count])
            mask = torch.gt(pre, 0, out=mask_buf[:count])  # 1[<w_r, x_i> > 0], (c, n, m)
            u[part] = torch.matmul(pre.relu_(), signs[part, :, None])[..., 0]
            if step == 0:  # the linearised model starts where the network does
                e_lin[part] = u[part].double() - target64[part]
            if step == steps:
                continue
            # J^T v and H_m(t) v = J J^T v for v = e_lin (linearised residual) and u - ytilde
            # at once; the output weights a_r m^{-1/2} scale J's columns, so they multiply the
            # m-sized factors rather than the (n, m) activation pattern
            vectors = torch.stack([e_lin[part].to(u), u[part] - target[part]], -1)
            pulled = _vjp(x[part], mask, vectors) * signs[part, :, None, None]  # (c, m, 2, d)
            kernel_v[part] = _jvp(x[part], mask, pulled * signs[part, :, None, None]).double()
            weights[part].sub_(rates[part] / n * pulled[:, :, 1])
        outputs.append(u.clone())
        if linear_step is not None:
            remainders.append((u - linear_step).double().norm(dim=-1))
        if step == steps:
            break
        initial_e = torch.matmul(first["gram"], e_lin[..., None])[..., 0]
        drift_terms.append(rate64[:, 0] / n * (kernel_v[..., 0] - initial_e).norm(dim=-1))
        e_lin = e_lin - rate64 / n * initial_e
        linear_step = u - (rate64 / n * kernel_v[..., 1]).to(u)  # u + J (W(t+1) - W(t))
    test_outputs = model(x_test)[..., 0].detach() if x_test is not None else None
    return Trajectory(
        outputs=torch.stack(outputs).double().cpu(),
        initial_gram=first["gram"].cpu(),
        kernel_steps=np.asarray(kernel_steps),
        kernel_drift=torch.stack(drift).cpu(),
        step_gain=torch.stack(gain).cpu(),
        drift_terms=torch.stack(drift_terms).cpu(),
        remainders=torch.stack(remainders).cpu(),
        test_outputs=None if test_outputs is None else test_outputs.double().cpu(),
        distance=(weights - start).flatten(1).norm(dim=1).double().cpu(),
    )


def kernel_tracking_bound(
    traj: Trajectory, target: torch.Tensor, lr: torch.Tensor, predicted: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A computed bound on ``|u_net(t) - u_kernel(t)|`` for every replica and step.

    Two parts (:func:`~kdlib.theory.privileged_information.tracking_bound`): (i) the finite-width
    kernel ``H_m(0)`` differs from ``H``, which changes the *linearised* network's outputs
    ``u_lin(t)`` (closed form with ``H_m(0)``) by exactly ``|u_lin(t) - u_kernel(t)|``; (ii) the
    network leaves its linearisation only through the drift of its kernel along the linearised
    residual and through each step's remainder, both measured along training. Valid while
    ``lr lambda_max(H_m(t)) / n <= 2`` (``traj.step_gain``).

    Parameters
    ----------
    traj : Trajectory
    target : Tensor, shape ``(R, n)``
    lr : Tensor, shape ``(R,)``
    predicted : Tensor, shape ``(T + 1, R, n)``
        The infinite-width kernel model's outputs.

    Returns
    -------
    bound : Tensor, shape ``(T + 1, R)``
    linearised : Tensor, shape ``(T + 1, R, n)``
    """
    steps = np.arange(traj.outputs.shape[0])
    linearised = torch.stack(
        [
            theory.kernel_outputs(
                traj.initial_gram[j], target[j], steps, float(lr[j]), initial=traj.outputs[0, j]
            )
            for j in range(target.shape[0])
        ],
        dim=1,
    )
    gap = (linearised - predicted.double()).norm(dim=-1)
    bound = theory.tracking_bound(gap, traj.drift_terms, traj.remainders)
    return bound, linearised


# -- 1. kernel dynamics and the interpolation between data and PI -------------------------------


@dataclass
class DynamicsResult:
    """Training errors along training, measured ``(T+1, V, P, S)`` and predicted ``(T+1, V, P)``
    for capacities ``visible`` (V), mixing weights ``rhos`` (P) and student seeds (S)."""

    steps: np.ndarray
    visible: np.ndarray
    dim: int
    rhos: np.ndarray
    width: int
    n_train: int
    gap: float
    step_gain: float
    asymptotic_data: np.ndarray
    err_data_measured: np.ndarray
    err_data_predicted: np.ndarray
    err_teacher_measured: np.ndarray
    err_teacher_predicted: np.ndarray
    deviation: np.ndarray
    bound: np.ndarray
    predicted_residual: np.ndarray


@stored_run
def run_dynamics(config: RunConfig) -> DynamicsResult:
    """Train ``V x P x S`` wide students at once on the teacher-student data and compute the
    kernel prediction for each."""
    n = config.pick(64, 256)
    dim = 8
    visible = np.array([4, 6, 8])
    rhos = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    seeds = config.pick(2, 4)
    width = config.pick(2048, 32768)
    steps = config.pick(100, 400)
    data = make_teacher_student_data(n, 16, dim, teacher_width=8, seed=config.seed)
    y, phi = data.y_train, data.teacher_train
    views = [student_view(data.x_train, int(v)) for v in visible]
    grams = [theory.gram_matrix(view) for view in views]
    rates = [theory.stable_learning_rate(g) for g in grams]
    targets = theory.mixed_target(y, phi, torch.as_tensor(rhos))  # (P, n)
    shape = (len(visible), len(rhos), seeds)
    replicas = int(np.prod(shape))

    def per_capacity(items: list[torch.Tensor]) -> torch.Tensor:  # (V, ...) -> (R, ...)
        stacked = torch.stack(items)
        expanded = stacked[:, None, None].expand(*shape, *stacked.shape[1:])
        return expanded.reshape(replicas, *stacked.shape[1:])

    x = per_capacity(views)
    lr_r = per_capacity([torch.tensor(r, dtype=torch.float64) for r in rates])
    target_r = targets[None, :, None].expand(*shape, n).reshape(replicas, n)
    dev, dtype = config.device, torch.float32
    model = TwoLayerReLU(
        replicas, dim, width, symmetric_init=True, seed=config.seed + 1, device=dev, dtype=dtype
    )
    traj = train_wide_student(
        model,
        x.to(dev, dtype),
        target_r.to(dev, dtype),
        lr_r.to(dev, dtype),
        steps,
        desc="dynamics",
        progress=config.is_full,
    )
    all_steps = np.arange(steps + 1)
    predicted = torch.stack(
        [
            theory.kernel_outputs(g, targets, all_steps, r)
            for g, r in zip(grams, rates, strict=True)
        ],
        dim=1,
    )  # (T+1, V, P, n)
    pred_norms = (predicted - targets).norm(dim=-1)  # (T+1, V, P)
    measured = traj.outputs.reshape(steps + 1, *shape, n)
    pred_r = predicted[:, :, :, None].expand_as(measured)
    deviation = (measured - pred_r).norm(dim=-1)
    bound, _ = kernel_tracking_bound(traj, target_r, lr_r, pred_r.reshape(steps + 1, replicas, n))
    bound = bound.reshape(steps + 1, *shape)
    return DynamicsResult(
        steps=all_steps,
        visible=visible,
        dim=dim,
        rhos=rhos,
        width=width,
        n_train=n,
        gap=float(theory.training_error(phi, y)),
        step_gain=float(traj.step_gain.max()),
        asymptotic_data=theory.asymptotic_training_error(y, phi, torch.as_tensor(rhos))[0].numpy(),
        err_data_measured=theory.training_error(measured, y).numpy(),
        err_data_predicted=theory.training_error(predicted, y).numpy(),
        err_teacher_measured=theory.training_error(measured, phi).numpy(),
        err_teacher_predicted=theory.training_error(predicted, phi).numpy(),
        deviation=deviation.numpy(),
        bound=bound.numpy(),
        predicted_residual=pred_norms.numpy(),
    )


def check_dynamics(result: DynamicsResult, claims: Claims) -> None:
    """Kernel tracking, measured vs predicted training errors, and the interpolation."""
    n = result.n_train
    claims.at_most(
        "hypothesis of the tracking bound: lr lambda_max(H_m(t)) / n <= 2 (worst measured step)",
        measured=result.step_gain,
        bound=2.0,
        why="|I - lr H_m(t)/n|_op <= 1 needs it; measured on the network's tangent kernel at the "
        "first, last and every (T/5)-th step",
    )
    ratio = result.deviation[1:] / result.bound[1:]
    claims.at_most(
        "wide students stay within the kernel-tracking bound B(t) (worst deviation / bound)",
        measured=float(ratio.max()),
        bound=1.0,
        why="computed bound: exact finite-width kernel effect plus a discrete Duhamel sum of the "
        "measured kernel drift along the linearised residual and the steps' exact remainders; "
        "1 = the bound itself, no slack",
    )
    full = int(np.argmax(result.visible))
    predicted = np.sqrt(result.err_data_predicted[-1, full])[:, None]  # (P, 1)
    measured = np.sqrt(result.err_data_measured[-1, full])  # (P, S)
    allowed = result.bound[-1, full] / math.sqrt(n)  # (P, S)
    worst = np.unravel_index(np.argmax(np.abs(measured - predicted) / allowed), measured.shape)
    claims.at_most(
        "full capacity (a corollary of the tracking bound): RMS training error vs labels after "
        "T steps, |network - kernel model| / (B(T)/sqrt(n)), worst rho and seed",
        measured=float((np.abs(measured - predicted) / allowed).max()),
        bound=1.0,
        why="|RMS_net - RMS_kernel| <= |u_net - u_kernel| / sqrt(n) <= B(T) / sqrt(n) for each "
        f"replica (triangle inequality); worst: rho={result.rhos[worst[0]]:g}, kernel "
        f"{predicted[worst[0], 0]:.4f}, network {measured[worst]:.4f}, allowed "
        f"{allowed[worst]:.4f}",
    )
    data_curve = result.err_data_measured[-1, full].mean(-1)
    teacher_curve = result.err_teacher_measured[-1, full].mean(-1)
    claims.monotone(
        "full-capacity student: error against the labels grows with rho",
        result.rhos,
        data_curve,
        direction="increasing",
        strict=True,
        why="exact comparison of seed means; kernel prediction rho^2 |phi - y|^2 / n",
    )
    claims.monotone(
        "full-capacity student: error against the teacher's PI falls with rho",
        result.rhos,
        teacher_curve,
        direction="decreasing",
        strict=True,
        why="exact comparison of seed means; kernel prediction (1 - rho)^2 |phi - y|^2 / n",
    )
    asymptote = np.sqrt(result.asymptotic_data)[:, None]  # (P, 1)
    slack = (result.predicted_residual[-1, full][:, None] + result.bound[-1, full]) / math.sqrt(n)
    off = np.abs(measured - asymptote) / slack
    worst = np.unravel_index(np.argmax(off), off.shape)
    claims.at_most(
        "converged interpolation (a corollary of the tracking bound and the closed form): RMS "
        "error vs labels = rho |phi - y| / sqrt(n), |measured - predicted| / allowed, worst rho "
        "and seed",
        measured=float(off.max()),
        bound=1.0,
        why="allowed = (kernel residual left at step T, |u*(T) - ytilde|, computed + B(T)) / "
        f"sqrt(n) per replica; worst: rho={result.rhos[worst[0]]:g}, predicted "
        f"{asymptote[worst[0], 0]:.4f}, measured {measured[worst]:.4f}, allowed {slack[worst]:.4f}",
    )
    # capacity: the predicted ordering of the error against the PI at rho = 1 across capacities
    pred = result.err_teacher_predicted[-1, :, -1]
    meas = result.err_teacher_measured[-1, :, -1].mean(-1)
    order = [f"visible={int(result.visible[i])}" for i in np.argsort(pred)]
    values = {f"visible={int(v)}": float(m) for v, m in zip(result.visible, meas, strict=True)}
    gaps = np.diff(np.sort(pred))
    claims.ordered(
        "rho = 1: error against the PI after T steps, ordered as the kernel predicts",
        values,
        order=order,
        why=f"order computed from the kernel prediction (predicted gaps {np.round(gaps, 4)}); "
        "measured seed means",
    )


def plot_dynamics(result: DynamicsResult):
    """Training error against the labels (left) and against the PI (middle) after T steps, vs
    rho, for three capacities; right: distance to the kernel model and its bound along training."""
    fig, axes = figure(3, 1, width=4.4, height=3.9)
    colors = [PALETTE["vermillion"], PALETTE["orange"], PALETTE["blue"]]
    panels = (
        (result.err_data_measured, result.err_data_predicted, "labels y"),
        (result.err_teacher_measured, result.err_teacher_predicted, r"teacher's PI $\phi$"),
    )
    for ax, (measured, predicted, against) in zip(axes[0][:2], panels, strict=True):
        for i, v in enumerate(result.visible):
            label = f"sees {int(v)}/{result.dim}"
            plot_measured(ax, result.rhos, measured[-1, i], label, color=colors[i])
            plot_predicted(ax, result.rhos, predicted[-1, i], label="", color=colors[i])
        ax.set(
            xlabel=r"mixing weight $\rho$",
            ylabel=f"training MSE vs {against}",
            title=f"after T={result.steps[-1]} steps; dashed: kernel",
        )
    axes[0][0].plot(
        result.rhos, result.asymptotic_data, color="k", lw=1, label=r"$\rho^2|\phi-y|^2/n$"
    )
    axes[0][0].legend(fontsize=8)
    ax = axes[0][2]
    seeds = result.deviation.shape[-1]
    full = int(np.argmax(result.visible))
    for jj, color in ((0, ROLE_COLORS["hard"]), (len(result.rhos) - 1, ROLE_COLORS["kd"])):
        rho = result.rhos[jj]
        ax.plot(
            result.steps,
            result.deviation[:, full, jj].mean(-1),
            color=color,
            label=rf"$|u_{{net}} - u_{{kernel}}|$, $\rho$={rho:g}",
        )
        ax.plot(result.steps, result.bound[:, full, jj].mean(-1), color=color, ls="--", lw=1)
    ax.set(
        xlabel="gradient step t",
        ylabel=f"distance (mean of {seeds} seeds)",
        title=f"full capacity, m={result.width}; dashed: bound",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# -- 2. convergence: iterations to tolerance, and the approach to the kernel -------------------


@dataclass
class ConvergenceResult:
    """Iterations to tolerance and distances to the kernel model.

    Axes: widths (W), capacities ``visible`` (V), targets (2: labels, PI), data draws (S).
    """

    widths: np.ndarray
    visible: np.ndarray
    dim: int
    tol: float
    n_train: int
    steps: int
    iters_measured: np.ndarray  # (W, V, 2, S)
    iters_predicted: np.ndarray  # (V, 2, S)
    iters_low: np.ndarray  # (W, V, 2, S)
    iters_high: np.ndarray  # (W, V, 2, S)
    spectral_bound: np.ndarray  # (V, 2, S)
    distance: np.ndarray  # (W, V, 2, S): max_t |u_net - u_kernel| / |ytilde|
    eigenvalues: np.ndarray  # (V, S, n) descending, divided by n
    energy: np.ndarray  # (V, 2, S, n) target energy along the eigenvectors
    step_gain: float  # max over widths, replicas and measured steps of lr lambda_max(H_m(t)) / n


@stored_run
def run_convergence(config: RunConfig) -> ConvergenceResult:
    """For each width, train students on the labels (rho=0) and on the PI (rho=1), for two
    capacities and several data draws, all as replicas; record when each reaches the tolerance."""
    n = config.pick(64, 256)
    dim = 8
    visible = np.array([6, 8])
    draws = 6  # 12 full-capacity replicas per width: the slope's t interval needs the samples
    widths = np.array(config.pick([256, 1024, 4096], [1024, 4096, 16384, 65536]))
    tol = 0.05
    grams, rates, targets, views = [], [], [], []
    for v in visible:
        g_row, r_row, t_row, x_row = [], [], [], []
        for s in range(draws):
            data = make_teacher_student_data(n, 16, dim, teacher_width=8, seed=config.seed + s)
            view = student_view(data.x_train, int(v))
            gram = theory.gram_matrix(view)
            g_row.append(gram)
            r_row.append(theory.stable_learning_rate(gram))
            t_row.append(torch.stack([data.y_train, data.teacher_train]))
            x_row.append(view)
        grams.append(g_row)
        rates.append(r_row)
        targets.append(t_row)
        views.append(x_row)
    shape = (len(visible), 2, draws)
    replicas = int(np.prod(shape))
    index = [(i, k, s) for i in range(len(visible)) for k in range(2) for s in range(draws)]
    x_r = torch.stack([views[i][s] for i, _, s in index])
    lr_r = torch.tensor([rates[i][s] for i, _, s in index], dtype=torch.float64)
    target_r = torch.stack([targets[i][s][k] for i, k, s in index])
    predicted_iters = torch.stack(
        [
            theory.iterations_to_tolerance(grams[i][s], targets[i][s][k], rates[i][s], tol)
            for i, k, s in index
        ]
    ).reshape(shape)
    steps = int(2 * predicted_iters.max()) + 5  # finite-width students can be slower
    all_steps = np.arange(steps + 1)
    spectra = [[theory.spectrum(grams[i][s]) for s in range(draws)] for i in range(len(visible))]
    energy = torch.stack([(targets[i][s][k] @ spectra[i][s][1]) ** 2 for i, k, s in index])
    spectral_bound = torch.stack(
        [
            theory.iterations_upper_bound(spectra[i][s][0], energy[j], rates[i][s], n, tol)
            for j, (i, _, s) in enumerate(index)
        ]
    ).reshape(shape)
    predicted_outputs = torch.stack(
        [
            theory.kernel_outputs(grams[i][s], targets[i][s][k], all_steps, rates[i][s])
            for i, k, s in index
        ],
        dim=1,
    )  # (T+1, R, n)
    predicted_norms = (predicted_outputs - target_r[None]).norm(dim=-1)  # (T+1, R)
    threshold = math.sqrt(tol) * target_r.norm(dim=-1)  # |e(0)| = |ytilde| (u(0) = 0)
    measured, low, high, distance, gains = [], [], [], [], []
    dev, dtype = config.device, torch.float32
    for width in tqdm(widths, desc="widths", leave=False):
        model = TwoLayerReLU(
            replicas,
            dim,
            int(width),
            symmetric_init=True,
            seed=config.seed + 7 + int(width),
            device=dev,
            dtype=dtype,
        )
        traj = train_wide_student(
            model,
            x_r.to(dev, dtype),
            target_r.to(dev, dtype),
            lr_r.to(dev, dtype),
            steps,
            desc=f"width {width}",
            progress=config.is_full,
        )
        norms = (traj.outputs - target_r[None]).norm(dim=-1)  # (T+1, R)
        reached = norms <= threshold[None]
        first = torch.where(reached.any(0), reached.float().argmax(0), steps + 1)
        measured.append(first)
        bound, _ = kernel_tracking_bound(traj, target_r, lr_r, predicted_outputs)
        lows, highs = [], []
        for j in range(replicas):
            lo, hi = theory.crossing_interval(
                predicted_norms[:, j], bound[:, j], float(threshold[j])
            )
            lows.append(lo)
            highs.append(hi)
        low.append(torch.tensor(lows))
        high.append(torch.tensor(highs))
        gap = (traj.outputs - predicted_outputs).norm(dim=-1).max(0).values
        distance.append(gap / target_r.norm(dim=-1))
        gains.append(float(traj.step_gain.max()))
    eig = torch.stack(
        [torch.stack([spectra[i][s][0] for s in range(draws)]) for i in range(len(visible))]
    )
    return ConvergenceResult(
        widths=widths,
        visible=visible,
        dim=dim,
        tol=tol,
        n_train=n,
        steps=steps,
        iters_measured=torch.stack(measured).reshape(len(widths), *shape).numpy(),
        iters_predicted=predicted_iters.numpy(),
        iters_low=torch.stack(low).reshape(len(widths), *shape).numpy(),
        iters_high=torch.stack(high).reshape(len(widths), *shape).numpy(),
        spectral_bound=spectral_bound.numpy(),
        distance=torch.stack(distance).reshape(len(widths), *shape).numpy(),
        eigenvalues=(eig / n).numpy(),
        energy=energy.reshape(*shape, n).numpy(),
        step_gain=max(gains),
    )


def check_convergence(result: ConvergenceResult, claims: Claims) -> None:
    """Orderings, intervals, spectral bound and the width rate."""
    full = int(np.argmax(result.visible))
    low_cap = int(np.argmin(result.visible))
    wide = -1
    pred = result.iters_predicted
    meas = result.iters_measured[wide]
    claims.ordered(
        "kernel prediction, full capacity: iterations with PI < with labels (mean over draws)",
        {"PI": float(pred[full, 1].mean()), "labels": float(pred[full, 0].mean())},
        order=["PI", "labels"],
        why="closed form of the kernel dynamics (no noise)",
    )
    claims.ordered(
        f"widest network (m={int(result.widths[wide])}), full capacity: "
        "iterations with PI < with labels",
        {"PI": float(meas[full, 1].mean()), "labels": float(meas[full, 0].mean())},
        order=["PI", "labels"],
        why="measured means over data draws; the kernel predicts this order",
    )
    ratios = result.iters_measured[:, :, 1].mean(-1) / result.iters_measured[:, :, 0].mean(-1)
    w_worst, v_worst = np.unravel_index(np.argmax(ratios), ratios.shape)
    predicted_ratio = pred[:, 1].mean(-1) / pred[:, 0].mean(-1)
    claims.at_most(
        "every width and capacity: iterations with PI / with labels (worst, measured means)",
        measured=float(ratios.max()),
        bound=1.0,
        why="the kernel predicts a ratio below 1 at every capacity ("
        + ", ".join(
            f"sees {int(v)}: {r:.2f}" for v, r in zip(result.visible, predicted_ratio, strict=True)
        )
        + f"); worst measured at m={int(result.widths[w_worst])}, "
        f"sees {int(result.visible[v_worst])}",
    )
    gap = np.abs(result.iters_measured - pred[None]).mean(axis=(1, 2, 3))  # (W,)
    claims.monotone(
        "finite-width students approach the kernel's iterations as m grows: "
        "mean |measured - predicted| iterations",
        result.widths,
        gap,
        direction="decreasing",
        strict=True,
        why="the kernel-tracking bound B(t) is O(m^{-1/2}); exact comparison of the means over "
        "capacities, targets and draws at each width (" + ", ".join(f"{g:.1f}" for g in gap) + ")",
    )
    speedup_pred = pred[:, 0].mean(-1) / pred[:, 1].mean(-1)
    speedup_meas = meas[:, 0].mean(-1) / meas[:, 1].mean(-1)
    key_hi, key_lo = f"sees {result.visible[full]}", f"sees {result.visible[low_cap]}"
    order = [key_lo, key_hi] if speedup_pred[low_cap] < speedup_pred[full] else [key_hi, key_lo]
    claims.ordered(
        "speed-up from PI (iterations labels / PI) ordered across capacities as predicted",
        {key_hi: float(speedup_meas[full]), key_lo: float(speedup_meas[low_cap])},
        order=order,
        why=f"order from the kernel prediction (predicted speed-ups {key_lo}: "
        f"{speedup_pred[low_cap]:.2f}, {key_hi}: {speedup_pred[full]:.2f})",
    )
    claims.at_most(
        "hypothesis of the tracking bound: lr lambda_max(H_m(t)) / n <= 2 (worst width, "
        "replica and measured step)",
        measured=result.step_gain,
        bound=2.0,
        why="|I - lr H_m(t)/n|_op <= 1 needs it; measured on the networks' tangent kernels",
    )
    violation = _interval_violation(
        result.iters_measured, result.iters_low, result.iters_high, result.steps
    )
    claims.at_most(
        "iterations to tolerance lie in the interval implied by the kernel-tracking bound "
        "(worst violation in steps, every width and replica)",
        measured=float(violation.max()),
        bound=0.0,
        why="interval = where |u*(t) - ytilde| -+ B(t) crosses the tolerance (no upper end when "
        "the upper curve never crosses within the budget); 0 = on an edge",
    )
    claims.at_most(
        "kernel model: exact iterations to tolerance never exceed the spectral bound min_k t_k "
        "(worst excess over capacities, targets and draws)",
        measured=float((pred - result.spectral_bound).max()),
        bound=0.0,
        why="the inequality of the iterations theorem, evaluated on each instance (the exact "
        "count by bisection on the closed form, the bound from the spectrum and the energies)",
    )
    per_replica = result.distance[:, full].reshape(len(result.widths), -1)
    slopes = np.array([fit_slope(result.widths, col) for col in per_replica.T])
    # Student's t, not 3 normal standard errors: with a dozen replicas the standard error is
    # itself uncertain, and the normal quantile would fail a correct run at one seed in ~30.
    half = t_halfwidth(slopes, confidence=THREE_SIGMA, sided="two")
    tol = max(half, 0.05)
    claims.slope(
        "full capacity: distance to the kernel model shrinks like m^{-1/2}",
        result.widths,
        per_replica.mean(-1),
        predicted=-0.5,
        tol=float(tol),
        why=f"two-sided 99.73% t interval of the mean of the {len(slopes)} per-replica slopes "
        f"({half:.3f}), floor 0.05 for the O(1/m) next-order term over the width range",
    )


def convergence_table(result: ConvergenceResult) -> str:
    """Iterations to tolerance, predicted (kernel) vs measured (mean over data draws at each
    width), as a Markdown table."""
    names = ("labels", "PI")
    header = "| student sees | target | kernel | " + " | ".join(
        f"m={int(w)}" for w in result.widths
    )
    lines = [header + " |", "|" + "---|" * (3 + len(result.widths))]
    for i, visible in enumerate(result.visible):
        for k, name in enumerate(names):
            measured = " | ".join(
                f"{result.iters_measured[w, i, k].mean():.1f}" for w in range(len(result.widths))
            )
            lines.append(
                f"| {int(visible)}/{result.dim} | {name} | "
                f"{result.iters_predicted[i, k].mean():.1f} | {measured} |"
            )
    return "\n".join(lines)


def plot_convergence(result: ConvergenceResult):
    """Left: iterations to tolerance vs width, measured and predicted. Middle: where the targets'
    energy sits in the spectrum. Right: distance to the kernel model vs width."""
    fig, axes = figure(3, 1, width=4.4, height=3.9)
    ax = axes[0][0]
    styles = {(1, 1): ("PI", ROLE_COLORS["kd"]), (1, 0): ("labels", ROLE_COLORS["hard"])}
    full = int(np.argmax(result.visible))
    for k in (0, 1):
        name, color = styles[(1, k)]
        plot_measured(ax, result.widths, result.iters_measured[:, full, k], name, color=color)
        ax.axhline(result.iters_predicted[full, k].mean(), color=color, ls="--", lw=1)
    low_cap = int(np.argmin(result.visible))
    for k in (0, 1):
        name, color = styles[(1, k)]
        ax.plot(
            result.widths,
            result.iters_measured[:, low_cap, k].mean(-1),
            color=color,
            ls=":",
            marker="^",
            label=f"{name}, sees {result.visible[low_cap]}/{result.dim}",
        )
        ax.axhline(result.iters_predicted[low_cap, k].mean(), color=color, ls="-.", lw=0.8)
    ax.set(
        xscale="log",
        xlabel="student width m",
        ylabel=f"iterations to {result.tol:.0%} residual",
        title="dashed: kernel prediction",
    )
    _width_ticks(ax, result.widths)
    ax.legend(fontsize=7)
    ax = axes[0][1]
    for k in (0, 1):
        name, color = styles[(1, k)]
        frac = result.energy[full, k] / result.energy[full, k].sum(-1, keepdims=True)
        ax.plot(
            np.arange(1, frac.shape[-1] + 1),
            np.cumsum(frac, -1).mean(0),
            color=color,
            label=f"{name} (sees all)",
        )
        frac = result.energy[low_cap, k] / result.energy[low_cap, k].sum(-1, keepdims=True)
        ax.plot(
            np.arange(1, frac.shape[-1] + 1),
            np.cumsum(frac, -1).mean(0),
            color=color,
            ls=":",
            label=f"{name} (sees {result.visible[low_cap]})",
        )
    ax.set(
        xscale="log",
        xlabel="k (eigenvalues of H, descending)",
        ylabel="target energy in the top k",
        title="alignment with the spectrum",
    )
    ax.legend(fontsize=7)
    ax = axes[0][2]
    per_replica = result.distance.reshape(len(result.widths), -1)
    plot_measured(
        ax, result.widths, per_replica, "max_t |u_net - u_ker| / |y~|", color=PALETTE["blue"]
    )
    ref = per_replica.mean(-1)[0] * (result.widths / result.widths[0]) ** -0.5
    plot_predicted(ax, result.widths, ref, label=r"slope $-1/2$")
    ax.set(xscale="log", yscale="log", xlabel="student width m", ylabel="relative distance")
    _width_ticks(ax, result.widths)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# -- 3. generalisation on digits ----------------------------------------------------------------


@dataclass
class GeneralizationResult:
    """Digits (binary: digit >= 5); axes: label-noise levels (N), rhos (P), seeds (S)."""

    rhos: np.ndarray
    noise: np.ndarray
    n_train: int
    n_test: int
    n_teacher: int
    width: int
    steps: int
    teacher_test_error: float
    test_error_measured: np.ndarray  # 0-1 error, (N, P, S)
    test_error_predicted: np.ndarray
    test_mse_measured: np.ndarray
    test_mse_predicted: np.ndarray
    tracking_ratio: np.ndarray  # max_t |u_net - u_kernel| / bound on the training set, (N, P, S)
    step_gain: float  # max over replicas and measured steps of lr lambda_max(H_m(t)) / n
    distance_measured: np.ndarray  # |W(T) - W(0)|_F
    distance_predicted: np.ndarray
    capacity_term: np.ndarray  # sqrt(2 ytilde^T H^{-1} ytilde / n)
    #: ``(N, P, S, n_test)``: which test digits each network (kernel model) classifies correctly,
    #: for paired comparisons of two rhos on the same test points
    test_correct_measured: np.ndarray | None = None
    test_correct_predicted: np.ndarray | None = None


@stored_run
def run_generalization(config: RunConfig) -> GeneralizationResult:
    """Digits: a kernel teacher fitted to the whole clean training split supplies the PI on a
    small student subset whose labels may be noisy; one student per (noise, rho, seed)."""
    n = config.pick(96, 512)
    width = config.pick(512, 32768)
    steps = config.pick(100, 1000)
    seeds = config.pick(2, 5)
    rhos = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    noise = np.array([0.0, 0.2])
    split = load_digits_split(0.3, seed=config.seed, dtype=torch.float64)
    x_pool, x_test = _unit_rows(split.x_train.double()), _unit_rows(split.x_test.double())
    y_pool = torch.where(split.y_train >= 5, 1.0, -1.0).double()
    y_test = torch.where(split.y_test >= 5, 1.0, -1.0).double()
    pool_gram = relu_ntk(x_pool)
    alpha = torch.linalg.solve(
        pool_gram + 0.1 * torch.eye(len(x_pool), dtype=torch.float64), y_pool
    )
    teacher_pool, teacher_test = pool_gram @ alpha, relu_ntk(x_test, x_pool) @ alpha
    gen = make_generator(config.seed + 11)
    shape = (len(noise), len(rhos), seeds)
    draws = []  # (indices, labels) per (noise, seed), shared by every rho
    for level in noise:
        row = []
        for _ in range(seeds):
            idx = torch.randperm(len(x_pool), generator=gen)[:n]
            flips = torch.rand(n, generator=gen, dtype=torch.float64) < level
            row.append((idx, torch.where(flips, -y_pool[idx], y_pool[idx])))
        draws.append(row)
    # one Gram matrix per (noise, seed) draw; the rhos only change the target
    keys = [(a, s) for a in range(len(noise)) for s in range(seeds)]
    xs = {key: x_pool[draws[key[0]][key[1]][0]] for key in keys}
    grams = {key: theory.gram_matrix(xs[key]) for key in keys}
    crosses = {key: relu_ntk(x_test, xs[key]) for key in keys}
    lrs = {key: theory.stable_learning_rate(grams[key]) for key in keys}
    targets = {
        (a, s): theory.mixed_target(
            draws[a][s][1], teacher_pool[draws[a][s][0]], torch.as_tensor(rhos)
        )
        for a, s in keys
    }  # (P, n) each
    index = [(a, p, s) for a in range(len(noise)) for p in range(len(rhos)) for s in range(seeds)]
    replicas, dim = len(index), x_pool.shape[1]
    target_r = torch.stack([targets[(a, s)][p] for a, p, s in index])
    lr_r = torch.tensor([lrs[(a, s)] for a, _, s in index], dtype=torch.float64)
    dev, dtype = config.device, torch.float32
    model = TwoLayerReLU(
        replicas, dim, width, symmetric_init=True, seed=config.seed + 3, device=dev, dtype=dtype
    )
    traj = train_wide_student(
        model,
        torch.stack([xs[(a, s)] for a, _, s in index]).to(dev, dtype),
        target_r.to(dev, dtype),
        lr_r.to(dev, dtype),
        steps,
        x_test=x_test.to(dev, dtype).expand(replicas, *x_test.shape),
        desc="digits",
        progress=config.is_full,
    )
    all_steps = np.arange(steps + 1)

    def predict(fn, *args) -> dict:
        return {key: fn(grams[key], targets[key], *args, lrs[key]) for key in keys}

    def gather(table: dict, step_axis: bool) -> torch.Tensor:
        if step_axis:  # (T, P, ...) per key -> (T, R, ...)
            return torch.stack([table[(a, s)][:, p] for a, p, s in index], dim=1)
        return torch.stack([table[(a, s)][p] for a, p, s in index])

    pred_train = gather(predict(theory.kernel_outputs, all_steps), True)  # (T+1, R, n)
    bound, _ = kernel_tracking_bound(traj, target_r, lr_r, pred_train)
    ratio = ((traj.outputs - pred_train).norm(dim=-1)[1:] / bound[1:]).max(0).values
    test_table = {
        key: theory.kernel_test_outputs(crosses[key], grams[key], targets[key], [steps], lrs[key])[
            0
        ]
        for key in keys
    }
    pred_test = gather(test_table, False)
    dist_pred = gather(
        {k: v[0] for k, v in predict(theory.distance_from_init, [steps]).items()}, False
    )
    capacity = gather(
        {key: theory.generalization_bound(grams[key], targets[key]) for key in keys}, False
    )

    def zero_one(out: torch.Tensor) -> np.ndarray:
        return (torch.sign(out) != y_test).double().mean(-1).reshape(shape).numpy()

    def correct(out: torch.Tensor) -> np.ndarray:
        return (torch.sign(out) == y_test).cpu().numpy().reshape(*shape, -1)

    def mse(out: torch.Tensor) -> np.ndarray:
        return ((out - y_test) ** 2).mean(-1).reshape(shape).numpy()

    return GeneralizationResult(
        rhos=rhos,
        noise=noise,
        n_train=n,
        n_test=len(x_test),
        n_teacher=len(x_pool),
        width=width,
        steps=steps,
        teacher_test_error=float((torch.sign(teacher_test) != y_test).double().mean()),
        test_error_measured=zero_one(traj.test_outputs),
        test_error_predicted=zero_one(pred_test),
        test_mse_measured=mse(traj.test_outputs),
        test_mse_predicted=mse(pred_test),
        tracking_ratio=ratio.reshape(shape).numpy(),
        step_gain=float(traj.step_gain.max()),
        distance_measured=traj.distance.reshape(shape).numpy(),
        distance_predicted=dist_pred.reshape(shape).numpy(),
        capacity_term=capacity.reshape(shape).numpy(),
        test_correct_measured=correct(traj.test_outputs),
        test_correct_predicted=correct(pred_test),
    )


def _paired_error_gap(correct: np.ndarray) -> tuple[float, float]:
    """Test error with PI (the last rho) minus with labels only (the first), over seeds and test
    points, and three paired standard errors of it (:func:`kdlib.claims.paired_difference`), from
    ``correct`` of shape ``(P, S, n_test)``."""
    return paired_difference(correct[0], correct[-1])  # error(PI) - error(labels)


def check_generalization(result: GeneralizationResult, claims: Claims) -> None:
    """Kernel tracking on the training set; PI lowers the test error and the distance travelled,
    in the order the kernel model predicts."""
    claims.at_most(
        "digits: hypothesis of the tracking bound, lr lambda_max(H_m(t)) / n <= 2 (worst)",
        measured=result.step_gain,
        bound=2.0,
        why="|I - lr H_m(t)/n|_op <= 1 needs it; measured on the networks' tangent kernels",
    )
    claims.at_most(
        "digits: wide students stay within the kernel-tracking bound B(t) (worst deviation / "
        "bound)",
        measured=float(result.tracking_ratio.max()),
        bound=1.0,
        why="same computed bound as in the dynamics experiment; 1 = the bound itself",
    )
    for a, level in enumerate(result.noise):
        predicted = result.test_error_predicted[a].mean(-1)
        measured = {
            "PI": float(result.test_error_measured[a, -1].mean()),
            "labels": float(result.test_error_measured[a, 0].mean()),
        }
        # the theory's prediction for the test error is the kernel model's closed form: the
        # networks must order PI and labels as it does, where its gap exceeds 3 paired standard
        # errors; where it does not (seed 4: a tie), the networks must show no such gap either
        name = (
            f"label noise {level:g}: test error, PI (rho=1) vs labels only (rho=0), in the "
            "order the kernel model predicts"
        )
        kernel_gap, kernel_tol = _paired_error_gap(result.test_correct_predicted[a])
        if abs(kernel_gap) > kernel_tol:
            claims.ordered(
                name,
                measured,
                order=["PI", "labels"] if kernel_gap < 0 else ["labels", "PI"],
                why=f"means over seeds; the kernel model's closed form gives PI "
                f"{predicted[-1]:.4f}, labels {predicted[0]:.4f} (gap beyond 3 paired SE, "
                f"{kernel_tol:.4f})",
            )
        else:
            network_gap, network_tol = _paired_error_gap(result.test_correct_measured[a])
            claims.at_most(
                name + " (no resolvable difference)",
                measured=abs(network_gap),
                bound=network_tol,
                why=f"the kernel model's gap, {kernel_gap:+.4f}, is within 3 paired SE "
                f"({kernel_tol:.4f}), so the networks' |error(PI) - error(labels)| must be within "
                "3 paired SE over the test digits on which they disagree",
            )
        with claims.observing():  # the paper's "hence better generalisation", not a theorem
            claims.ordered(
                f"observation: label noise {level:g}: PI (rho=1) lowers the test error below "
                "labels only (rho=0)",
                measured,
                order=["PI", "labels"],
                why="the paper's argument (fewer iterations, a smaller distance travelled, hence "
                "better generalisation); means over seeds",
            )
    noisy = int(np.argmax(result.noise))
    claims.monotone(
        f"label noise {result.noise[noisy]:g}: test MSE falls at every step of rho",
        result.rhos,
        result.test_mse_measured[noisy].mean(-1),
        direction="decreasing",
        strict=True,
        why="exact comparison of seed means; the kernel model predicts "
        + ", ".join(f"{v:.3f}" for v in result.test_mse_predicted[noisy].mean(-1)),
    )
    claims.ordered(
        f"label noise {result.noise[noisy]:g}: weights travel less with PI, |W(T) - W(0)|_F",
        {
            "PI": float(result.distance_measured[noisy, -1].mean()),
            "labels": float(result.distance_measured[noisy, 0].mean()),
        },
        order=["PI", "labels"],
        why="means over seeds; kernel prediction (Arora et al. 2019, Lemma 5.3) "
        f"{result.distance_predicted[noisy, -1].mean():.2f} < "
        f"{result.distance_predicted[noisy, 0].mean():.2f}",
    )


def plot_generalization(result: GeneralizationResult):
    """Left: test error vs rho (clean and noisy labels), measured and kernel-predicted.
    Right: distance travelled by the weights, measured vs predicted."""
    fig, axes = figure(2, 1, width=5.0, height=3.9)
    colors = [PALETTE["blue"], PALETTE["vermillion"]]
    ax = axes[0][0]
    for a, level in enumerate(result.noise):
        color = colors[a % 2]
        plot_measured(
            ax, result.rhos, result.test_error_measured[a], f"noise {level:g}", color=color
        )
        plot_predicted(ax, result.rhos, result.test_error_predicted[a].mean(-1), "", color=color)
    ax.axhline(
        result.teacher_test_error, color=ROLE_COLORS["teacher"], lw=1, ls=":", label="teacher"
    )
    ax.set(
        xlabel=r"mixing weight $\rho$",
        ylabel="test error (0-1)",
        title=f"digits >= 5 vs < 5, n={result.n_train}; dashed: kernel",
    )
    ax.legend(fontsize=8)
    ax = axes[0][1]
    for a, level in enumerate(result.noise):
        color = colors[a % 2]
        plot_measured(ax, result.rhos, result.distance_measured[a], f"noise {level:g}", color=color)
        plot_predicted(ax, result.rhos, result.distance_predicted[a].mean(-1), "", color=color)
    ax.set(
        xlabel=r"mixing weight $\rho$",
        ylabel=r"$\|W(T)-W(0)\|_F$",
        title="distance travelled by the weights",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def summary_table(
    dynamics: DynamicsResult, convergence: ConvergenceResult, generalization: GeneralizationResult
) -> str:
    """The chapter's closing note: predicted (kernel model) vs measured (trained networks) for the
    interpolation, the iterations to tolerance and the test error, as a Markdown table."""
    rows = ["| quantity | predicted (kernel) | measured (network) |", "|---|---|---|"]
    full = int(np.argmax(dynamics.visible))
    for p in range(len(dynamics.rhos)):
        if dynamics.rhos[p] in (0.5, 1.0):
            rows.append(
                f"| RMS training error vs labels, rho={dynamics.rhos[p]:g}, sees all, "
                f"T={dynamics.steps[-1]} (converged: {math.sqrt(dynamics.asymptotic_data[p]):.3f})"
                f" | {math.sqrt(dynamics.err_data_predicted[-1, full, p]):.3f} | "
                f"{np.sqrt(dynamics.err_data_measured[-1, full, p]).mean():.3f} |"
            )
    wide = int(convergence.widths[-1])
    for i, visible in enumerate(convergence.visible):
        for k, name in enumerate(("labels", "PI")):
            rows.append(
                f"| iterations to {convergence.tol:.0%} residual, {name}, sees {int(visible)}/"
                f"{convergence.dim}, m={wide} | {convergence.iters_predicted[i, k].mean():.1f} | "
                f"{convergence.iters_measured[-1, i, k].mean():.1f} |"
            )
    g = generalization
    for a, level in enumerate(g.noise):
        for p in (0, len(g.rhos) - 1):
            rows.append(
                f"| digits test error, label noise {level:g}, rho={g.rhos[p]:g} | "
                f"{g.test_error_predicted[a, p].mean():.3f} | "
                f"{g.test_error_measured[a, p].mean():.3f} |"
            )
    noisy = int(np.argmax(g.noise))
    for p in (0, len(g.rhos) - 1):
        rows.append(
            f"| digits weight distance, label noise {g.noise[noisy]:g}, rho={g.rhos[p]:g} | "
            f"{g.distance_predicted[noisy, p].mean():.2f} | "
            f"{g.distance_measured[noisy, p].mean():.2f} |"
        )
    return "\n".join(rows)


EXPERIMENTS = [
    Experiment("dynamics", run_dynamics, check_dynamics, plot_dynamics),
    Experiment("convergence", run_convergence, check_convergence, plot_convergence),
    Experiment("generalization", run_generalization, check_generalization, plot_generalization),
]


# -- private helpers ----------------------------------------------------------------------------


def _vjp(x, gated, vectors):
    """``J^T v`` for ``k`` vectors at once, shape ``(R, m, k, d)``: row ``r`` is
    ``sum_i gated[i, r] v_i x_i`` with ``gated = 1[<w_r, x_i> > 0] a_r m^{-1/2}`` (``(R, n, m)``)
    and ``vectors`` of shape ``(R, n, k)``."""
    replicas, n, d = x.shape
    k = vectors.shape[-1]
    scaled = (vectors[..., None] * x[:, :, None, :]).reshape(replicas, n, k * d)
    return torch.matmul(gated.transpose(1, 2), scaled).reshape(replicas, -1, k, d)


def _jvp(x, gated, directions):
    """``J g`` for ``k`` weight directions ``g`` of shape ``(R, m, k, d)``, shape ``(R, n, k)``:
    ``sum_r gated[i, r] <x_i, g_r> = <x_i, sum_r gated[i, r] g_r>``, one matrix product."""
    replicas, m, k, d = directions.shape
    summed = torch.matmul(gated, directions.reshape(replicas, m, k * d))  # (R, n, k d)
    return (summed.reshape(replicas, -1, k, d) * x[:, :, None, :]).sum(-1)


def _replica_chunk(elements_per_replica: int, device: torch.device) -> int:
    """How many replicas a training step handles at once.

    The ``(c, n, m)`` pre-activation and activation-pattern buffers stay near 64 MB on a CPU.
    The chunks bound memory, not time: ``kdlib`` keeps freed heap memory (:mod:`kdlib.memory`),
    so a process holds its peak until it exits, and one pass over 60 students of width 32,768
    would hold gigabytes (with freed memory kept, one pass measured about as fast as the chunks,
    6% faster in one run of ``bench --kernels``). On a GPU a chunk may reach 1 GB, to keep it
    busy. Replicas are independent, so the chunking changes nothing but the order of float32
    roundings.
    """
    budget = 2**24 if device.type == "cpu" else 2**28
    return max(1, budget // elements_per_replica)


def _width_ticks(ax, widths) -> None:
    ax.set_xticks(list(widths), [str(int(w)) for w in widths])
    ax.minorticks_off()


def _op_norm(symmetric: torch.Tensor) -> torch.Tensor:
    """Operator norms of a batch of symmetric matrices ``(..., n, n) -> (...)``."""
    return torch.linalg.eigvalsh(symmetric).abs().amax(-1)


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _interval_violation(measured, low, high, steps: int) -> np.ndarray:
    """By how many steps a measured crossing falls outside ``[low, high]`` (negative inside);
    ``high = steps + 1`` means the bound never crossed within the budget: no upper end."""
    upper = np.where(high > steps, -np.inf, measured - high)
    return np.maximum(low - measured, upper)
