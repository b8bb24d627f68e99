"""A disk cache of experiment results, keyed by everything that could change them.

A result is stored under a key made of the chapter, the experiment, the scale, the device type, the
seed and a hash of kdlib's source code, so a cache made by different code or parameters is never
reused: it simply has another key. Each file carries a SHA-256 checksum of its payload; a truncated
or corrupted file is detected, reported and recomputed, never used. Files are written atomically
(write to a temporary name, then rename), so an interrupted run leaves either the old file or none.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import RunConfig

__all__ = ["code_hash", "cache_key", "ResultCache"]

_MAGIC = b"KDLIBCACHE1\n"


def code_hash() -> str:
    """SHA-256 of every ``.py`` file of the installed kdlib package (path and content)."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_key(chapter: str, experiment: str, config: RunConfig, code: str | None = None) -> str:
    """A short hex key for one experiment run (see the module docstring)."""
    fields = {
        "chapter": chapter,
        "experiment": experiment,
        "scale": config.scale,
        "device": config.device.type,
        "seed": config.seed,
        "code": code if code is not None else code_hash(),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


class ResultCache:
    """Pickled results in a folder, one file per key.

    Parameters
    ----------
    folder : path
        Where files live; created on first write.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def path(self, name: str, key: str) -> Path:
        """The file of ``name`` with ``key``."""
        return self.folder / f"{name}-{key}.pkl"

    def load(self, name: str, key: str) -> tuple[bool, Any]:
        """``(True, result)`` if a valid file exists; ``(False, None)`` otherwise. A corrupted file
        is reported with a warning and removed."""
        path = self.path(name, key)
        if not path.exists():
            return False, None
        try:
            data = path.read_bytes()
            if not data.startswith(_MAGIC):
                raise ValueError("bad header")
            checksum, payload = data[len(_MAGIC) : len(_MAGIC) + 64], data[len(_MAGIC) + 65 :]
            if hashlib.sha256(payload).hexdigest().encode() != checksum:
                raise ValueError("checksum mismatch (truncated or corrupted)")
            return True, pickle.loads(payload)  # noqa: S301 - our own files, checksummed
        except Exception as err:  # any unreadable file is recomputed, never used
            warnings.warn(f"ignoring corrupted cache file {path}: {err}", stacklevel=2)
            path.unlink(missing_ok=True)
            return False, None

    def save(self, name: str, key: str, result: Any) -> Path:
        """Store ``result`` atomically; returns the file's path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        payload = pickle.dumps(result)
        checksum = hashlib.sha256(payload).hexdigest().encode()
        path = self.path(name, key)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(_MAGIC + checksum + b"\n" + payload)
        tmp.replace(path)
        return path

    def get_or_run(self, name: str, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """The cached result, or ``compute()`` stored then returned; second item: cache hit."""
        hit, result = self.load(name, key)
        if hit:
            return result, True
        result = compute()
        self.save(name, key, result)
        return result, False
