"""Classroom tools: a student edition of the book without solutions, and autograded assignments.

Conventions (they hold for every chapter, present and future)
--------------------------------------------------------------
* Exercises are ``exercise`` / ``solution`` directives (sphinx-exercise) in markdown cells, with
  colon or backtick fences; a solution may also span several cells between ``solution-start`` and
  ``solution-end``. The student edition drops every solution, including the cells in between.
* A code cell tagged ``solution`` is dropped. A code cell tagged ``student-code`` keeps what
  lies outside ``# BEGIN SOLUTION`` / ``# END SOLUTION`` markers (the whole cell if it has none),
  with the solution replaced by :data:`STUB`. Markers in an untagged code cell are honoured too.
* Pages whose name contains ``instructor`` (the instructor guide) are left out of the student
  edition.
* An autograded assignment is an Otter Assign master notebook
  ``classroom/assignments/<NN>_<slug>.ipynb`` (solutions between ``# BEGIN SOLUTION`` raw cells,
  public and hidden tests with hints). A chapter gets one by adding that file; nothing here needs
  to change.

Command line (``python -m kdlib.classroom --help``)::

    student-edition --out DIR [--chapters 01 02] [--execute] [--no-build] [--no-assignments]
    assign [NAME ...] --out DIR          # student + autograder versions of the assignments
    grade NAME SUBMISSIONS --csv FILE    # grade a folder of notebooks (no Docker), write scores
    check-leaks DIR                      # no solution text or code in a student edition

Grading uses otter-grader's non-containerised runner (``otter run``), which executes each submission
in the grader's own environment: run it on a machine or account you are willing to give to student
code, or use ``otter grade`` (Docker) on the autograder zip where Docker is available.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS_DIR = ROOT / "classroom" / "assignments"

SOLUTION_TAG = "solution"
STUDENT_CODE_TAG = "student-code"
STUB = "# YOUR CODE HERE\nraise NotImplementedError"
MARKER = ".student-edition"
OTTER_PIN = "otter-grader==7.0.0"

_CHAPTER_FILE = re.compile(r"^\d\d_.+\.(ipynb|md)$")
_DIRECTIVE = re.compile(r"^\s*(?P<fence>:{3,}|`{3,}|~{3,})\s*\{(?P<name>[\w:-]+)\}")
_FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_CODE_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*(python|ipython3?|py|\{code-cell\})")
PLACEHOLDER = "\x00placeholder:"  # internal marker: a code solution was removed here
_BEGIN = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION\b.*$")
_END = re.compile(r"^\s*# END SOLUTION\b.*$")


# -- 1. removing solutions ------------------------------------------------------------------


@dataclass
class _State:
    """Where the scanner is: inside a solution (and which fence closes it), or in literal code."""

    solution_fence: str | None = None  # fence that closes the current solution directive
    gated: bool = False  # between solution-start and solution-end (may span cells)
    literal_fence: str | None = None  # inside an ordinary code block (kept verbatim)
    label: str = ""  # the exercise the current solution answers
    has_code: bool = False  # the current solution contains code
    gated_stub: bool = False  # a placeholder cell was already left for this gated solution

    @property
    def removing(self) -> bool:
        return self.solution_fence is not None or self.gated


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return (
        len(stripped) >= len(fence)
        and set(stripped) == {fence[0]}
        and stripped.startswith(fence[0] * len(fence))
    )


def _strip_lines(lines: list[str], state: _State, removed: list[str]) -> list[str]:
    """Drop solution directives from MyST lines; ``state`` carries over between cells."""
    kept: list[str] = []
    for line in lines:
        if state.literal_fence is not None:  # ordinary code block: nothing inside is a directive
            kept.append(line)
            if _closes(line, state.literal_fence):
                state.literal_fence = None
            continue
        if state.solution_fence is not None:  # inside a solution (or the solution-end directive)
            removed.append(line)
            if _closes(line, state.solution_fence):
                state.solution_fence = None
                if state.has_code:  # leave a place for the student's code
                    kept.append(PLACEHOLDER + state.label)
                    state.has_code = False
            elif _CODE_FENCE.match(line):
                state.has_code = True
            continue
        directive = _DIRECTIVE.match(line)
        name = directive.group("name") if directive else None
        if state.gated:
            removed.append(line)
            if name == "solution-end":
                state.gated = False
                state.solution_fence = directive.group("fence")
                state.has_code = state.has_code and not state.gated_stub
            elif _CODE_FENCE.match(line):
                state.has_code = True
            continue
        if name in ("solution", "solution-start"):
            removed.append(line)
            state.label = line[directive.end() :].strip()
            state.has_code = False
            state.gated_stub = False
            if name == "solution":
                state.solution_fence = directive.group("fence")
            else:
                state.gated = True
                state.solution_fence = None
                # the solution-start directive's own closing fence is removed with the block
            continue
        fence = _FENCE.match(line)
        if fence and not fence.group("info").strip().startswith("{") and directive is None:
            state.literal_fence = fence.group("fence")
        elif directive and name.startswith(("code", "literalinclude")):
            state.literal_fence = directive.group("fence")
        kept.append(line)
    return kept


def strip_solutions(text: str) -> tuple[str, list[str]]:
    """Remove every ``solution`` directive (and ``solution-start`` ... ``solution-end`` region)
    from MyST markdown. Returns the new text and the removed lines."""
    removed: list[str] = []
    state = _State()
    kept = [
        line
        for line in _strip_lines(text.split("\n"), state, removed)
        if not line.startswith(PLACEHOLDER)
    ]
    if state.removing:
        raise ValueError("unterminated solution directive")
    return "\n".join(kept), removed


def stub_code(source: str) -> tuple[str, list[str]]:
    """Replace each ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` region by :data:`STUB` (indented
    like the marker); a cell without markers becomes the stub. Returns new source, removed lines."""
    lines = source.split("\n")
    if not any(_BEGIN.match(line) for line in lines):
        return STUB, lines
    out: list[str] = []
    removed: list[str] = []
    inside = False
    for line in lines:
        begin = _BEGIN.match(line)
        if begin and not inside:
            inside = True
            out.extend(begin.group("indent") + stub for stub in STUB.split("\n"))
        elif inside:
            if _END.match(line):
                inside = False
            else:
                removed.append(line)
        else:
            out.append(line)
    if inside:
        raise ValueError("# BEGIN SOLUTION without # END SOLUTION")
    return "\n".join(out), removed


@dataclass
class StudentCopy:
    """A transformed notebook or page, and what was taken out of it."""

    content: nbformat.NotebookNode | str
    removed_text: list[str] = field(default_factory=list)  # markdown solution lines
    removed_code: list[str] = field(default_factory=list)  # solution code lines
    solutions: int = 0


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def student_notebook(nb: nbformat.NotebookNode) -> StudentCopy:
    """The student version of a chapter notebook (the input is not modified)."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # deep copy
    result = StudentCopy(nb)
    state = _State()
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            before = len(result.removed_text)
            opened = sum(
                1
                for line in cell.source.split("\n")
                if (m := _DIRECTIVE.match(line))
                and m.group("name") in ("solution", "solution-start")
            )
            kept = _strip_lines(cell.source.split("\n"), state, result.removed_text)
            result.solutions += opened
            if len(result.removed_text) == before:
                cells.append(cell)
                continue
            # split the cell where a code solution was removed, and put a code cell there
            pieces: list[list[str]] = [[]]
            for line in kept:
                if line.startswith(PLACEHOLDER):
                    pieces.append([line])
                else:
                    pieces[-1].append(line)
            for i, piece in enumerate(pieces):
                if piece and piece[0].startswith(PLACEHOLDER):
                    cells.append(placeholder_cell(piece[0][len(PLACEHOLDER) :]))
                    piece = piece[1:]
                text = _tidy("\n".join(piece))
                if text.strip():
                    if i == 0:  # the first piece keeps the cell (and its id)
                        cell.source = text
                        cells.append(cell)
                    else:
                        cells.append(nbformat.v4.new_markdown_cell(text, metadata=cell.metadata))
            continue
        elif cell.cell_type == "code":
            if state.removing or SOLUTION_TAG in _tags(cell):
                result.removed_code.extend(cell.source.split("\n"))
                result.solutions += SOLUTION_TAG in _tags(cell)
                if state.gated and not state.gated_stub:
                    cells.append(placeholder_cell(state.label))
                    state.gated_stub = True
                continue
            if STUDENT_CODE_TAG in _tags(cell) or _BEGIN.search(cell.source) is not None:
                cell.source, gone = stub_code(cell.source)
                result.removed_code.extend(gone)
                cell.outputs = []
                cell.execution_count = None
                cell.metadata["tags"] = sorted({*_tags(cell), "raises-exception"})
        elif state.removing:
            result.removed_text.extend(cell.source.split("\n"))
            continue
        cells.append(cell)
    if state.removing:
        raise ValueError("unterminated solution directive")
    nb.cells = cells
    nb.metadata.setdefault("classroom", {})["edition"] = "student"
    return result


def placeholder_cell(label: str) -> nbformat.NotebookNode:
    """The code cell left where a solution's code was: the stub, tagged ``student-code`` and
    ``raises-exception`` (so that executing the student notebook does not stop there)."""
    head = f"# Exercise {label}: your code here" if label else "# Your code here"
    cell = nbformat.v4.new_code_cell(f"{head}\nraise NotImplementedError")
    cell.metadata["tags"] = [STUDENT_CODE_TAG, "raises-exception"]
    return cell


def student_page(text: str) -> StudentCopy:
    """The student version of a MyST markdown page."""
    new, removed = strip_solutions(text)
    count = sum(
        1
        for line in text.split("\n")
        if (m := _DIRECTIVE.match(line)) and m.group("name") in ("solution", "solution-start")
    )
    return StudentCopy(_tidy(new) if removed else new, removed_text=removed, solutions=count)


def _tidy(text: str) -> str:
    """Collapse the blank lines a removed block leaves behind."""
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


# -- 2. leak detection ----------------------------------------------------------------------

_MATH = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|\\\(.*?\\\)|\\\[.*?\\\]", re.S)
_ROLE = re.compile(r"\{[\w:-]+\}`[^`]*`")
_WORD = re.compile(r"[A-Za-z0-9]+")
WINDOW = 8  # words in a prose fingerprint
MIN_CODE = 12  # characters in a code fingerprint


def _words(text: str) -> list[str]:
    text = _ROLE.sub(" ", _MATH.sub(" ", text))
    return [w.lower() for w in _WORD.findall(text)]


def _windows(text: str) -> set[str]:
    words = _words(text)
    return {" ".join(words[i : i + WINDOW]) for i in range(len(words) - WINDOW + 1)}


def _prose_and_code(lines: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split solution lines into prose and code (inside code fences); directive lines dropped."""
    prose: list[str] = []
    code: list[str] = []
    fence: str | None = None
    for line in lines:
        if fence is not None:
            if _closes(line, fence):
                fence = None
            else:
                code.append(line)
            continue
        if _DIRECTIVE.match(line) or re.match(r"^\s*:{3,}\s*$", line):
            continue
        if re.match(r"^\s*:[\w-]+:", line):  # directive options such as :class: dropdown
            continue
        opening = _FENCE.match(line)
        if opening:
            fence = opening.group("fence")
            continue
        prose.append(line)
    return prose, code


def _norm_code(line: str) -> str:
    return " ".join(line.split())


@dataclass
class Fingerprints:
    """Pieces of solution text that appear nowhere else in the instructor's chapter."""

    prose: set[str]
    code: set[str]

    def __len__(self) -> int:
        return len(self.prose) + len(self.code)

    def found_in(self, text: str) -> list[str]:
        """The fingerprints present in ``text`` (notebook sources, or the text of an HTML page)."""
        windows = _windows(text)
        flat = " ".join(text.split())
        return sorted(self.prose & windows) + sorted(c for c in self.code if c in flat)


def fingerprints(copy: StudentCopy, student_text: str) -> Fingerprints:
    """Fingerprints of what ``copy`` removed, minus anything the student legitimately sees."""
    prose, code = _prose_and_code(copy.removed_text)
    code += copy.removed_code
    seen = _windows(student_text)
    flat = " ".join(student_text.split())
    prose_fp = set().union(*(_windows(p) for p in _paragraphs(prose))) - seen if prose else set()
    code_fp = {
        _norm_code(c) for c in code if len(_norm_code(c)) >= MIN_CODE and _norm_code(c) not in flat
    }
    return Fingerprints(prose_fp, code_fp)


def _paragraphs(lines: list[str]) -> list[str]:
    return [p for p in "\n".join(lines).split("\n\n") if p.strip()]


def notebook_text(nb: nbformat.NotebookNode) -> str:
    """Every cell's source and every text output of a notebook, one string."""
    parts = []
    for cell in nb.cells:
        parts.append(cell.source)
        for output in cell.get("outputs", []):
            parts.append(str(output.get("text", "")))
            for key, value in output.get("data", {}).items():
                if key.startswith("text/"):
                    parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


def html_text(page: str) -> str:
    """The visible text of an HTML page (scripts and styles dropped, entities decoded)."""
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S | re.I)
    return html.unescape(re.sub(r"<[^>]+>", "", page))


# -- 3. the code shown in the text ----------------------------------------------------------


@dataclass(frozen=True)
class TextCode:
    """A ``python`` code block written in a chapter's text (a markdown cell), not a code cell:
    a solution's code, or an example in the prose. nbmake never runs these, so the tests do."""

    chapter: str  # the notebook's stem, e.g. "04_soft_vs_hard_neurons"
    index: int  # 1-based position among the chapter's text code blocks
    label: str  # the exercise whose solution holds it; "" for the prose
    source: str

    @property
    def name(self) -> str:
        """A readable test id: the exercise label, else the chapter and the block's position."""
        return self.label or f"{self.chapter}-text-{self.index}"


_PYTHON_FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,})\s*(python|py|ipython3?)\s*$")


def text_code(nb: nbformat.NotebookNode, chapter: str = "") -> list[TextCode]:
    """Every ``python`` (``py``, ``ipython``) fenced block of the markdown cells of ``nb``, with
    the label of the solution it belongs to (``solution`` directives and ``solution-start`` /
    ``solution-end`` regions, as in :func:`strip_solutions`)."""
    blocks: list[TextCode] = []
    label, solution_fence = "", None
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        code: list[str] | None = None
        code_fence = ""
        for line in cell.source.split("\n"):
            if code is not None:  # inside a python block
                if _closes(line, code_fence):
                    blocks.append(TextCode(chapter, len(blocks) + 1, label, "\n".join(code)))
                    code = None
                else:
                    code.append(line)
                continue
            fence = _PYTHON_FENCE.match(line)
            if fence:
                code, code_fence = [], fence.group("fence")
                continue
            directive = _DIRECTIVE.match(line)
            name = directive.group("name") if directive else None
            if name in ("solution", "solution-start"):
                label = line[directive.end() :].strip()
                solution_fence = directive.group("fence") if name == "solution" else None
            elif name == "solution-end" or (
                solution_fence is not None and _closes(line, solution_fence)
            ):
                label, solution_fence = "", None
        if code is not None:
            raise ValueError(
                f"{chapter or 'notebook'}: unterminated python block in a markdown cell"
            )
    return blocks


# -- 4. the student edition -----------------------------------------------------------------


def _yaml():
    import yaml  # installed with jupyter-book

    return yaml


def _is_instructor_only(name: str) -> bool:
    return "instructor" in Path(name).name.lower()


def _chapter_number(name: str) -> int | None:
    m = re.match(r"^(\d\d)_", Path(name).name)
    return int(m.group(1)) if m else None


def _keep(name: str, chapters: Sequence[str] | None) -> bool:
    """Keep every page but instructor-only ones; with ``chapters``, only those chapters (pages
    numbered 90 and above, the appendix, are always kept)."""
    if _is_instructor_only(name):
        return False
    number = _chapter_number(name)
    if chapters is None or number is None or number >= 90:
        return True
    return any(Path(name).name.startswith(f"{c}_") or Path(name).name == c for c in chapters)


def student_toc(toc: dict, chapters: Sequence[str] | None = None) -> dict:
    """The table of contents without instructor-only (or unselected) pages; empty parts dropped."""
    toc = json.loads(json.dumps(toc))

    def prune(entries: list) -> list:
        out = []
        for entry in entries:
            if "file" in entry and not _keep(entry["file"], chapters):
                continue
            for key in ("sections", "chapters"):
                if key in entry:
                    entry[key] = prune(entry[key])
            out.append(entry)
        return out

    if "parts" in toc:
        parts = []
        for part in toc["parts"]:
            part["chapters"] = prune(part.get("chapters", []))
            if part["chapters"]:
                parts.append(part)
        toc["parts"] = parts
    for key in ("chapters", "sections"):
        if key in toc:
            toc[key] = prune(toc[key])
    return toc


def student_config(config: dict, execute: bool) -> dict:
    """The book configuration of the student edition."""
    config = json.loads(json.dumps(config))
    config["title"] = f"{config.get('title', 'Book')} (student edition)"
    execute_cfg = config.setdefault("execute", {})
    # Without execution the pages show the code but no outputs; the executed code is the same as
    # the instructor's (only solutions differ), and the instructor build and nbmake run it.
    execute_cfg["execute_notebooks"] = "cache" if execute else "off"
    return config


@dataclass
class Edition:
    """What :func:`make_student_edition` produced."""

    out: Path
    pages: dict[str, StudentCopy]  # relative path -> transformed page/notebook
    fingerprints: dict[str, Fingerprints]
    assignments: list[str]
    html: Path | None = None


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise FileExistsError(f"{out} is not empty and is not a student edition; pick another")
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("Generated by `python -m kdlib.classroom student-edition`.\n")


def make_student_edition(
    out: Path,
    *,
    root: Path = ROOT,
    chapters: Sequence[str] | None = None,
    assignments: bool = True,
    assigned: dict[str, Assigned] | None = None,
    build: bool = True,
    execute: bool = False,
    strict: bool | None = None,
) -> Edition:
    """Write a student copy of the book to ``out`` (solutions removed, instructor pages left out),
    with the student versions of the autograded assignments under ``out/assignments``, and build it
    into ``out/_build/html`` when ``build``. The build is strict (warnings are errors) unless only
    some ``chapters`` are selected: the other pages then refer to chapters that are not there."""
    yaml = _yaml()
    out = Path(out).resolve()
    root = Path(root).resolve()
    _prepare_out(out)
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    config = yaml.safe_load((root / "_config.yml").read_text())
    (out / "_toc.yml").write_text(
        "# Student edition: generated by kdlib.classroom; edit the instructor's _toc.yml instead.\n"
        + yaml.safe_dump(student_toc(toc, chapters), sort_keys=False)
    )
    _copy_local_extensions(config, root, out)
    (out / "_config.yml").write_text(
        "# Student edition: generated by kdlib.classroom; edit the instructor's _config.yml.\n"
        + yaml.safe_dump(student_config(config, execute), sort_keys=False)
    )
    pages: dict[str, StudentCopy] = {}
    visible: list[str] = []
    book = root / "book"
    for src in sorted(book.rglob("*")):
        rel = src.relative_to(root)
        if src.is_dir() or ".ipynb_checkpoints" in rel.parts or "_build" in rel.parts:
            continue
        page = src.suffix in (".ipynb", ".md") and src.parent == book
        if page and not _keep(src.name, chapters):
            continue
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix == ".ipynb":
            copy = student_notebook(nbformat.read(src, as_version=4))
            nbformat.write(copy.content, dest)
            seen = notebook_text(copy.content)
        elif src.suffix == ".md" and page:
            copy = student_page(src.read_text())
            dest.write_text(copy.content)
            seen = copy.content
        else:
            shutil.copy2(src, dest)
            continue
        pages[str(rel)] = copy
        visible.append(seen)
    # what a student sees anywhere in the edition is not a leak (shared imports, restated text,
    # the signature of a function an assignment asks for)
    if assignments:
        visible += [assignment_student_text(p) for p in available_assignment_paths(root)]
    everything = "\n".join(visible)
    prints = {rel: fingerprints(copy, everything) for rel, copy in pages.items()}
    names: list[str] = []
    if assignments:
        wanted = [n for n in available_assignments(root) if _keep(n + ".ipynb", chapters)]
        if assigned is None:
            with tempfile.TemporaryDirectory() as tmp:
                made = assign(wanted, Path(tmp), root=root)
                _copy_student_assignments(made, out)
        else:
            _copy_student_assignments({n: assigned[n] for n in wanted if n in assigned}, out)
        names = wanted
    edition = Edition(out, pages, prints, names)
    if build:
        edition.html = build_book(out, strict=chapters is None if strict is None else strict)
    return edition


def _copy_local_extensions(config: dict, root: Path, out: Path) -> None:
    """Copy the book's local Sphinx extensions (``sphinx.local_extensions``: name -> folder)."""
    for name, folder in (config.get("sphinx", {}).get("local_extensions") or {}).items():
        for src in (root / folder / f"{name}.py", root / folder / name):
            if src.is_file():
                (out / folder).mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, out / folder / src.name)
            elif src.is_dir():
                shutil.copytree(src, out / folder / name, dirs_exist_ok=True)


def _copy_student_assignments(made: dict[str, Assigned], out: Path) -> None:
    for name, paths in made.items():
        shutil.copytree(paths.student, out / "assignments" / name)


def build_book(path: Path, strict: bool = True) -> Path:
    """``jupyter-book build`` (strict: warnings are errors); returns the HTML folder."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jupyter_book), "build", str(path)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"jupyter-book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return Path(path) / "_build" / "html"


def find_leaks(edition: Path, prints: dict[str, Fingerprints] | None = None) -> dict[str, list]:
    """Solution fingerprints found in a student edition's notebooks, pages, HTML and assignments.

    ``prints`` defaults to the fingerprints of the instructor's book (recomputed from ``ROOT``).
    Returns ``{file: [fingerprint, ...]}`` for every file with a leak (empty when clean).
    """
    edition = Path(edition)
    if prints is None:
        prints = instructor_fingerprints()
    everything = Fingerprints(
        set().union(*(p.prose for p in prints.values())) if prints else set(),
        set().union(*(p.code for p in prints.values())) if prints else set(),
    )
    leaks: dict[str, list] = {}
    for path in sorted(edition.rglob("*")):
        if path.is_dir() or "_static" in path.parts or ".doctrees" in path.parts:
            continue
        if path.suffix == ".ipynb":
            text = notebook_text(nbformat.read(path, as_version=4))
        elif path.suffix in (".md", ".py", ".txt"):
            text = path.read_text(errors="replace")
        elif path.suffix == ".html":
            text = html_text(path.read_text(errors="replace"))
        else:
            continue
        found = everything.found_in(text)
        if found:
            leaks[str(path.relative_to(edition))] = found
    return leaks


def instructor_fingerprints(root: Path = ROOT) -> dict[str, Fingerprints]:
    """Fingerprints of every solution in the instructor's chapters and of every assignment's
    solution code and hidden tests."""
    copies: dict[str, StudentCopy] = {}
    visible: list[str] = []
    for src in sorted((root / "book").glob("*")):
        if src.suffix == ".ipynb":
            copy = student_notebook(nbformat.read(src, as_version=4))
            visible.append(notebook_text(copy.content))
        elif src.suffix == ".md":
            copy = student_page(src.read_text())
            visible.append(copy.content)
        else:
            continue
        copies[src.name] = copy
    visible += [assignment_student_text(p) for p in available_assignment_paths(root)]
    everything = "\n".join(visible)
    prints = {name: fingerprints(copy, everything) for name, copy in copies.items()}
    for master in available_assignment_paths(root):
        prints[f"assignments/{master.name}"] = assignment_fingerprints(master)
    return prints


# -- 5. autograded assignments (otter-grader) -----------------------------------------------


def _require_otter():
    try:
        import otter  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"autograding needs otter-grader: `.venv/bin/pip install {OTTER_PIN}`"
        ) from err


def available_assignment_paths(root: Path = ROOT) -> list[Path]:
    """The assignment master notebooks, ``classroom/assignments/<NN>_<slug>.ipynb``."""
    folder = Path(root) / "classroom" / "assignments"
    return sorted(p for p in folder.glob("*.ipynb") if _CHAPTER_FILE.match(p.name))


def available_assignments(root: Path = ROOT) -> list[str]:
    """Names (``01_introduction``, ...) of the chapters that have an autograded assignment."""
    return [p.stem for p in available_assignment_paths(root)]


def resolve_assignment(name: str, root: Path = ROOT) -> Path:
    """An assignment's master notebook from its name or chapter number (``02`` or
    ``02_soft_labels``)."""
    matches = [
        p
        for p in available_assignment_paths(root)
        if p.stem == name or p.stem.startswith(f"{name}_")
    ]
    if len(matches) != 1:
        known = ", ".join(available_assignments(root)) or "none"
        raise ValueError(f"no single assignment named {name!r}; known assignments: {known}")
    return matches[0]


@dataclass
class Assigned:
    """Otter Assign's output for one assignment."""

    name: str
    student: Path  # notebook + public tests, for students
    autograder: Path  # folder with the solution notebook, all tests and the autograder zip
    zip: Path


def assign(
    names: Iterable[str] | None, out: Path, *, root: Path = ROOT, run_tests: bool = True
) -> dict[str, Assigned]:
    """Run Otter Assign on each master notebook: ``out/<name>/student`` (questions, public tests)
    and ``out/<name>/autograder`` (solutions, public and hidden tests, ``*.zip``). With
    ``run_tests``, otter checks that the solutions pass every test."""
    _require_otter()
    masters = [resolve_assignment(n, root) for n in (names or available_assignments(root))]
    made = {}
    for master in masters:
        dest = Path(out) / master.stem
        if dest.exists():
            shutil.rmtree(dest)
        cmd = [sys.executable, "-m", "otter", "assign", "--no-pdfs", str(master), str(dest)]
        if not run_tests:
            cmd.insert(4, "--no-run-tests")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"otter assign failed on {master.name}:\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        zips = sorted((dest / "autograder").glob("*.zip"))
        if len(zips) != 1:
            raise RuntimeError(
                f"expected one autograder zip in {dest / 'autograder'}, found {zips}"
            )
        made[master.stem] = Assigned(master.stem, dest / "student", dest / "autograder", zips[0])
    return made


def assignment_student_text(master: Path) -> str:
    """What a student sees of an Otter Assign master notebook: its markdown, its public tests and
    the solution cells without the lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` (a
    function's signature stays). Computed from the master, without running Otter Assign."""
    nb = nbformat.read(master, as_version=4)
    seen: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            seen.append(cell.source)
        elif cell.cell_type == "code" and not re.search(r"^hidden:\s*true\s*$", cell.source, re.M):
            inside = False
            for line in cell.source.split("\n"):
                if _BEGIN.match(line):
                    inside = True
                elif _END.match(line):
                    inside = False
                elif not inside and "# SOLUTION" not in line:
                    seen.append(line)
    return "\n".join(seen)


def assignment_fingerprints(master: Path) -> Fingerprints:
    """Solution code and hidden-test code of an Otter Assign master notebook."""
    nb = nbformat.read(master, as_version=4)
    code: set[str] = set()
    in_solution = False
    for cell in nb.cells:
        first = cell.source.strip().split("\n")[0].strip().upper() if cell.source.strip() else ""
        if cell.cell_type == "raw" and first.startswith("# BEGIN SOLUTION"):
            in_solution = True
            continue
        if cell.cell_type == "raw" and first.startswith("# END SOLUTION"):
            in_solution = False
            continue
        if cell.cell_type != "code":
            continue
        lines: list[str] = []
        if in_solution:
            inside = False
            for line in cell.source.split("\n"):
                if _BEGIN.match(line):
                    inside = True
                elif _END.match(line):
                    inside = False
                elif inside or "# SOLUTION" in line:
                    lines.append(line)
        elif re.search(r"^hidden:\s*true\s*$", cell.source, flags=re.M):
            body = cell.source.split("# END TEST CONFIG", 1)[-1]
            lines = body.split("\n")
        code |= {_norm_code(line) for line in lines if len(_norm_code(line)) >= MIN_CODE}
    # a line the student sees anyway (a signature, a public test) is not a leak
    visible = " ".join(
        " ".join(c.source.split())
        for c in nb.cells
        if c.cell_type == "markdown"
        or (
            c.cell_type == "code"
            and not re.search(r"^hidden:\s*true\s*$", c.source, flags=re.M)
            and "# BEGIN SOLUTION" not in c.source
        )
    )
    return Fingerprints(set(), {c for c in code if c not in visible})


@dataclass
class Score:
    """One graded submission."""

    submission: str
    questions: dict[str, float]
    total: float
    possible: float
    error: str = ""


def grade(
    submissions: Path | Sequence[Path], autograder_zip: Path, csv_path: Path | None = None
) -> list[Score]:
    """Grade notebooks (a folder of ``*.ipynb`` or a list) with otter's non-containerised runner
    and write one CSV row per submission: file, a score per question, total, possible, percent.
    A submission that cannot be graded scores 0 with the error in the ``error`` column."""
    _require_otter()
    from otter.api import grade_submission

    if isinstance(submissions, (str, Path)):
        folder = Path(submissions)
        paths = sorted(folder.glob("*.ipynb")) if folder.is_dir() else [folder]
    else:
        paths = [Path(p) for p in submissions]
    if not paths:
        raise FileNotFoundError(f"no *.ipynb submissions in {submissions}")
    scores = []
    for path in paths:
        try:
            result = grade_submission(
                str(path.resolve()), str(Path(autograder_zip).resolve()), quiet=True
            )
            questions = {name: float(r.score) for name, r in result.results.items()}
            scores.append(Score(path.name, questions, float(result.total), float(result.possible)))
        except Exception as err:  # a broken notebook must not stop the others
            scores.append(Score(path.name, {}, 0.0, 0.0, f"{type(err).__name__}: {err}"))
    if csv_path is not None:
        write_csv(scores, Path(csv_path))
    return scores


def write_csv(scores: Sequence[Score], path: Path) -> None:
    """One row per submission; one column per question (union over submissions)."""
    questions = sorted({q for s in scores for q in s.questions})
    possible = max((s.possible for s in scores), default=0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["submission", *questions, "total", "possible", "percent", "error"])
        for s in scores:
            total_possible = s.possible or possible
            percent = 100.0 * s.total / total_possible if total_possible else 0.0
            writer.writerow(
                [
                    s.submission,
                    *(s.questions.get(q, 0.0) for q in questions),
                    s.total,
                    total_possible,
                    round(percent, 2),
                    s.error,
                ]
            )


# -- 6. command line ------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kdlib.classroom", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("student-edition", help="write (and build) the student edition of the book")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (new, or a previous edition)"
    )
    p.add_argument("--chapters", nargs="*", help="chapter numbers to include (default: all)")
    p.add_argument("--execute", action="store_true", help="execute the notebooks while building")
    p.add_argument("--no-build", action="store_true", help="write the sources only")
    p.add_argument("--no-assignments", action="store_true", help="leave out the assignments")

    p = sub.add_parser("assign", help="student and autograder versions of the assignments")
    p.add_argument("names", nargs="*", help="assignment names or chapter numbers (default: all)")
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser("grade", help="grade a folder of submitted notebooks into a CSV")
    p.add_argument("name", help="assignment name or chapter number, e.g. 02")
    p.add_argument("submissions", type=Path, help="folder of *.ipynb (or one notebook)")
    p.add_argument("--csv", type=Path, required=True, help="where to write the scores")
    p.add_argument("--autograder", type=Path, help="autograder zip (default: run otter assign now)")

    p = sub.add_parser("check-leaks", help="fail if a student edition contains solution text")
    p.add_argument("edition", type=Path)

    args = parser.parse_args(argv)
    if args.command == "student-edition":
        edition = make_student_edition(
            args.out,
            chapters=args.chapters,
            assignments=not args.no_assignments,
            build=not args.no_build,
            execute=args.execute,
        )
        removed = sum(c.solutions for c in edition.pages.values())
        print(
            f"student edition in {edition.out}: {len(edition.pages)} pages, "
            f"{removed} solutions removed,"
            f" assignments: {', '.join(edition.assignments) or 'none'}"
        )
        leaks = find_leaks(edition.out)
        if leaks:
            print("solution text found in the student edition:", json.dumps(leaks, indent=1))
            return 1
        if edition.html:
            print(f"open {edition.html / 'index.html'}")
        return 0
    if args.command == "assign":
        made = assign(args.names, args.out)
        for a in made.values():
            print(f"{a.name}: students get {a.student}; grade with {a.zip}")
        return 0
    if args.command == "grade":
        with tempfile.TemporaryDirectory() as tmp:
            zip_path = args.autograder
            if zip_path is None:
                zip_path = assign([args.name], Path(tmp), run_tests=False)[
                    resolve_assignment(args.name).stem
                ].zip
            scores = grade(args.submissions, zip_path, args.csv)
        for s in scores:
            print(f"{s.submission}: {s.total:g}/{s.possible:g} {s.error}")
        print(f"scores written to {args.csv}")
        return 0
    if args.command == "check-leaks":
        leaks = find_leaks(args.edition)
        print(json.dumps(leaks, indent=1) if leaks else "no solution text found")
        return 1 if leaks else 0
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
