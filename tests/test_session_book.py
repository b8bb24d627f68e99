"""The test session executes each chapter once: the book build renders the notebooks nbmake
executed (``book_session.py``). These tests check that machinery without building anything."""

import json
import time
from pathlib import Path, PurePosixPath
from types import SimpleNamespace

import yaml
from book_session import (
    BOOK_MODULES,
    LEDGER_CHAPTER,
    ROOT,
    sort_collection,
    stage_book,
    wait_for_chapters,
)


def test_waiting_returns_executed_chapters_and_leaves_failed_ones_to_the_build(tmp_path):
    (tmp_path / "02_soft_labels.ipynb").write_text("{}")
    (tmp_path / "03_phuong_lampert.failed").touch()
    executed = wait_for_chapters(tmp_path, ["02_soft_labels", "03_phuong_lampert"], timeout_s=5)
    assert executed == {"02_soft_labels": tmp_path / "02_soft_labels.ipynb"}


def test_waiting_for_a_chapter_that_never_finishes_gives_up_at_the_timeout(tmp_path):
    start = time.monotonic()
    assert wait_for_chapters(tmp_path, ["05_multi_view"], timeout_s=0.5) == {}
    assert time.monotonic() - start < 5


def test_staged_book_renders_the_executed_chapters_without_executing_them(tmp_path):
    executed_nb = tmp_path / "executed.ipynb"
    executed_nb.write_text(json.dumps({"executed": True}))
    source = stage_book(tmp_path / "out", {"02_soft_labels": executed_nb})

    assert (source / "book" / "02_soft_labels.ipynb").read_text() == executed_nb.read_text()
    for other in ("03_phuong_lampert.ipynb", f"{LEDGER_CHAPTER}.ipynb", "index.md"):
        assert (source / "book" / other).read_bytes() == (ROOT / "book" / other).read_bytes()
    assert (source / "tools" / "offline_html.py").exists()  # the local Sphinx extension

    staged = yaml.safe_load((source / "_config.yml").read_text())
    original = yaml.safe_load((ROOT / "_config.yml").read_text())
    patterns = staged["execute"].pop("exclude_patterns")
    assert staged == original  # nothing else changed
    assert patterns == ["book/02_soft_labels.ipynb"]
    # myst-nb matches the patterns against the notebook's absolute path, from the right
    assert PurePosixPath((source / "book" / "02_soft_labels.ipynb").as_posix()).match(patterns[0])
    assert not PurePosixPath((source / "book" / "03_phuong_lampert.ipynb").as_posix()).match(
        patterns[0]
    )


def _item(path: str, nbmake: bool = False):
    return SimpleNamespace(path=Path(path), nbmake=nbmake, name=path)


def test_chapters_run_first_the_ledger_last_of_them_then_the_book_then_large_files():
    book_module = sorted(BOOK_MODULES)[0]
    items = [
        _item("tests/test_small.py"),
        _item(f"tests/{book_module}"),
        _item("tests/test_large.py"),
        _item("tests/test_large.py"),
        _item(f"book/{LEDGER_CHAPTER}.ipynb", nbmake=True),
        _item("book/02_soft_labels.ipynb", nbmake=True),
        _item("tests/test_small.py"),
        _item("tests/test_large.py"),
        _item("book/05_multi_view.ipynb", nbmake=True),
    ]
    sort_collection(items)
    assert [i.name for i in items] == [
        "book/02_soft_labels.ipynb",
        "book/05_multi_view.ipynb",
        f"book/{LEDGER_CHAPTER}.ipynb",
        f"tests/{book_module}",
        *["tests/test_large.py"] * 3,
        *["tests/test_small.py"] * 2,
    ]
