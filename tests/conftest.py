"""Shared test settings: quick scale on the CPU, and a throw-away claims ledger."""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("KDLIB_SCALE", "quick")
os.environ.setdefault("KDLIB_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _isolated_ledger(tmp_path, monkeypatch):
    """Claims checked in tests go to a temporary ledger, never the book's."""
    monkeypatch.setenv("KDLIB_LEDGER", str(tmp_path / "claims.json"))


@pytest.fixture(autouse=True, scope="session")
def _deterministic():
    torch.use_deterministic_algorithms(True, warn_only=True)


ROOT = Path(__file__).resolve().parents[1]


def _build_book(out):
    """Build the book strictly (warnings are errors) into ``out``; returns the HTML folder."""
    import subprocess
    import sys

    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    # a fresh ledger for this build: the appendix lists exactly the claims this build checked
    env = dict(os.environ, KDLIB_SCALE="quick", KDLIB_LEDGER=str(out / "claims.json"))
    proc = subprocess.run(
        [
            str(jupyter_book),
            "build",
            str(ROOT),
            "--path-output",
            str(out),
            "-W",
            "-n",
            "--keep-going",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    log = proc.stdout[-8000:] + proc.stderr[-8000:]
    return out / "_build" / "html", proc.returncode, log


@pytest.fixture(scope="session")
def built_book(tmp_path_factory, worker_id):
    """The book built once per test session (shared by pytest-xdist workers through a lock):
    ``(html_folder, returncode, log)``. Building executes every chapter at quick scale."""
    from filelock import FileLock

    if worker_id == "master":
        return _build_book(tmp_path_factory.mktemp("book"))
    shared = tmp_path_factory.getbasetemp().parent / "shared-book"
    with FileLock(str(shared) + ".lock"):
        marker = shared / "result.txt"
        if marker.exists():
            code, _, log = marker.read_text().partition("\n")
            return shared / "_build" / "html", int(code), log
        shared.mkdir(exist_ok=True)
        html, code, log = _build_book(shared)
        marker.write_text(f"{code}\n{log}")
        return html, code, log


#: Test modules that read the session's built book: under pytest-xdist they run on one worker,
#: so the other never waits on the build's lock.
BOOK_MODULES = {"test_book.py", "test_browser.py"}


def pytest_xdist_make_scheduler(config, log):
    """Under ``pytest -n N``: one worker per test file (a module's fixtures, some of which train
    for a minute, then run once per session), and the book's two reader modules on one worker.

    A custom scope rather than ``--dist loadgroup``: pytest-xdist 3.8 marks a group by editing
    ``item._nodeid``, which pytest 9.2 no longer reads, so the groups are silently ignored."""
    from xdist.scheduler import LoadScopeScheduling

    class BookAwareFileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "built-book" if Path(path).name in BOOK_MODULES else path

    return BookAwareFileScheduling(config, log)
