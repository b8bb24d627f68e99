"""Shared test settings: quick scale on the CPU, a throw-away claims ledger, each chapter executed
once per session (its nbmake test executes it, the book build renders that: ``book_session.py``),
and the order in which pytest-xdist hands the test files out."""

import os
from pathlib import Path

import pytest
import torch
from book_session import (
    BOOK_MODULES,
    build_session_book,
    chapter_ledger,
    executed_folder,
    keeping_notebook_run,
    results_folder,
    session_folder,
    sort_collection,
)

os.environ.setdefault("KDLIB_SCALE", "quick")
os.environ.setdefault("KDLIB_DEVICE", "cpu")
# Results are stored only in this session's folder, and only where a test asks for it
# (book_session.sharing_chapter_results): never in a folder of the user's own.
os.environ.pop("KDLIB_RESULTS", None)


@pytest.fixture(autouse=True)
def _isolated_ledger(tmp_path, monkeypatch):
    """Claims checked in tests go to a temporary ledger, never the book's."""
    monkeypatch.setenv("KDLIB_LEDGER", str(tmp_path / "claims.json"))


@pytest.fixture(autouse=True, scope="session")
def _deterministic():
    torch.use_deterministic_algorithms(True, warn_only=True)


# -- chapters executed by nbmake, kept for the book build -------------------------------------


def pytest_sessionstart(session):
    """Under ``--nbmake``, keep each notebook nbmake executes for the book build."""
    config = session.config
    if not config.getoption("nbmake", default=False):
        return
    import nbmake.pytest_items

    folder = executed_folder(config)
    nbmake.pytest_items.NotebookRun = keeping_notebook_run(
        nbmake.pytest_items.NotebookRun, folder, chapter_ledger(config), results_folder(config)
    )


def pytest_collection_modifyitems(session, config, items):
    """Chapters first, then the book's reader modules, then the unit-test files, largest first."""
    sort_collection(items)


@pytest.fixture(scope="session")
def built_book(request):
    """The book built once per test session (shared by pytest-xdist workers through a lock):
    ``(html_folder, returncode, log)``."""
    from filelock import FileLock

    shared = session_folder(request.config) / "shared-book"
    with FileLock(str(shared) + ".lock"):
        marker = shared / "result.txt"
        if marker.exists():
            code, _, log = marker.read_text().partition("\n")
            return shared / "_build" / "html", int(code), log
        shared.mkdir(exist_ok=True)
        html, code, log = build_session_book(request.session, shared)
        marker.write_text(f"{code}\n{log}")
        return html, code, log


def pytest_xdist_make_scheduler(config, log):
    """Under ``pytest -n N``: one worker per test file (a module's fixtures, some of which train
    for a minute, then run once per session), and the book's two reader modules on one worker,
    handed out in the order :func:`pytest_collection_modifyitems` gives.

    A custom scope rather than ``--dist loadgroup``: pytest-xdist 3.8 marks a group by editing
    ``item._nodeid``, which pytest 9.2 no longer reads, so the groups are silently ignored."""
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # keep our order, not largest-file-first

    class BookAwareFileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "built-book" if Path(path).name in BOOK_MODULES else path

    return BookAwareFileScheduling(config, log)
