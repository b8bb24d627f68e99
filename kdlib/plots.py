"""One look for every figure in the book.

A colour-blind-safe palette (Okabe & Ito), labelled axes with units, and two helpers for the
figure every chapter draws: a measured curve (mean and spread over seeds) next to the theory's
prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["PALETTE", "use_book_style", "figure", "plot_measured", "plot_predicted", "save"]

#: Okabe-Ito colours, distinguishable under the common colour-vision deficiencies.
PALETTE = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
    "sky": "#56B4E9",
    "yellow": "#F0E442",
    "black": "#000000",
}
#: Colours by role, so "soft labels" look the same in every chapter.
ROLE_COLORS = {
    "soft": PALETTE["blue"],
    "hard": PALETTE["vermillion"],
    "teacher": PALETTE["black"],
    "theory": PALETTE["black"],
    "ensemble": PALETTE["green"],
    "kd": PALETTE["orange"],
    "self-distillation": PALETTE["purple"],
}


def use_book_style() -> None:
    """Set matplotlib defaults shared by every figure of the book."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "axes.prop_cycle": mpl.cycler(color=list(PALETTE.values())),
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "font.size": 11,
            "legend.frameon": False,
            "lines.linewidth": 2.0,
        }
    )


def figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 4.0, **kwargs):
    """A figure in the book style; returns ``(fig, axes)``."""
    use_book_style()
    return plt.subplots(
        nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kwargs
    )


def _np(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=float)


def plot_measured(
    ax,
    x: Sequence[float],
    y,
    label: str,
    color: str | None = None,
    band: str = "sem",
    marker: str = "o",
):
    """Plot the mean over seeds of ``y`` (shape ``(len(x), seeds)`` or ``(len(x),)``) with a
    shaded band: ``"sem"`` (standard error of the mean), ``"std"`` or ``"minmax"``."""
    xs, ys = _np(x), _np(y)
    color = color or ROLE_COLORS.get(label.lower())
    if ys.ndim == 1:
        return ax.plot(xs, ys, marker=marker, label=label, color=color)
    mean = ys.mean(axis=1)
    if band == "sem":
        half = ys.std(axis=1, ddof=1) / np.sqrt(ys.shape[1]) if ys.shape[1] > 1 else 0 * mean
        low, high = mean - half, mean + half
    elif band == "std":
        half = ys.std(axis=1)
        low, high = mean - half, mean + half
    elif band == "minmax":
        low, high = ys.min(axis=1), ys.max(axis=1)
    else:
        raise ValueError(f"band must be 'sem', 'std' or 'minmax'; got {band!r}")
    (line,) = ax.plot(xs, mean, marker=marker, label=f"{label} (measured)", color=color)
    ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def plot_predicted(ax, x, y, label: str = "theory", color: str | None = None):
    """Plot a theoretical prediction as a dashed line."""
    return ax.plot(
        _np(x), _np(y), linestyle="--", color=color or ROLE_COLORS["theory"], label=label
    )


def save(fig, path) -> None:
    """Save a figure (PNG or PDF by the file's suffix), creating the folder."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
