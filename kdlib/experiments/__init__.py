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
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..claims import Claims
from ..config import RunConfig

__all__ = ["Experiment", "chapters", "get_chapter"]


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
