"""Shared test settings: quick scale on the CPU, and a throw-away claims ledger.

Every chapter is executed once per test session. Its nbmake test executes it (and keeps the
executed notebook); the strict book build (:func:`built_book`) then renders those executed
notebooks instead of running them a second time, and executes only the claims appendix, which lists
the claims the session's chapters recorded. A chapter that failed under nbmake is executed again
by the build, so it fails there too. Without ``--nbmake`` the build executes every chapter itself.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("KDLIB_SCALE", "quick")
os.environ.setdefault("KDLIB_DEVICE", "cpu")

ROOT = Path(__file__).resolve().parents[1]

#: The chapter the build always executes itself: it reads the ledger every other chapter wrote.
LEDGER_CHAPTER = "90_claims_ledger"

#: What a book build needs from the repository (``tools`` holds a local Sphinx extension).
BOOK_SOURCES = ("_config.yml", "_toc.yml", "book", "tools")

#: Test modules that read the session's built book: under pytest-xdist they run on one worker,
#: so the other never waits on the build's lock.
BOOK_MODULES = {"test_book.py", "test_browser.py"}


@pytest.fixture(autouse=True)
def _isolated_ledger(tmp_path, monkeypatch):
    """Claims checked in tests go to a temporary ledger, never the book's."""
    monkeypatch.setenv("KDLIB_LEDGER", str(tmp_path / "claims.json"))


@pytest.fixture(autouse=True, scope="session")
def _deterministic():
    torch.use_deterministic_algorithms(True, warn_only=True)


def _session_folder(config) -> Path:
    """A folder shared by every pytest-xdist worker of this session (the controller's temporary
    folder), or this process's own when there are no workers."""
    base = config._tmp_path_factory.getbasetemp()
    return base.parent if hasattr(config, "workerinput") else base


# -- chapters executed by nbmake, kept for the book build -------------------------------------


def _executed_folder(config) -> Path:
    return _session_folder(config) / "executed-chapters"


def _chapter_ledger(config) -> Path:
    """The ledger every chapter of the session writes to (and the appendix reads)."""
    return _executed_folder(config) / "claims.json"


def _keeping_notebook_run(base, folder: Path, ledger: Path):
    """nbmake's ``NotebookRun``, extended to record the session's claims in ``ledger`` and to
    leave in ``folder`` either the executed notebook (``<name>.ipynb``) or ``<name>.failed``."""
    import nbformat

    class KeepingNotebookRun(base):
        def execute(self):
            name = Path(self.filename).stem
            previous = os.environ.get("KDLIB_LEDGER")
            os.environ["KDLIB_LEDGER"] = str(ledger)  # inherited by the notebook's kernel
            result = None
            try:
                result = super().execute()
                return result
            finally:
                _restore_env("KDLIB_LEDGER", previous)
                folder.mkdir(parents=True, exist_ok=True)
                if result is not None and result.error is None:
                    partial = folder / f"{name}.ipynb.part"
                    nbformat.write(result.nb, str(partial))
                    partial.replace(folder / f"{name}.ipynb")  # atomic: never read half-written
                else:
                    (folder / f"{name}.failed").touch()

    return KeepingNotebookRun


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def pytest_sessionstart(session):
    """Under ``--nbmake``, keep each notebook nbmake executes for the book build."""
    config = session.config
    if not config.getoption("nbmake", default=False):
        return
    import nbmake.pytest_items

    folder = _executed_folder(config)
    nbmake.pytest_items.NotebookRun = _keeping_notebook_run(
        nbmake.pytest_items.NotebookRun, folder, _chapter_ledger(config)
    )


def _is_chapter_run(item) -> bool:
    return getattr(item, "nbmake", False) and Path(item.path).parent.name == "book"


def pytest_collection_modifyitems(session, config, items):
    """Chapters first (the ledger appendix last among them), then the book's reader modules,
    then the unit-test files, largest first: the build reuses the chapters nbmake executed, so it
    should start as soon as they are done, while the unit tests keep the other worker busy."""
    per_file: dict[Path, int] = {}
    for item in items:
        per_file[Path(item.path)] = per_file.get(Path(item.path), 0) + 1

    def order(item):
        path = Path(item.path)
        if _is_chapter_run(item):
            return (0, path.stem == LEDGER_CHAPTER, 0)
        if path.name in BOOK_MODULES:
            return (1, False, 0)
        return (2, False, -per_file[path])

    items.sort(key=order)  # stable: within a file (or group) the collection order is kept


def _chapters_run_by_nbmake(session) -> list[str]:
    return sorted(
        {Path(i.path).stem for i in session.items if _is_chapter_run(i)} - {LEDGER_CHAPTER}
    )


def _wait_for_chapters(folder: Path, names: list[str], timeout_s: float = 1800) -> dict[str, Path]:
    """The executed notebooks of ``names``, once each has either finished or failed under nbmake
    (on another worker, perhaps). A failed or missing chapter is left out: the build executes it."""
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending and time.monotonic() < deadline:
        pending = {
            n
            for n in pending
            if not any((folder / f"{n}{s}").exists() for s in (".ipynb", ".failed"))
        }
        if pending:
            time.sleep(1)
    return {n: folder / f"{n}.ipynb" for n in names if (folder / f"{n}.ipynb").exists()}


def _stage_book(out: Path, executed: dict[str, Path]) -> Path:
    """A copy of the book's sources in ``out`` with the executed chapters in place of the source
    notebooks, and those chapters excluded from execution."""
    import yaml

    source = out / "source"
    for name in BOOK_SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, source / name)
    for name, notebook in executed.items():
        shutil.copy(notebook, source / "book" / f"{name}.ipynb")
    config = yaml.safe_load((source / "_config.yml").read_text())
    config["execute"]["exclude_patterns"] = [f"book/{name}.ipynb" for name in executed]
    (source / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return source


def _build_book(out: Path, source: Path = ROOT, ledger: Path | None = None):
    """Build the book in ``source`` strictly (warnings are errors) into ``out``; returns the HTML
    folder, the return code and the log's tail. ``ledger``: where the chapters' claims are
    (default: a fresh ledger, filled by this build's own execution of the chapters)."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    ledger = ledger or out / "claims.json"
    env = dict(os.environ, KDLIB_SCALE="quick", KDLIB_LEDGER=str(ledger))
    proc = subprocess.run(
        [
            str(jupyter_book),
            "build",
            str(source),
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


def _build_session_book(session, out: Path):
    """The session's book: from the chapters nbmake executed where there are any, else from
    scratch."""
    names = _chapters_run_by_nbmake(session)
    if not names:
        return _build_book(out)
    executed = _wait_for_chapters(_executed_folder(session.config), names)
    source = _stage_book(out, executed)
    return _build_book(out, source, ledger=_chapter_ledger(session.config))


@pytest.fixture(scope="session")
def built_book(request):
    """The book built once per test session (shared by pytest-xdist workers through a lock):
    ``(html_folder, returncode, log)``."""
    from filelock import FileLock

    shared = _session_folder(request.config) / "shared-book"
    with FileLock(str(shared) + ".lock"):
        marker = shared / "result.txt"
        if marker.exists():
            code, _, log = marker.read_text().partition("\n")
            return shared / "_build" / "html", int(code), log
        shared.mkdir(exist_ok=True)
        html, code, log = _build_session_book(request.session, shared)
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
