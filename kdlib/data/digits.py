"""scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), bundled with the package.

Used at quick scale because it needs no download: the book builds and its tests run offline.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Split", "load_digits_split", "digit_images"]


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
    dtype : torch.dtype
        Floating-point dtype of the features.

    Raises
    ------
    ValueError
        If ``test_fraction`` leaves a class with no training or no test image (each class has
        about 180 images, so roughly ``test_fraction`` in ``[0.003, 0.997]`` is needed).
    """
    from sklearn.datasets import load_digits

    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real):
        raise TypeError(f"test_fraction must be a real number; got {type(test_fraction).__name__}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype; got {dtype!r}")
    if classes is not None:
        try:
            classes = tuple(classes)
        except TypeError:
            raise TypeError(
                f"classes must be a tuple of ints; got {type(classes).__name__}"
            ) from None
        if any(isinstance(c, bool) or not isinstance(c, numbers.Integral) for c in classes):
            raise TypeError(f"classes must be a tuple of ints; got {classes!r}")
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
        n_test = int(round(test_fraction * len(idx)))
        if not 0 < n_test < len(idx):
            raise ValueError(
                f"test_fraction={test_fraction} leaves digit {classes[label]} with "
                f"{len(idx) - n_test} training and {n_test} test images; both must be >= 1"
            )
        test_mask[idx[:n_test]] = True
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


def digit_images(
    n_train: int = 1000, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits as one-channel images ``(n, 1, 8, 8)`` in ``[0, 1]``, split into
    about ``n_train`` training images (each class keeps its share, drawn with ``seed``) and the
    rest for testing.

    Returns
    -------
    x_train, y_train, x_test, y_test : Tensor
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    total = labels.size
    if isinstance(n_train, bool) or not isinstance(n_train, int) or not 10 <= n_train <= total - 10:
        raise ValueError(f"n_train must be an int in 10..{total - 10}; got {n_train!r}")
    rng = np.random.default_rng(seed)
    train = np.zeros(total, dtype=bool)
    for c in range(10):  # each class keeps its share of the training set
        members = rng.permutation(np.flatnonzero(labels == c))
        train[members[: round(n_train * members.size / total)]] = True
    images = torch.as_tensor(digits.images / 16.0, dtype=dtype)[:, None]
    y = torch.as_tensor(labels)
    keep, rest = torch.as_tensor(train), torch.as_tensor(~train)
    return images[keep], y[keep], images[rest], y[rest]
