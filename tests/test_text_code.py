"""The code written in the chapters' text (solutions and examples in markdown cells) still runs.

nbmake executes code cells only, so a renamed function or argument would leave a solution's code
broken without any test noticing. Every such block is checked in two ways:

* statically, for every block: it parses; every name it reads but does not bind is one the
  chapter's code cells bind (``chapter``, ``config``, a result); every attribute it takes of a
  module exists; every call of a module's function or class binds to its signature;
* by running it, for every block that needs nothing from the chapter's namespace (a fresh
  interpreter, the non-interactive matplotlib backend, one thread).
"""

from __future__ import annotations

import ast
import builtins
import inspect
import os
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from kdlib import classroom

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-8][0-9]_*.ipynb"))
BLOCKS = [
    block
    for path in CHAPTERS
    for block in classroom.text_code(nbformat.read(path, as_version=4), path.stem)
]


# -- the parser ---------------------------------------------------------------------------------


def test_text_code_finds_blocks_and_their_solutions():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "Prose.\n\n```python\nprint(1)\n```\n\n```bash\nls\n```\n\n"
            ":::{exercise}\n:label: ex-a\nDo it.\n:::\n\n"
            ":::{solution} ex-a\n:class: dropdown\n\nText.\n\n```python\nx = 2\n```\n:::\n\n"
            "```py\ny = 3\n```"
        ),
        nbformat.v4.new_code_cell("z = 4"),
        nbformat.v4.new_markdown_cell(":::{solution-start} ex-b\n:::\n\n````python\nw = 5\n````\n"),
        nbformat.v4.new_markdown_cell("```ipython\nv = 6\n```\n:::{solution-end}\n:::\n"),
        nbformat.v4.new_markdown_cell("~~~python\nu = 7\n~~~"),
    ]
    blocks = classroom.text_code(nb, "00_test")
    assert [(b.label, b.source) for b in blocks] == [
        ("", "print(1)"),
        ("ex-a", "x = 2"),
        ("", "y = 3"),
        ("ex-b", "w = 5"),
        ("ex-b", "v = 6"),
        ("", "u = 7"),
    ]
    assert [b.name for b in blocks] == [
        "00_test-text-1",
        "ex-a",
        "00_test-text-3",
        "ex-b",
        "ex-b",
        "00_test-text-6",
    ]


def test_text_code_rejects_an_unterminated_block():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("```python\nprint(1)\n")]
    with pytest.raises(ValueError, match="04_x: unterminated python block"):
        classroom.text_code(nb, "04_x")


def test_every_chapter_has_text_code_to_check():
    """Positive control: the blocks below are really found (the book has a dozen or more)."""
    assert len(BLOCKS) >= 12
    assert any(b.label for b in BLOCKS) and any(not b.label for b in BLOCKS)


# -- the static check ---------------------------------------------------------------------------


def _bound_names(tree: ast.AST) -> set[str]:
    """Names a piece of code binds anywhere (assignments, imports, definitions, arguments)."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound


def free_names(source: str) -> set[str]:
    """Names ``source`` reads without binding them, builtins aside."""
    tree = ast.parse(source)
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return read - _bound_names(tree) - set(dir(builtins))


def _python_of_code_cells(nb: nbformat.NotebookNode) -> str:
    """The chapter's code cells, IPython magics and shell lines dropped."""
    lines = [
        line
        for cell in nb.cells
        if cell.cell_type == "code"
        for line in cell.source.split("\n")
        if not line.lstrip().startswith(("%", "!"))
    ]
    return "\n".join(lines)


def _imports(source: str) -> types.SimpleNamespace:
    """The names bound by the import statements of ``source`` (executed, nothing else is)."""
    tree = ast.parse(source)
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    namespace: dict = {}
    exec(compile(ast.Module(body=imports, type_ignores=[]), "<imports>", "exec"), namespace)
    return namespace


def _resolve(node: ast.expr, namespace: dict):
    """The object a name or a module attribute refers to, or None when it is not a module's."""
    if isinstance(node, ast.Name):
        return namespace.get(node.id)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        owner = namespace.get(node.value.id)
        if isinstance(owner, types.ModuleType):
            return getattr(owner, node.attr, None)
    return None


def _signature_errors(tree: ast.AST, namespace: dict) -> list[str]:
    errors = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner = namespace.get(node.value.id)
            if isinstance(owner, types.ModuleType) and not hasattr(owner, node.attr):
                errors.append(f"{node.value.id}.{node.attr} does not exist")
        if not isinstance(node, ast.Call):
            continue
        target = _resolve(node.func, namespace)
        if not callable(target) or any(isinstance(a, ast.Starred) for a in node.args):
            continue
        if any(k.arg is None for k in node.keywords):  # a **mapping: not checkable
            continue
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):  # some builtins have none
            continue
        try:
            signature.bind_partial(*node.args, **{k.arg: None for k in node.keywords})
        except TypeError as error:
            errors.append(f"line {node.lineno}: {ast.unparse(node.func)}(...): {error}")
    return errors


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_text_code_matches_the_chapter_and_kdlib(path):
    nb = nbformat.read(path, as_version=4)
    cells = _python_of_code_cells(nb)
    chapter_names = _bound_names(ast.parse(cells))
    chapter_imports = _imports(cells)
    problems = []
    for block in classroom.text_code(nb, path.stem):
        try:
            tree = ast.parse(block.source)
        except SyntaxError as error:
            problems.append(f"{block.name}: does not parse: {error}")
            continue
        missing = free_names(block.source) - chapter_names
        if missing:
            problems.append(f"{block.name}: reads {sorted(missing)}, which the chapter never binds")
        namespace = {**chapter_imports, **_imports(block.source)}
        for name in _bound_names(tree) - set(_imports(block.source)):
            namespace.pop(name, None)  # the block's own function or variable, not the import
        problems += [f"{block.name}: {e}" for e in _signature_errors(tree, namespace)]
    assert not problems, "\n".join(problems)


def test_static_check_catches_a_renamed_function_and_argument():
    """Negative control: the checks above would fail on the mistakes they are meant to catch."""
    source = (
        "from kdlib.theory import soft_vs_hard as theory\n"
        "theory.no_such_function()\n"
        "theory.kernel_teacher(None, None, 1, 1.0, cross_grams=None)\n"
        "print(result)\n"
    )
    errors = _signature_errors(ast.parse(source), _imports(source))
    assert any("theory.no_such_function does not exist" in e for e in errors)
    assert any("cross_grams" in e for e in errors)
    assert free_names(source) == {"result"}


# -- running the self-contained blocks ----------------------------------------------------------

SELF_CONTAINED = [b for b in BLOCKS if not free_names(b.source)]


@pytest.mark.parametrize("block", SELF_CONTAINED, ids=lambda b: b.name)
def test_self_contained_text_code_runs(block, tmp_path):
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    run = subprocess.run(
        [sys.executable, "-c", block.source],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, f"{block.name} failed:\n{run.stderr[-3000:]}"
