"""The book's experiments: one module per chapter, shared by notebooks, tests and the CLI.

Each chapter module defines

* ``CHAPTER``: a short id (``"soft-labels"``), used in the claims ledger and on the command line;
* ``TITLE``: the chapter's title;
* ``EXPERIMENTS``: a list of :class:`Experiment`, each splitting the work in three so that
  re-plotting or re-checking never needs retraining:

  ``run(config) -> result``
      The heavy part: builds data, trains replicas, computes the theory's prediction. The result
      is a picklable dataclass of NumPy arrays and floats (so it can be cached on disk).
  ``check(result, claims) -> None``
      States the theorem's claims on the result (``claims.close``, ``claims.ordered``, ...).
  ``plot(result) -> matplotlib Figure``
      The predicted-vs-measured figure.

A notebook calls the three parts one by one and tells the story between them;
``python -m kdlib reproduce`` calls them for every experiment, with a disk cache.

A chapter's run functions are decorated with :func:`stored_run`: with the environment variable
``KDLIB_RESULTS`` naming a folder, a notebook's ``chapter.run_x(config)`` loads the result that
``python -m kdlib reproduce --out <folder>`` stored for the same code, settings, scale, device and
seed instead of training again (and stores what it computes, for the next run). So a full-scale
book can be built from a GPU run's results:
``KDLIB_SCALE=full KDLIB_RESULTS=$PWD/results make book`` (absolute: a relative path is read
from the directory the notebook runs in, ``book/`` in a book build). Unset, nothing is read or
written.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import torch

from ..cache import ResultCache, active_shared_work, cache_key, code_hash, shared_work_cache
from ..claims import Claims
from ..config import RunConfig

__all__ = ["Experiment", "RESULTS_ENV", "chapter_code", "chapters", "get_chapter", "stored_run"]

#: The environment variable naming the results folder notebooks read and write (:func:`stored_run`).
RESULTS_ENV = "KDLIB_RESULTS"

R = TypeVar("R")


@dataclass(frozen=True)
class Experiment:
    """One experiment of a chapter (see the module docstring)."""

    name: str
    run: Callable[[RunConfig], Any]
    check: Callable[[Any, Claims], None]
    plot: Callable[[Any], Any] | None = None


def chapters() -> dict[str, ModuleType]:
    """All chapter modules, keyed by their ``CHAPTER`` id, in book order (modules may set
    ``ORDER``, an int; default 100): those of this package, plus any importable modules named in
    the environment variable ``KDLIB_EXTRA_CHAPTERS`` (comma-separated; for your own chapters)."""
    names = [
        f"{__name__}.{info.name}"
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    ]
    names += [n.strip() for n in os.environ.get("KDLIB_EXTRA_CHAPTERS", "").split(",") if n.strip()]
    found = {}
    for name in names:
        module = importlib.import_module(name)
        if hasattr(module, "CHAPTER") and hasattr(module, "EXPERIMENTS"):
            found[module.CHAPTER] = module
    return dict(sorted(found.items(), key=lambda item: getattr(item[1], "ORDER", 100)))


def get_chapter(chapter: str) -> ModuleType:
    """The module of ``chapter``; a ``ValueError`` lists the known ids otherwise."""
    known = chapters()
    if chapter not in known:
        raise ValueError(f"unknown chapter {chapter!r}; known chapters: {sorted(known)}")
    return known[chapter]


def chapter_code(module: ModuleType) -> str:
    """What a chapter's stored results depend on besides the run's configuration: the hash of its
    source (:func:`~kdlib.cache.code_hash`: its module and the kdlib modules it imports) and of
    its module-level settings, so that a setting changed in a running session
    (``chapter.QUICK = dataclasses.replace(chapter.QUICK, steps=100)``) is never served a result
    made with the old one. Settings are the module's plain values: numbers, strings, dtypes, and
    tuples, lists, dicts and dataclass instances made of them."""
    settings = sorted(
        (name, repr(value))
        for name, value in vars(module).items()
        if not name.startswith("__") and _is_plain(value)
    )
    digest = hashlib.sha256(code_hash(getattr(module, "__file__", None)).encode())
    digest.update(repr(settings).encode())
    return digest.hexdigest()


def _is_plain(value: Any) -> bool:
    """Whether ``repr(value)`` shows all of a value and is the same in every process (no
    addresses, no set ordering)."""
    if value is None or isinstance(value, int | float | str | torch.dtype):
        return True
    if isinstance(value, tuple | list):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_is_plain(k) and _is_plain(v) for k, v in value.items())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return all(_is_plain(getattr(value, f.name)) for f in dataclasses.fields(value))
    return False


def stored_run(run: Callable[[RunConfig], R]) -> Callable[..., R]:
    """Decorate a chapter's run function so that, with ``$KDLIB_RESULTS`` set, its result is
    read from and written to ``$KDLIB_RESULTS/<scale>/<chapter>/cache``: the files and keys of
    ``python -m kdlib reproduce --out $KDLIB_RESULTS`` (the experiment's name, scale, device
    type, seed and :func:`chapter_code`), checksummed and written atomically; the chapter's
    shared work and training checkpoints go there too, so an interrupted notebook resumes.

    The decorated function computes as before when ``$KDLIB_RESULTS`` is unset or empty, and
    inside ``reproduce``, which caches the call itself. Called with more than the configuration
    (other arguments: another result) it computes its result without storing it, while the
    chapter's shared work (chapter 5's trained members, say) is still read and stored.

    Functions replaced in a running session are not part of the key (the code hashed is the code
    on disk): unset ``KDLIB_RESULTS`` while experimenting that way.
    """

    @functools.wraps(run)
    def stored(config: RunConfig, *args: Any, **kwargs: Any) -> R:
        folder = os.environ.get(RESULTS_ENV, "").strip()
        if not folder or active_shared_work():
            return run(config, *args, **kwargs)
        module = sys.modules[run.__module__]
        name = _experiment_name(module, stored, run)
        code = chapter_code(module)
        cache = ResultCache(Path(folder) / config.scale / module.CHAPTER / "cache")
        with shared_work_cache(cache.folder, code):
            if args or kwargs:
                return run(config, *args, **kwargs)
            key = cache_key(module.CHAPTER, name, config, code)
            result, hit = cache.get_or_run(name, key, lambda: run(config))
        if hit:
            # stdout, not stderr: the book build turns a cell's stderr into a warning (an error
            # under -W), and a reader should see which results were loaded rather than computed
            print(f"{module.CHAPTER}/{name}: stored result read from {cache.path(name, key)}")
        return result

    stored.stores_results = True  # type: ignore[attr-defined]  # marks the outermost wrapper
    return stored


def _experiment_name(module: ModuleType, stored: Callable, run: Callable) -> str:
    """The name ``reproduce`` stores ``run``'s result under: that of the first experiment of the
    chapter that runs it, else the function's name without ``run_``."""
    for experiment in getattr(module, "EXPERIMENTS", ()):
        function = experiment.run
        while function is not None:  # the run may be wrapped further (functools.wraps)
            if function is stored:
                return experiment.name
            function = getattr(function, "__wrapped__", None)
    return run.__name__.removeprefix("run_")
