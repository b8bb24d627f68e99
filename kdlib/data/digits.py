"""scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), bundled with the package.

Used at quick scale because it needs no download: the book builds and its tests run offline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Split", "load_digits_split"]


@dataclass
class Split:
    """A train/test split as tensors.

    Attributes
    ----------
    x_train : Tensor, shape ``(n_train, d)``
    y_train : LongTensor, shape ``(n_train,)``
    x_test : Tensor, shape ``(n_test, d)``
    y_test : LongTensor, shape ``(n_test,)``
    classes : tuple of int
        The original digit of each label ``0..k-1``.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[int, ...]

    @property
    def n_classes(self) -> int:
        """Number of classes k."""
        return len(self.classes)

    def to(self, device: torch.device | str) -> Split:
        """The same split on ``device``."""
        return Split(
            self.x_train.to(device),
            self.y_train.to(device),
            self.x_test.to(device),
            self.y_test.to(device),
            self.classes,
        )


def load_digits_split(
    test_fraction: float = 0.3,
    classes: tuple[int, ...] | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    standardize: bool = True,
) -> Split:
    """Load the digits, keep ``classes`` (default all ten), split, and standardise.

    Features are scaled to [0, 1] (pixel / 16), then, if ``standardize``, centred and scaled with
    the *training* mean and standard deviation (constant pixels are left at zero).

    Parameters
    ----------
    test_fraction : float
        Fraction of the images held out, in (0, 1).
    classes : tuple of int, optional
        Digits to keep, relabelled ``0..k-1`` in the given order; at least two distinct digits.
    seed : int
        Seed of the stratified shuffle.
    """
    from sklearn.datasets import load_digits

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    classes = tuple(range(10)) if classes is None else tuple(int(c) for c in classes)
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise ValueError(f"classes must be at least two distinct digits; got {classes}")
    if any(c not in range(10) for c in classes):
        raise ValueError(f"classes must be digits 0..9; got {classes}")
    bunch = load_digits()
    keep = np.isin(bunch.target, classes)
    x = bunch.data[keep] / 16.0
    relabel = {c: i for i, c in enumerate(classes)}
    y = np.array([relabel[t] for t in bunch.target[keep]])
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(y), dtype=bool)
    for label in range(len(classes)):  # stratified
        idx = rng.permutation(np.flatnonzero(y == label))
        test_mask[idx[: int(round(test_fraction * len(idx)))]] = True
    x_train, x_test = x[~test_mask], x[test_mask]
    if standardize:
        mean, std = x_train.mean(0), x_train.std(0)
        std[std == 0] = 1.0
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return Split(
        torch.as_tensor(x_train, dtype=dtype),
        torch.as_tensor(y[~test_mask]),
        torch.as_tensor(x_test, dtype=dtype),
        torch.as_tensor(y[test_mask]),
        classes,
    )
