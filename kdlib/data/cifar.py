"""CIFAR-10, read from a copy on disk (full scale only; never downloaded by kdlib).

Chapter 4's deep-network section trains small convolutional students on CIFAR-10 at full scale
(the quick scale uses scikit-learn's bundled 8x8 digits as images,
:func:`kdlib.data.digits.digit_images`).

Where the data are looked for
-----------------------------
The ``path`` argument, else the environment variable ``KDLIB_CIFAR10``, else
``~/.cache/kdlib/cifar-10-batches-py``. It may name the folder ``cifar-10-batches-py`` of the
"python version" of the data set (``data_batch_1`` ... ``data_batch_5``, ``test_batch``), or a
folder holding it (torchvision's ``root``: ``torchvision.datasets.CIFAR10(root, download=True)``
leaves it there).

The batches are pickles. Unpickling runs code named in the file, so they are read with an
unpickler that accepts only what a CIFAR batch holds (dicts, lists, bytes, and the numpy array
reconstructors) and refuses anything else.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

__all__ = ["CIFAR10_ENV", "CIFAR10_CLASSES", "find_cifar10", "load_cifar10"]

#: Environment variable naming the CIFAR-10 folder.
CIFAR10_ENV = "KDLIB_CIFAR10"
#: The ten class names, in label order.
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_FOLDER = "cifar-10-batches-py"
_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST = ("test_batch",)
_HOW_TO = (
    "kdlib does not download CIFAR-10. Get the python version (e.g. torchvision.datasets."
    f"CIFAR10(root, download=True)) and pass its folder as path=..., set ${CIFAR10_ENV}, or put "
    f"{_FOLDER} in ~/.cache/kdlib."
)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays and plain containers."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR-10 batch holds only arrays and lists"
            )
        return super().find_class(module, name)


def find_cifar10(path: str | os.PathLike | None = None) -> Path:
    """The ``cifar-10-batches-py`` folder: ``path``, else ``$KDLIB_CIFAR10``, else the cache.

    Raises
    ------
    FileNotFoundError
        If the folder (or one of its six batches) is missing; the message says how to get it.
    """
    if path is None:
        path = os.environ.get(CIFAR10_ENV) or Path.home() / ".cache" / "kdlib" / _FOLDER
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    location = Path(path).expanduser()
    for folder in (location, location / _FOLDER):
        if all((folder / name).is_file() for name in _TRAIN + _TEST):
            return folder
    raise FileNotFoundError(f"no CIFAR-10 batches in {str(location)!r}. {_HOW_TO}")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as handle:
        try:
            batch = _BatchUnpickler(handle, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise ValueError(f"{str(path)!r} is not a CIFAR-10 batch: {err}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{str(path)!r} is not a CIFAR-10 batch (no data and labels)")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{str(path)!r}: data must be uint8 of shape (n, 3072); got {data.shape}")
    if labels.shape != (data.shape[0],) or labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{str(path)!r}: labels must be n values in 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(path: str | os.PathLike | None = None):
    """The arrays ``(x_train, y_train, x_test, y_test)``: uint8 images ``(n, 3, 32, 32)`` (the
    channels are R, G, B) and int64 labels, 50,000 training and 10,000 test images."""
    folder = find_cifar10(path)
    arrays = []
    for names in (_TRAIN, _TEST):
        parts = [_read_batch(folder / name) for name in names]
        arrays += [np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])]
    return tuple(arrays)
