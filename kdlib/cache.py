"""A disk cache of experiment results, keyed by everything that could change them.

A result is stored under a key made of the chapter, the experiment, the scale, the device type, the
seed and a hash of the source code the chapter runs (its module and every kdlib module it imports,
directly or not: :func:`code_hash`), so a cache made by different code or parameters is never
reused: it simply has another key. Editing one chapter's code does not invalidate another chapter's
hours-long full-scale results. Each file carries a SHA-256 checksum of its payload; a truncated
or corrupted file is detected, reported and recomputed, never used. Files are written atomically
(write to a temporary name, then rename), so an interrupted run leaves either the old file or none.

Work that several experiments of a chapter share (an ensemble's trained members, a margin solve,
a grid of trained students) is cached too, while ``reproduce`` runs the chapter
(:func:`shared_work_cache`): a ``--only`` run, or a run resumed after an interruption, reuses
what an earlier run trained instead of training it again. In a notebook, where one process runs
every experiment, the chapters' in-memory caches do that job and nothing is written.

A long training run inside that work also saves its state as it goes (:func:`training_checkpoint`,
used by :func:`kdlib.train.train`): every couple of minutes, on ``Ctrl-C`` and on ``SIGTERM``,
the weights, the step reached and what was recorded so far. A run stopped mid-training (a time
limit, a killed job) resumes at the step it had saved, and gives the numbers an uninterrupted run
gives. A checkpoint is removed once the result that needed it is stored.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import pickle
import time
import warnings
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from .config import RunConfig

__all__ = [
    "code_hash",
    "cache_key",
    "ResultCache",
    "TrainingCheckpoint",
    "active_shared_work",
    "shared_work",
    "shared_work_cache",
    "training_checkpoint",
]

T = TypeVar("T")

_MAGIC = b"KDLIBCACHE1\n"


def code_hash(module_file: str | os.PathLike | None = None, root: Path | None = None) -> str:
    """SHA-256 of source files (relative path and content).

    Parameters
    ----------
    module_file : path, optional
        A module (a chapter's experiments): hash it and every module of the package it imports,
        following ``import`` statements anywhere in the files (those inside functions too), plus
        what importing the package itself runs (its ``__init__``). A module outside the package
        is hashed with the whole package. Default: every ``.py`` file of the package.
    root : Path, optional
        The package folder (default: kdlib's).
    """
    root = Path(__file__).resolve().parent if root is None else Path(root).resolve()
    if module_file is None:
        files = set(root.rglob("*.py"))
    else:
        start = Path(module_file).resolve()
        if start.is_relative_to(root):
            files = _import_closure([start, root / "__init__.py"], root)
        else:
            files = set(root.rglob("*.py")) | {start}
    digest = hashlib.sha256()
    for path in sorted(files):
        name = path.relative_to(root) if path.is_relative_to(root) else path
        digest.update(str(name).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _import_closure(starts: list[Path], root: Path) -> set[Path]:
    """The package's files that ``starts`` import, transitively (parent ``__init__`` included)."""
    seen: set[Path] = set()
    todo = [p for p in starts if p.exists()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(_package_inits(path, root))
        todo.extend(_imported_files(path, root))
    return seen


def _package_inits(path: Path, root: Path) -> list[Path]:
    """``__init__.py`` of every package between ``root`` and ``path`` (run when it is imported)."""
    inits, folder = [], path.parent
    while folder.is_relative_to(root):
        init = folder / "__init__.py"
        if init.exists():
            inits.append(init)
        if folder == root:
            break
        folder = folder.parent
    return inits


def _imported_files(path: Path, root: Path) -> list[Path]:
    """Files of the package that ``path``'s import statements name."""
    package = root.name
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [a.name.split(".") for a in node.names if a.name.split(".")[0] == package]
            targets = [t[1:] for t in targets]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(path.parent.relative_to(root).parts)
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            elif node.module and node.module.split(".")[0] == package:
                base = []
            else:
                continue
            module = base + (node.module.split(".") if node.module else [])
            if node.level == 0:
                module = module[1:]  # drop the package name itself
            targets = [module] + [module + [a.name] for a in node.names]
        for parts in targets:
            for candidate in (root.joinpath(*parts, "__init__.py"), root.joinpath(*parts)):
                file = candidate if candidate.suffix == ".py" else candidate.with_suffix(".py")
                if parts and file.exists():
                    found.append(file)
                    break
    return found


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
        try:
            tmp.write_bytes(_MAGIC + checksum + b"\n" + payload)
            tmp.replace(path)
        except BaseException:  # interrupted or failed: leave the old file, not a partial one
            tmp.unlink(missing_ok=True)
            raise
        return path

    def get_or_run(self, name: str, key: str, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """The cached result, or ``compute()`` stored then returned; second item: cache hit.

        Training checkpoints opened while ``compute`` runs (:func:`training_checkpoint`) are
        removed once its result is stored: they are kept only while that result is not."""
        hit, result = self.load(name, key)
        if hit:
            return result, True
        opened: list[TrainingCheckpoint] = []
        token = _OPENED.set(opened)
        try:
            result = compute()
        finally:
            _OPENED.reset(token)
        self.save(name, key, result)
        for checkpoint in opened:
            checkpoint.discard()
        return result, False


class TrainingCheckpoint:
    """The saved state of one training run, so that a stopped run resumes where it was.

    :func:`kdlib.train.train` calls :meth:`load` before its first step, :meth:`due` after every
    step (true every ``every_seconds``), and :meth:`save` when due, when interrupted and when
    done. Made by :func:`training_checkpoint`; files are atomic and checksummed like results.

    Parameters
    ----------
    cache : ResultCache
        Where the file lives.
    name, key : str
        The file's name and key (``checkpoint-<name>-<key>.pkl``).
    every_seconds : float
        Time between saves during training (``>= 0``; 0 saves after every step).
    """

    def __init__(self, cache: ResultCache, name: str, key: str, every_seconds: float = 120.0):
        if isinstance(every_seconds, bool) or not isinstance(every_seconds, int | float):
            raise TypeError(f"every_seconds must be a number >= 0; got {every_seconds!r}")
        if not every_seconds >= 0:
            raise ValueError(f"every_seconds must be >= 0; got {every_seconds}")
        self.cache, self.name, self.key = cache, f"checkpoint-{name}", key
        self.every_seconds = float(every_seconds)
        self._last = time.monotonic()

    @property
    def path(self) -> Path:
        """The checkpoint's file."""
        return self.cache.path(self.name, self.key)

    def load(self) -> dict | None:
        """The saved state, or ``None`` when there is none (or it was corrupted)."""
        hit, state = self.cache.load(self.name, self.key)
        return state if hit else None

    def due(self) -> bool:
        """Whether ``every_seconds`` have passed since the last save (or since creation)."""
        return time.monotonic() - self._last >= self.every_seconds

    def save(self, state: dict) -> None:
        """Store ``state`` (plain Python and CPU tensors) atomically."""
        self.cache.save(self.name, self.key, state)
        self._last = time.monotonic()

    def discard(self) -> None:
        """Remove the file (the result it served is stored)."""
        self.path.unlink(missing_ok=True)


#: The folder and code hash :func:`shared_work` caches under, set by :func:`shared_work_cache`.
_SHARED: ContextVar[tuple[ResultCache, str] | None] = ContextVar("kdlib_shared_work", default=None)
#: The checkpoints opened inside the :meth:`ResultCache.get_or_run` computation now running.
_OPENED: ContextVar[list[TrainingCheckpoint] | None] = ContextVar("kdlib_opened", default=None)


@contextlib.contextmanager
def shared_work_cache(folder: str | os.PathLike, code: str) -> Iterator[ResultCache]:
    """While active, :func:`shared_work` stores and reuses results in ``folder``.

    Parameters
    ----------
    folder : path
        The chapter's cache folder.
    code : str
        The hash of the code that computes the work (:func:`code_hash` of the chapter's module),
        part of every key: work done by other code is never reused.
    """
    cache = ResultCache(folder)
    token = _SHARED.set((cache, code))
    try:
        yield cache
    finally:
        _SHARED.reset(token)


def active_shared_work() -> bool:
    """Whether a :func:`shared_work_cache` is active (``reproduce`` is caching this run)."""
    return _SHARED.get() is not None


def shared_work(name: str, inputs: Any, compute: Callable[[], T]) -> T:
    """``compute()``, cached on disk when a :func:`shared_work_cache` is active.

    Parameters
    ----------
    name : str
        What the work is (part of the file name), e.g. ``"members"``.
    inputs : object
        Everything the result depends on besides the code (a run's configuration, a setting); its
        ``repr`` is part of the key, so it must show every field that matters (dataclasses do).
    compute : callable
        Computes the result; called only on a miss, and its result is stored only if it returns
        (an interrupted computation stores nothing).
    """
    active = _SHARED.get()
    if active is None:
        return compute()
    cache, code = active
    result, _ = cache.get_or_run(f"shared-{name}", _work_key(name, inputs, code), compute)
    return result


def _work_key(name: str, inputs: Any, code: str) -> str:
    fields = {"name": name, "inputs": repr(inputs), "code": code}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def training_checkpoint(
    name: str, inputs: Any, every_seconds: float = 120.0
) -> TrainingCheckpoint | None:
    """A :class:`TrainingCheckpoint` for one training run, when a :func:`shared_work_cache` is
    active (under ``reproduce``); ``None`` otherwise (a notebook: nothing is written).

    Parameters
    ----------
    name : str
        What is trained, e.g. ``"members"`` (part of the file name).
    inputs : object
        Everything the run depends on besides the code, as for :func:`shared_work`: its ``repr``
        is part of the key, so a checkpoint is resumed only by the run that saved it.
    every_seconds : float
        Time between saves during training.
    """
    active = _SHARED.get()
    if active is None:
        return None
    cache, code = active
    checkpoint = TrainingCheckpoint(cache, name, _work_key(name, inputs, code), every_seconds)
    opened = _OPENED.get()
    if opened is not None:
        opened.append(checkpoint)
    return checkpoint
