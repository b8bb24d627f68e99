"""Each chapter executed once per test session (used by ``conftest.py``).

nbmake's run of a chapter keeps the executed notebook in the session's folder and records the
chapter's claims in one session ledger (:func:`keeping_notebook_run`). The strict book build
(:func:`build_session_book`) then stages the book's sources with those notebooks in place,
excludes them from execution, and executes only the claims appendix (which lists the session's
claims) and any chapter that failed under nbmake, which then fails the build as well. Without
``--nbmake`` the build executes every chapter itself.

A module of its own rather than part of ``conftest.py``: tests import it by name, and
``tests/data/classroom`` has a ``conftest.py`` of its own that ``import conftest`` could find.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: kdlib's results folder variable (``kdlib.experiments.RESULTS_ENV``; not imported here, so
#: that the scheduler's hooks need no torch).
RESULTS_ENV = "KDLIB_RESULTS"

#: The chapter the build always executes itself: it reads the ledger every other chapter wrote.
LEDGER_CHAPTER = "90_claims_ledger"

#: What a book build needs from the repository (``tools`` holds a local Sphinx extension).
BOOK_SOURCES = ("_config.yml", "_toc.yml", "book", "tools")

#: Test modules that read the session's built book: under pytest-xdist they run on one worker,
#: so the other never waits on the build's lock.
BOOK_MODULES = {"test_book.py", "test_browser.py"}


def session_folder(config) -> Path:
    """A folder shared by every pytest-xdist worker of this session (the controller's temporary
    folder), or this process's own when there are no workers."""
    base = config._tmp_path_factory.getbasetemp()
    return base.parent if hasattr(config, "workerinput") else base


def executed_folder(config) -> Path:
    """Where nbmake's executed chapters (or their ``.failed`` markers) are kept this session."""
    return session_folder(config) / "executed-chapters"


def chapter_ledger(config) -> Path:
    """The ledger every chapter of the session writes to (and the appendix reads)."""
    return executed_folder(config) / "claims.json"


def results_folder(config) -> Path:
    """Where this session's chapter runs store their results (``$KDLIB_RESULTS``)."""
    return session_folder(config) / "chapter-results"


@contextlib.contextmanager
def sharing_chapter_results(config):
    """While active, the chapters' run functions store their quick-scale results in the
    session's folder and read those another process stored there (nbmake's run of the chapter,
    usually, which the scheduler starts first): a test module's fixture then checks the results
    the notebook computed in this session instead of training them again. Only for fixtures that
    run the chapter's unmodified code: the key covers the code on disk and the module's settings,
    not functions a test replaces (:func:`kdlib.experiments.stored_run`)."""
    previous = os.environ.get(RESULTS_ENV)
    os.environ[RESULTS_ENV] = str(results_folder(config))
    try:
        yield
    finally:
        _restore_env(RESULTS_ENV, previous)


def keeping_notebook_run(base, folder: Path, ledger: Path, results: Path):
    """nbmake's ``NotebookRun``, extended to record the session's claims in ``ledger``, to store
    the chapter's results in ``results`` (``$KDLIB_RESULTS``), and to leave in ``folder`` either
    the executed notebook (``<name>.ipynb``) or ``<name>.failed``."""
    import nbformat

    class KeepingNotebookRun(base):
        def execute(self):
            name = Path(self.filename).stem
            previous = os.environ.get("KDLIB_LEDGER"), os.environ.get(RESULTS_ENV)
            os.environ["KDLIB_LEDGER"] = str(ledger)  # inherited by the notebook's kernel
            os.environ[RESULTS_ENV] = str(results)
            result = None
            try:
                result = super().execute()
                return result
            finally:
                _restore_env("KDLIB_LEDGER", previous[0])
                _restore_env(RESULTS_ENV, previous[1])
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


def is_chapter_run(item) -> bool:
    """Whether a collected test is nbmake's run of one of the book's notebooks."""
    return getattr(item, "nbmake", False) and Path(item.path).parent.name == "book"


def chapters_run_by_nbmake(session) -> list[str]:
    """The notebooks (by name) this session's nbmake tests execute, the ledger appendix aside."""
    return sorted(
        {Path(i.path).stem for i in session.items if is_chapter_run(i)} - {LEDGER_CHAPTER}
    )


def wait_for_chapters(folder: Path, names: list[str], timeout_s: float = 1800) -> dict[str, Path]:
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


def stage_book(out: Path, executed: dict[str, Path]) -> Path:
    """A copy of the book's sources in ``out`` with the executed chapters in place of the source
    notebooks, and those chapters excluded from execution."""
    import yaml

    source = out / "source"
    for name in BOOK_SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(
                path,
                source / name,
                ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"),
            )
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, source / name)
    for name, notebook in executed.items():
        shutil.copy(notebook, source / "book" / f"{name}.ipynb")
    config = yaml.safe_load((source / "_config.yml").read_text())
    config["execute"]["exclude_patterns"] = [f"book/{name}.ipynb" for name in executed]
    (source / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return source


def build_book(out: Path, source: Path = ROOT, ledger: Path | None = None):
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


def build_session_book(session, out: Path):
    """The session's book: from the chapters nbmake executed where there are any, else from
    scratch."""
    names = chapters_run_by_nbmake(session)
    if not names:
        return build_book(out)
    executed = wait_for_chapters(executed_folder(session.config), names)
    source = stage_book(out, executed)
    return build_book(out, source, ledger=chapter_ledger(session.config))


def sort_collection(items: list) -> None:
    """Chapters first (the ledger appendix last among them), then the book's reader modules,
    then the unit-test files, largest first: the build reuses the chapters nbmake executed, so it
    should start as soon as they are done, while the unit tests keep the other worker busy."""
    per_file: dict[Path, int] = {}
    for item in items:
        per_file[Path(item.path)] = per_file.get(Path(item.path), 0) + 1

    def order(item):
        path = Path(item.path)
        if is_chapter_run(item):
            return (0, path.stem == LEDGER_CHAPTER, 0)
        if path.name in BOOK_MODULES:
            return (1, False, 0)
        return (2, False, -per_file[path])

    items.sort(key=order)  # stable: within a file (or group) the collection order is kept
