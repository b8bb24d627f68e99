"""Chapter "Soft labels and temperature": the distillation loss, checked three ways, and a first
experiment on real data.

Experiments
-----------
``gradient``
    Autograd's gradient of the distillation loss equals the closed form ``(q - p) / T``.
``temperature``
    With the ``T^2`` factor the gradient's size stays constant as ``T`` grows (without it, it
    shrinks like ``T^{-2}``), and the loss tends to zero-mean logit matching at rate ``T^{-1}``.
``digits``
    A linear student trained on a teacher's soft labels needs fewer examples than one trained on
    hard labels (scikit-learn's 8x8 digits, many training-set sizes and seeds at once).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..claims import Claims, t_halfwidth
from ..config import RunConfig, make_generator
from ..data import load_digits_split
from ..losses import cross_entropy, kd_loss
from ..models import LinearStudent, TwoLayerReLU
from ..plots import ROLE_COLORS, figure, plot_measured, plot_predicted
from ..theory import kd as theory
from ..train import train
from . import Experiment, stored_run

CHAPTER = "soft-labels"
TITLE = "Soft labels and temperature"
ORDER = 20


# -- 1. the gradient of the distillation loss ------------------------------------------------


@dataclass
class GradientResult:
    """Autograd vs closed-form gradients, shape ``(len(temperatures), n, K)`` each."""

    temperatures: np.ndarray
    autograd: np.ndarray
    closed_form: np.ndarray


def _random_logits(n: int, k: int, seed: int, scale: float = 3.0) -> tuple[torch.Tensor, ...]:
    gen = make_generator(seed)
    student = torch.randn(n, k, generator=gen, dtype=torch.float64) * scale
    teacher = torch.randn(n, k, generator=gen, dtype=torch.float64) * scale
    return student, teacher


@stored_run
def run_gradient(config: RunConfig) -> GradientResult:
    """Differentiate the distillation loss (without the ``T^2`` factor) with autograd, one
    temperature per replica, and evaluate the closed form on the same logits."""
    n, k = config.pick((64, 10), (4096, 100))
    temperatures = np.array([0.25, 0.5, 1.0, 2.0, 5.0, 20.0, 100.0])
    student, teacher = _random_logits(n, k, config.seed)
    auto, closed = [], []
    for temperature in temperatures:
        z = student[None].clone().requires_grad_(True)
        loss = kd_loss(z, teacher, float(temperature), t_squared=False).sum() * n  # sum, not mean
        (grad,) = torch.autograd.grad(loss, z)
        auto.append(grad[0].numpy())
        closed.append(theory.kd_gradient(student, teacher, float(temperature), False).numpy())
    return GradientResult(temperatures, np.stack(auto), np.stack(closed))


def check_gradient(result: GradientResult, claims: Claims) -> None:
    """The gradient claim, at every temperature."""
    claims.close(
        "KD gradient = (softmax(z_s/T) - softmax(z_t/T)) / T",
        predicted=result.closed_form,
        measured=result.autograd,
        atol=1e-12,
        why="float64 round-off on O(1) quantities",
    )


def plot_gradient(result: GradientResult):
    """Closed form against autograd, every coordinate at every temperature."""
    fig, axes = figure(1, 1, width=4.6, height=4.2)
    ax = axes[0][0]
    for i, temperature in enumerate(result.temperatures):
        ax.scatter(
            result.closed_form[i].ravel(),
            result.autograd[i].ravel(),
            s=6,
            label=f"T={temperature:g}",
        )
    lims = [result.closed_form.min(), result.closed_form.max()]
    ax.plot(lims, lims, "k--", lw=1, label="y = x")
    ax.set(xlabel="closed form (q - p) / T", ylabel="autograd", title="KD gradient")
    ax.legend(fontsize=8, ncol=2)
    return fig


# -- 2. temperature: the T^2 factor and the high-temperature limit ---------------------------


@dataclass
class TemperatureResult:
    """Gradient sizes and limit errors on a temperature grid (means over samples)."""

    temperatures: np.ndarray
    grad_norm_t2: np.ndarray
    grad_norm_plain: np.ndarray
    loss_limit_error: np.ndarray
    grad_limit_error: np.ndarray
    fit_from: float


@stored_run
def run_temperature(config: RunConfig) -> TemperatureResult:
    """Evaluate gradients and limit errors for ``T`` from 1 to 1000 on random logits."""
    n, k = config.pick((256, 10), (16384, 100))
    temperatures = np.logspace(0, 3, 13)
    student, teacher = _random_logits(n, k, config.seed + 1)
    loss_limit = theory.high_temperature_loss_limit(student, teacher)
    grad_limit = theory.high_temperature_gradient_limit(student, teacher)
    rows = []
    for temperature in temperatures:
        t = float(temperature)
        g2 = theory.kd_gradient(student, teacher, t, t_squared=True)
        g1 = theory.kd_gradient(student, teacher, t, t_squared=False)
        # each sample as its own replica: kd_loss returns the per-sample losses, shape (n,)
        per_sample = kd_loss(student[:, None], teacher[:, None], t, check=False)
        rows.append(
            [
                g2.norm(dim=-1).mean().item(),
                g1.norm(dim=-1).mean().item(),
                (per_sample - loss_limit).abs().mean().item(),
                (g2 - grad_limit).norm(dim=-1).mean().item(),
            ]
        )
    rows = np.array(rows)
    return TemperatureResult(temperatures, *rows.T, fit_from=30.0)


def check_temperature(result: TemperatureResult, claims: Claims) -> None:
    """Rates in ``T`` for the gradient's size and for the high-temperature limits."""
    large = result.temperatures >= result.fit_from
    temps = result.temperatures[large]
    why = "fit over T >= 30, where the next term of the 1/T expansion changes the slope by < 0.05"
    claims.slope(
        "gradient size with T^2 factor is constant in T",
        temps,
        result.grad_norm_t2[large],
        predicted=theory.predicted_gradient_exponent(True),
        tol=0.05,
        why=why,
    )
    claims.slope(
        "gradient size without T^2 factor ~ T^-2",
        temps,
        result.grad_norm_plain[large],
        predicted=theory.predicted_gradient_exponent(False),
        tol=0.05,
        why=why,
    )
    claims.slope(
        "T^2 KL -> zero-mean logit matching at rate T^-1",
        temps,
        result.loss_limit_error[large],
        predicted=theory.predicted_limit_error_exponent(),
        tol=0.05,
        why=why,
    )
    claims.slope(
        "T (q - p) -> centred logit difference / K at rate T^-1",
        temps,
        result.grad_limit_error[large],
        predicted=theory.predicted_limit_error_exponent(),
        tol=0.05,
        why=why,
    )


def plot_temperature(result: TemperatureResult):
    """Two log-log panels: gradient sizes, and errors of the high-temperature limits."""
    fig, axes = figure(2, 1, width=4.8, height=3.8)
    left, right = axes[0]
    temps = result.temperatures
    left.loglog(temps, result.grad_norm_t2, "o-", color=ROLE_COLORS["kd"], label="with $T^2$")
    left.loglog(temps, result.grad_norm_plain, "s-", color=ROLE_COLORS["hard"], label="without")
    anchor = result.grad_norm_plain[-1] * (temps / temps[-1]) ** -2.0
    plot_predicted(left, temps, anchor, label="$T^{-2}$ (theory)")
    left.set(xlabel="temperature $T$", ylabel="mean gradient norm", title="Gradient size")
    left.legend()
    right.loglog(temps, result.loss_limit_error, "o-", label="loss: $|T^2 KL - |\\delta|^2/2K|$")
    right.loglog(temps, result.grad_limit_error, "s-", label="gradient: $|T(q-p) - \\delta/K|$")
    ref = result.grad_limit_error[-1] * (temps / temps[-1]) ** -1.0
    plot_predicted(right, temps, ref, label="$T^{-1}$ (theory)")
    right.set(xlabel="temperature $T$", ylabel="error", title="High-temperature limit")
    right.legend(fontsize=8)
    return fig


# -- 3. digits: soft labels are worth more examples -----------------------------------------


@dataclass
class DigitsResult:
    """Test accuracies of soft- and hard-label students, shape ``(len(sizes), seeds)``."""

    sizes: np.ndarray
    soft_accuracy: np.ndarray
    hard_accuracy: np.ndarray
    teacher_accuracy: float
    temperature: float
    target_accuracy: float
    confidence: float = 0.99


def _subsets(n_total: int, sizes, seeds: int, seed: int) -> torch.Tensor:
    """Indices of a random training subset per replica, padded to the largest size: ``(R, n_max)``
    (replica ``i * seeds + j`` has size ``sizes[i]``; padded entries repeat index 0)."""
    gen = make_generator(seed)
    n_max = max(sizes)
    index = torch.zeros(len(sizes) * seeds, n_max, dtype=torch.long)
    for i, size in enumerate(sizes):
        for j in range(seeds):
            index[i * seeds + j, :size] = torch.randperm(n_total, generator=gen)[:size]
    return index


@stored_run
def run_digits(config: RunConfig, temperature: float = 4.0) -> DigitsResult:
    """Train a teacher on all training digits, then soft- and hard-label linear students on
    random subsets of every size (sizes x seeds replicas, one batched program each)."""
    sizes = config.pick([10, 20, 40, 80, 160, 320], [10, 20, 40, 80, 160, 320, 640, 1000])
    seeds = config.pick(10, 100)
    steps = config.pick(300, 1000)
    split = load_digits_split(seed=config.seed).to(config.device)
    n_train, n_features = split.x_train.shape

    teacher = TwoLayerReLU(
        1,
        n_features,
        256,
        out_features=split.n_classes,
        bias=True,
        train_second_layer=True,
        seed=config.seed,
        device=config.device,
    )
    train(
        teacher,
        lambda m, _: cross_entropy(m(split.x_train), split.y_train, check=False),
        config.pick(400, 1000),
        lr=0.5,
        desc="teacher",
    )
    with torch.no_grad():
        teacher_logits = teacher(split.x_train)[0]
        teacher_accuracy = (teacher(split.x_test)[0].argmax(-1) == split.y_test).double().mean()

    index = _subsets(n_train, sizes, seeds, config.seed + 1).to(config.device)
    mask = (
        torch.arange(max(sizes), device=config.device)[None]
        < torch.tensor(np.repeat(sizes, seeds), device=config.device)[:, None]
    ).float()
    x_sub, y_sub, t_sub = split.x_train[index], split.y_train[index], teacher_logits[index]

    def fit(loss_fn) -> np.ndarray:
        student = LinearStudent(
            len(index), n_features, split.n_classes, bias=True, device=config.device
        )
        train(student, loss_fn, steps, lr=0.5, desc="students")
        with torch.no_grad():
            correct = student(split.x_test).argmax(-1) == split.y_test
        return correct.double().mean(-1).view(len(sizes), seeds).cpu().numpy()

    soft = fit(lambda m, _: kd_loss(m(x_sub), t_sub, temperature, sample_weight=mask, check=False))
    hard = fit(lambda m, _: cross_entropy(m(x_sub), y_sub, sample_weight=mask, check=False))
    return DigitsResult(
        np.asarray(sizes), soft, hard, float(teacher_accuracy), temperature, target_accuracy=0.85
    )


def samples_needed(sizes: np.ndarray, accuracy: np.ndarray, target: float) -> float:
    """Training-set size at which the mean accuracy curve first reaches ``target`` (linear
    interpolation in ``log n``); ``inf`` if it never does."""
    mean = accuracy.mean(axis=1) if accuracy.ndim == 2 else accuracy
    above = np.flatnonzero(mean >= target)
    if above.size == 0:
        return float("inf")
    i = above[0]
    if i == 0:
        return float(sizes[0])
    frac = (target - mean[i - 1]) / (mean[i] - mean[i - 1])
    return float(np.exp(np.log(sizes[i - 1]) + frac * (np.log(sizes[i]) - np.log(sizes[i - 1]))))


def paired_gap_lower_bound(soft: np.ndarray, hard: np.ndarray, confidence: float) -> np.ndarray:
    """One-sided lower confidence bound on the mean paired accuracy gap ``soft - hard``, per size
    (t-distribution over seeds)."""
    gap = soft - hard
    return gap.mean(axis=1) - t_halfwidth(gap, confidence, axis=1)


def check_digits(result: DigitsResult, claims: Claims) -> None:
    """Soft labels beat hard labels with few examples, and need fewer examples for a target."""
    bound = paired_gap_lower_bound(result.soft_accuracy, result.hard_accuracy, result.confidence)
    claims.at_least(
        f"soft-label gain at n={result.sizes[0]} (lower {result.confidence:.0%} bound)",
        measured=bound[0],
        bound=0.0,
        why="one-sided paired t bound over seeds (same subsets for both students)",
    )
    gap = (result.soft_accuracy - result.hard_accuracy).mean(axis=1)
    claims.ordered(
        f"the gain is smaller at n={result.sizes[-1]} than at n={result.sizes[0]} (seed means)",
        {f"gain at n={result.sizes[-1]}": gap[-1], f"gain at n={result.sizes[0]}": gap[0]},
        order=[f"gain at n={result.sizes[-1]}", f"gain at n={result.sizes[0]}"],
        why="both students approach the same linear-model accuracy as n grows",
    )
    target = result.target_accuracy
    claims.ordered(
        f"examples needed for {target:.0%} test accuracy",
        {
            "soft labels": samples_needed(result.sizes, result.soft_accuracy, target),
            "hard labels": samples_needed(result.sizes, result.hard_accuracy, target),
        },
        order=["soft labels", "hard labels"],
        why="interpolated on the mean accuracy curves",
    )


def plot_digits(result: DigitsResult):
    """Test accuracy against training-set size, soft vs hard labels (mean and SEM over seeds)."""
    fig, axes = figure(1, 1, width=6.0, height=4.0)
    ax = axes[0][0]
    plot_measured(ax, result.sizes, result.soft_accuracy, "soft", color=ROLE_COLORS["soft"])
    plot_measured(ax, result.sizes, result.hard_accuracy, "hard", color=ROLE_COLORS["hard"])
    ax.axhline(result.teacher_accuracy, ls=":", color=ROLE_COLORS["teacher"], label="teacher")
    ax.axhline(result.target_accuracy, ls="--", lw=1, color="grey")
    ax.set_xscale("log")
    ax.set(
        xlabel="training examples $n$",
        ylabel="test accuracy",
        title=f"Linear students on digits (T = {result.temperature:g})",
    )
    ax.legend()
    return fig


EXPERIMENTS = [
    Experiment("gradient", run_gradient, check_gradient, plot_gradient),
    Experiment("temperature", run_temperature, check_temperature, plot_temperature),
    Experiment("digits", run_digits, check_digits, plot_digits),
]


def plot_soft_labels(teacher_logits=None, temperatures=(0.5, 1.0, 4.0, 20.0)):
    """Bar charts of ``softmax(z_t / T)`` for one teacher logit vector at several temperatures."""
    if teacher_logits is None:
        teacher_logits = torch.tensor([1.0, 0.5, 6.0, 2.5, -1.0, 0.0, 3.0, -2.0, 4.0, 1.5])
    logits = torch.as_tensor(teacher_logits, dtype=torch.float64)
    fig, axes = figure(len(temperatures), 1, width=2.6, height=2.6, sharey=True)
    for ax, temperature in zip(axes[0], temperatures, strict=True):
        probs = torch.softmax(logits / float(temperature), -1).numpy()
        ax.bar(np.arange(len(probs)), probs, color=ROLE_COLORS["soft"])
        ax.set(title=f"T = {temperature:g}", xlabel="class", xticks=range(len(probs)))
        ax.tick_params(axis="x", labelsize=7)
    axes[0][0].set_ylabel("soft label $p_k$")
    return fig
