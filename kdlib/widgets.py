"""Interactive explorers for the book: a slider (or two) and a figure redrawn on every change.

Each explorer is an :class:`Explorer`, an ``ipywidgets.VBox`` that works everywhere a chapter can
be read:

* in a live kernel (Jupyter, Colab, Binder) it is an ordinary widget: move a slider and the figure
  is recomputed and redrawn;
* in the static HTML book it is a plain PNG of the figure at the default values: its display bundle
  carries an ``image/png`` next to the widget view, and the book's configuration
  (``nb_mime_priority_overrides`` in ``_config.yml``) drops the widget view, so no widget
  JavaScript (which would come from a CDN) is needed.

Every explorer separates a cheap *compute* function (numpy, well under 0.5 s per update on a CPU;
see :func:`benchmark`) from its *draw* function, which returns a matplotlib
:class:`~matplotlib.figure.Figure` built without pyplot (so notebooks do not display it twice).

Explorers
---------
:func:`temperature_explorer`
    Soft labels ``softmax(z / T)`` of one teacher logit vector as the temperature ``T`` moves
    (chapter "Soft labels and temperature").
:func:`geometry_explorer`
    Phuong & Lampert's data geometry: how much probability lies near the teacher's boundary, and
    the resulting bound on the distilled linear student's risk as ``n`` grows.
:func:`label_averaging_explorer`
    Self-distillation as label averaging (Jeong & Chung): a mislabelled point's prediction over
    rounds, at a given symmetric noise rate, in the class-structured (block) feature model.

The last two import their chapters' theory modules when called.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Mapping

import ipywidgets
import numpy as np
from matplotlib.figure import Figure

from .plots import PALETTE, ROLE_COLORS

__all__ = [
    "Explorer",
    "DEFAULT_TEACHER_LOGITS",
    "soft_labels",
    "draw_soft_labels",
    "temperature_explorer",
    "geometry_curves",
    "draw_geometry",
    "geometry_explorer",
    "symmetric_noise",
    "label_averaging_curves",
    "draw_label_averaging",
    "label_averaging_explorer",
    "figure_png",
    "benchmark",
]

#: The teacher logits of the chapter "Soft labels and temperature" (ten classes, class 2 on top).
DEFAULT_TEACHER_LOGITS = (1.0, 0.5, 6.0, 2.5, -1.0, 0.0, 3.0, -2.0, 4.0, 1.5)

STATIC_NOTE = (
    "Static figure at the default values: "
    "run this cell in Jupyter, Colab or Binder to move the slider."
)


#: Margins of the two-panel explorers' figures (9 x 3.2 inches).
TWO_PANELS = {"left": 0.07, "right": 0.98, "bottom": 0.16, "top": 0.89, "wspace": 0.28}


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)  # no bbox_inches="tight": it draws twice
    return buffer.getvalue()


class Explorer(ipywidgets.VBox):
    """Controls above a figure that ``draw(**values)`` recomputes whenever a control changes.

    Parameters
    ----------
    draw
        Function of the controls' values (keyword arguments named as in ``controls``) returning a
        matplotlib :class:`~matplotlib.figure.Figure`.
    controls
        Name -> ipywidgets value widget (slider, dropdown, ...); the names are ``draw``'s keywords.
    note
        Plain-text fallback shown where neither widgets nor images can be displayed.

    Notes
    -----
    Displayed, it offers both the live widget and a PNG of the current figure: a notebook front end
    shows the widget, the static book shows the PNG.
    """

    def __init__(
        self,
        draw: Callable[..., Figure],
        controls: Mapping[str, ipywidgets.ValueWidget],
        note: str = STATIC_NOTE,
    ):
        self._draw = draw
        self.controls = dict(controls)
        self.note = note
        self.image = ipywidgets.Image(format="png", layout=ipywidgets.Layout(max_width="100%"))
        row = ipywidgets.HBox(
            list(self.controls.values()), layout=ipywidgets.Layout(flex_flow="row wrap")
        )
        super().__init__([row, self.image])
        for control in self.controls.values():
            control.observe(self.update, names="value")
        self.update()

    @property
    def values(self) -> dict:
        """Current value of every control, by name."""
        return {name: control.value for name, control in self.controls.items()}

    def update(self, change=None) -> None:
        """Recompute and redraw the figure for the controls' current values."""
        self.image.value = figure_png(self._draw(**self.values))

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        data = dict(data or {})
        data["image/png"] = base64.b64encode(self.image.value).decode("ascii")
        data["text/plain"] = self.note
        return data, metadata


# -- (a) temperature: soft labels ------------------------------------------------------------


def soft_labels(teacher_logits, temperature: float) -> np.ndarray:
    """Soft labels ``softmax(z / T)`` of logit vectors (the teacher's targets at temperature ``T``).

    Parameters
    ----------
    teacher_logits
        Array-like of shape ``(K,)`` or ``(n, K)``.
    temperature
        ``T > 0``.

    Returns
    -------
    numpy.ndarray
        Same shape as ``teacher_logits``; every row sums to one. Hinton et al. (2015), eq. 1.
    """
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    logits = np.asarray(teacher_logits, dtype=np.float64)
    if logits.ndim not in (1, 2) or logits.shape[-1] < 2:
        raise ValueError(
            f"teacher_logits must have shape (K,) or (n, K) with K >= 2, got {logits.shape}"
        )
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    weights = np.exp(scaled)
    return weights / weights.sum(axis=-1, keepdims=True)


def draw_soft_labels(temperature: float, teacher_logits=DEFAULT_TEACHER_LOGITS) -> Figure:
    """Bar chart of the soft labels at one temperature, with the ``T = 1`` labels as outlines."""
    probs = soft_labels(teacher_logits, temperature)
    reference = soft_labels(teacher_logits, 1.0)
    classes = np.arange(len(probs))
    entropy = -(probs * np.log(np.clip(probs, 1e-300, None))).sum()
    fig = Figure(figsize=(6.4, 3.0))
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.16, top=0.89)
    ax = fig.add_subplot()
    ax.bar(classes, probs, color=ROLE_COLORS["soft"], label=f"T = {temperature:.3g}")
    ax.bar(classes, reference, fill=False, edgecolor=PALETTE["black"], lw=1, label="T = 1")
    ax.set(
        xlabel="class",
        ylabel="soft label $p_k$",
        xticks=classes,
        ylim=(0, 1),
        title=f"T = {temperature:.3g}: entropy {entropy:.2f} nats "
        f"(uniform: {np.log(len(probs)):.2f})",
    )
    ax.legend(loc="upper right", frameon=False)
    return fig


def temperature_explorer(
    teacher_logits=DEFAULT_TEACHER_LOGITS, temperature: float = 4.0
) -> Explorer:
    """Slider for the temperature ``T`` (0.1 to 100, log scale) over the soft labels of one
    teacher logit vector; static PNG at ``temperature`` in the HTML book."""
    slider = ipywidgets.FloatLogSlider(
        value=temperature,
        base=10,
        min=-1,
        max=2,
        step=0.05,
        description="T",
        continuous_update=True,
        readout_format=".3g",
    )
    logits = tuple(float(v) for v in np.asarray(teacher_logits, dtype=np.float64).ravel())
    return Explorer(
        lambda temperature: draw_soft_labels(temperature, logits), {"temperature": slider}
    )


# -- (b) data geometry: Phuong & Lampert ------------------------------------------------------

#: Training-set sizes on the risk-bound curve.
GEOMETRY_SIZES = np.unique(np.logspace(0, 4, 41).round().astype(int))


def _angular(kind: str, kappa: float, margin: float):
    from .data.phuong_lampert import AngularDistribution

    return AngularDistribution(kind=kind, kappa=float(kappa), margin=float(margin))


def geometry_curves(kind: str = "polynomial", kappa: float = 1.0, margin: float = 0.2) -> dict:
    """The two curves of :func:`geometry_explorer` (numpy arrays).

    ``angle`` (radians, 0 to pi/2) and ``mass_near_boundary`` = ``F(angle)``, the probability that
    an input lies within that angle of the teacher's boundary; ``sizes`` and ``bound``, the
    Phuong & Lampert (2019) generalisation bound on the distilled linear student's expected risk
    (``kdlib.theory.phuong_lampert.risk_bound``); ``rate``, its corollary (polynomial:
    ``2 (log n / n)^kappa`` for ``n >= 3``; margin: ``((pi/2 - 2m) / (pi/2 - m))^n`` for
    ``0 < m < pi/4``), NaN where it does not apply.
    """
    from .theory import phuong_lampert as theory

    distribution = _angular(kind, kappa, margin)
    angle = np.linspace(0.0, np.pi / 2, 181)
    sizes = GEOMETRY_SIZES
    rate = np.full(len(sizes), np.nan)
    if kind == "polynomial":
        big = sizes >= 3
        rate[big] = theory.polynomial_rate(sizes[big], float(kappa))
    elif 0 < margin < np.pi / 4:
        rate = theory.margin_rate(sizes, float(margin))
    return {
        "angle": angle,
        "mass_near_boundary": distribution.boundary_cdf(angle),
        "sizes": sizes,
        "bound": theory.risk_bound(sizes, distribution, grid=4001),
        "rate": rate,
        "label": distribution.label,
    }


def draw_geometry(kind: str = "polynomial", kappa: float = 1.0, margin: float = 0.2) -> Figure:
    """Mass near the boundary (left) and the risk bound against ``n`` (right)."""
    curves = geometry_curves(kind, kappa, margin)
    fig = Figure(figsize=(9.0, 3.2))
    left, right = fig.subplots(1, 2)
    left.plot(np.degrees(curves["angle"]), curves["mass_near_boundary"], color=ROLE_COLORS["soft"])
    left.set(
        xlabel="angle to the teacher's boundary (degrees)",
        ylabel="probability within that angle",
        title=f"data geometry: {curves['label']}",
        xlim=(0, 90),
        ylim=(0, 1.02),
    )
    right.loglog(curves["sizes"], curves["bound"], color=ROLE_COLORS["theory"], label="bound")
    if np.isfinite(curves["rate"]).any():
        right.loglog(curves["sizes"], curves["rate"], "--", color=PALETTE["orange"], label="rate")
    right.set(
        xlabel="training examples n",
        ylabel="bound on expected risk",
        ylim=(1e-6, 1.5),
        title="distilled linear student",
    )
    right.legend(frameon=False)
    right.minorticks_off()  # log-scale minor ticks are most of the drawing time
    fig.subplots_adjust(**TWO_PANELS)  # fixed layout: tight_layout costs a draw
    return fig


def geometry_explorer(
    kind: str = "polynomial", kappa: float = 1.0, margin: float = 0.2
) -> Explorer:
    """Controls for the geometry of Phuong & Lampert's inputs: the family (polynomial mass near the
    boundary with exponent ``kappa``, or a hard angular ``margin``) and its parameter."""
    controls = {
        "kind": ipywidgets.ToggleButtons(
            options=["polynomial", "margin"], value=kind, description="family"
        ),
        "kappa": ipywidgets.FloatLogSlider(
            value=kappa, base=2, min=-2, max=3, step=0.25, description="kappa"
        ),
        "margin": ipywidgets.FloatSlider(
            value=margin, min=0.0, max=0.75, step=0.025, description="margin (rad)"
        ),
    }
    return Explorer(draw_geometry, controls)


# -- (c) self-distillation as label averaging: Jeong & Chung ---------------------------------

#: Block feature model of the label-averaging chapter (the paper's code defaults).
LABEL_AVERAGING_MODEL = {"n_classes": 4, "n_per_class": 500, "c": 0.4, "d": 0.1, "lam": 1e-5}
MAX_ROUNDS = 30


def symmetric_noise(noise_rate: float, n_classes: int):
    """Label fractions ``q`` (a ``(K, K)`` float64 tensor) of symmetric noise at rate ``eta``:
    ``q_jj = 1 - eta`` and ``q_jk = eta / (K - 1)``."""
    import torch

    if not 0 <= noise_rate < 1:
        raise ValueError(f"noise_rate must be in [0, 1); got {noise_rate!r}")
    q = torch.full((n_classes, n_classes), noise_rate / (n_classes - 1), dtype=torch.float64)
    q.fill_diagonal_(1.0 - noise_rate)
    return q


def label_averaging_curves(rounds: int = 5, noise_rate: float = 0.5, **model) -> dict:
    """What :func:`label_averaging_explorer` shows (numpy arrays; linearised dynamics, block model).

    ``correct`` and ``mislabelled``: the outputs ``P_k`` (``k = 0..K-1``) at round ``rounds`` for a
    point of class 0 labelled 0, and one labelled 1; ``margins``: the smallest margin over all
    points at rounds ``0..MAX_ROUNDS`` (positive = every training point classified correctly);
    ``minimum_rounds``: the rounds after the teacher needed for that (inf if never);
    ``threshold``: the largest noise rate at which ``rounds`` rounds suffice
    (``kdlib.theory.label_averaging``).
    """
    from .theory import label_averaging as theory

    params = {**LABEL_AVERAGING_MODEL, **model}
    k = params["n_classes"]
    block = {key: params[key] for key in ("n_per_class", "c", "d", "lam")}
    q = symmetric_noise(noise_rate, k)
    outputs = theory.block_sd_outputs(q, rounds=[int(rounds)], **block)[0]  # [j, l, k]
    margins = theory.block_margins(q, rounds=MAX_ROUNDS, **block).numpy()
    return {
        "correct": outputs[0, 0].numpy(),
        "mislabelled": outputs[0, 1].numpy(),
        "margins": margins,
        "minimum_rounds": theory.minimum_rounds(q, **block) - 1,
        "threshold": theory.noise_threshold(int(rounds), k, **block),
    }


def draw_label_averaging(rounds: int = 5, noise_rate: float = 0.5, **model) -> Figure:
    """Outputs of a correctly labelled and a mislabelled point (left); smallest margin over the
    training points against the round (right)."""
    curves = label_averaging_curves(rounds, noise_rate, **model)
    k = len(curves["correct"])
    classes = np.arange(k)
    fig = Figure(figsize=(9.0, 3.2))
    left, right = fig.subplots(1, 2)
    width = 0.4
    left.bar(
        classes - width / 2,
        curves["correct"],
        width,
        color=ROLE_COLORS["soft"],
        label="labelled 0 (correct)",
    )
    left.bar(
        classes + width / 2,
        curves["mislabelled"],
        width,
        color=ROLE_COLORS["hard"],
        label="labelled 1 (noisy)",
    )
    left.set(
        xlabel="class k",
        ylabel="output $P_k$",
        xticks=classes,
        ylim=(0, 1),
        title=f"a point of true class 0, round {rounds}",
    )
    left.legend(frameon=False, fontsize=8)
    steps = np.arange(len(curves["margins"]))
    right.plot(steps, curves["margins"], color=ROLE_COLORS["self-distillation"])
    right.axhline(0, color=PALETTE["black"], lw=0.8)
    right.axvline(rounds, color=PALETTE["orange"], ls="--", lw=1)
    needed = curves["minimum_rounds"]
    needed_text = "never" if not np.isfinite(needed) else f"from round {needed:.0f}"
    right.set(
        xlabel="self-distillation round",
        ylabel="smallest margin",
        title=f"noise {noise_rate:.2f}: all points correct {needed_text}",
    )
    fig.subplots_adjust(**TWO_PANELS)  # fixed layout: tight_layout costs a draw
    return fig


def label_averaging_explorer(rounds: int = 5, noise_rate: float = 0.5, **model) -> Explorer:
    """Sliders for the number of self-distillation rounds and the symmetric noise rate."""
    params = {**LABEL_AVERAGING_MODEL, **model}
    top = (params["n_classes"] - 1) / params["n_classes"]
    controls = {
        "rounds": ipywidgets.IntSlider(value=rounds, min=0, max=MAX_ROUNDS, description="rounds"),
        "noise_rate": ipywidgets.FloatSlider(
            value=noise_rate, min=0.0, max=round(top - 0.01, 2), step=0.01, description="noise"
        ),
    }
    return Explorer(lambda **v: draw_label_averaging(**v, **model), controls)


# -- benchmark ---------------------------------------------------------------------------------


def benchmark(repeats: int = 5) -> dict[str, float]:
    """Seconds per update (compute and redraw) of every explorer, the best of ``repeats``.

    Run ``python -m kdlib.widgets`` to print it; each should be well under 0.5 s on a CPU.
    """
    cases: dict[str, Callable[[], object]] = {
        "temperature: compute": lambda: soft_labels(DEFAULT_TEACHER_LOGITS, 3.7),
        "temperature: compute + draw": lambda: figure_png(draw_soft_labels(3.7)),
        "geometry: compute": lambda: geometry_curves("polynomial", 2.0),
        "geometry: compute + draw": lambda: figure_png(draw_geometry("margin", 1.0, 0.3)),
        "label averaging: compute": lambda: label_averaging_curves(7, 0.4),
        "label averaging: compute + draw": lambda: figure_png(draw_label_averaging(7, 0.4)),
    }
    timings = {}
    for name, case in cases.items():
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            case()
            best = min(best, time.perf_counter() - start)
        timings[name] = best
    return timings


if __name__ == "__main__":
    for case, seconds in benchmark().items():
        print(f"{case:40s} {1000 * seconds:8.1f} ms per update")
