"""Classroom tools: the student edition leaks no solution, and the autograder grades end to end.

The student edition of every chapter is built strictly, without executing the notebooks: solutions
are the only difference from the instructor's notebooks, which nbmake and the book build execute.
Grading runs otter-grader's non-containerised runner on the samples in tests/data/classroom/.
"""

import csv
import hashlib
import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from kdlib import classroom

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "classroom"
CHAPTERS = sorted(p for p in (ROOT / "book").glob("[0-8][0-9]_*.ipynb"))
IN_TOC = [p for p in CHAPTERS if f"book/{p.stem}" in (ROOT / "_toc.yml").read_text()]


# -- removing solutions: the parser -----------------------------------------------------------

MYST = """Intro text.

:::{exercise}
:label: ex-a

Prove it.
:::

:::{solution} ex-a
:class: dropdown

The secret colon answer.

```python
print("secret code")
```
:::

::::{solution} ex-b
:class: dropdown

:::{note}
An inner note of the nested secret.
:::
Still nested secret.
::::

````{solution} ex-c
```python
x = "backtick secret"
```
````

```md
:::{solution} shown-as-an-example
kept because it is inside a code block
:::
```

Outro text."""


def test_strip_solutions_handles_every_fence():
    text, removed = classroom.strip_solutions(MYST)
    assert "secret" not in text
    assert "Prove it." in text and "Outro text." in text and "{exercise}" in text
    assert "kept because it is inside a code block" in text  # literal code is not a directive
    assert any("backtick secret" in line for line in removed)


def test_unterminated_solution_raises():
    with pytest.raises(ValueError, match="unterminated"):
        classroom.strip_solutions(":::{solution} x\nno end")


def test_stub_code_keeps_the_signature():
    src = "def f(x):\n    # BEGIN SOLUTION\n    return 2 * x\n    # END SOLUTION\n"
    stubbed, removed = classroom.stub_code(src)
    assert stubbed.startswith("def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError")
    assert removed == ["    return 2 * x"]
    assert classroom.stub_code("y = 42")[0] == classroom.STUB


def test_student_notebook_drops_tagged_and_gated_solutions():
    solution_code = new_code_cell("answer = 'tagged secret'")
    solution_code.metadata["tags"] = ["solution"]
    student_code = new_code_cell(
        "def g():\n    # BEGIN SOLUTION\n    return 'stub secret'\n    # END SOLUTION"
    )
    student_code.metadata["tags"] = ["student-code"]
    nb = new_notebook(
        cells=[
            new_markdown_cell(":::{exercise}\n:label: e\nDo it.\n:::"),
            solution_code,
            student_code,
            new_markdown_cell("::::{solution-start} e\n::::\nGated secret prose."),
            new_code_cell("print('gated secret code')"),
            new_markdown_cell("::::{solution-end}\n::::"),
            new_code_cell("print('visible')"),
        ]
    )
    before = nbformat.writes(nb)
    copy = classroom.student_notebook(nb)
    text = classroom.notebook_text(copy.content)
    assert "secret" not in text, text
    assert "Do it." in text and "print('visible')" in text
    assert "raise NotImplementedError" in text and "def g():" in text
    assert copy.solutions == 2  # the tagged cell and the gated block
    assert nbformat.writes(nb) == before  # the instructor's notebook is untouched


def test_placeholder_cell_where_solution_code_was():
    """A solution with code leaves a code cell for the student, right after its exercise."""
    nb = new_notebook(cells=[new_markdown_cell(MYST)])
    cells = classroom.student_notebook(nb).content.cells
    kinds = [(c.cell_type, c.metadata.get("tags")) for c in cells]
    assert kinds == [
        ("markdown", None),
        ("code", ["student-code", "raises-exception"]),  # ex-a's solution had code
        ("code", ["student-code", "raises-exception"]),  # ex-c's too; ex-b's had none
        ("markdown", None),
    ]
    assert cells[1].source == "# Exercise ex-a: your code here\nraise NotImplementedError"
    assert cells[2].source.startswith("# Exercise ex-c:")
    assert cells[0].source.rstrip().endswith(":::") and "Intro text." in cells[0].source
    assert cells[3].source.rstrip().endswith("Outro text.")
    assert "\x00" not in classroom.strip_solutions(MYST)[0]


def test_student_toc_and_config():
    toc = {
        "format": "jb-book",
        "root": "book/index",
        "parts": [
            {"caption": "A", "chapters": [{"file": "book/01_x"}, {"file": "book/03_y"}]},
            {"caption": "Appendix", "chapters": [{"file": "book/95_instructor_guide"}]},
        ],
    }
    assert classroom.student_toc(toc)["parts"] == [toc["parts"][0]]
    only = classroom.student_toc(toc, chapters=["01"])
    assert only["parts"][0]["chapters"] == [{"file": "book/01_x"}]
    config = classroom.student_config(
        {"title": "T", "execute": {"execute_notebooks": "cache"}}, False
    )
    assert config["execute"]["execute_notebooks"] == "off" and "student" in config["title"]


# -- every chapter follows the exercise convention ---------------------------------------------


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_three_exercises_with_hidden_solutions(path):
    nb = nbformat.read(path, as_version=4)
    md = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    exercises = md.count("{exercise}") + md.count("{exercise-start}")
    copy = classroom.student_notebook(nb)
    assert exercises >= 3, f"{path.name}: {exercises} exercises (at least 3 expected)"
    assert copy.solutions >= 3, f"{path.name}: {copy.solutions} solutions"
    dropdowns = sum(1 for line in copy.removed_text if line.strip() == ":class: dropdown")
    assert dropdowns >= copy.solutions - md.count("{solution-start}"), "solutions must be dropdowns"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_leak_check_detects_solutions_in_the_instructor_notebook(path):
    """Positive control: the fingerprints are found in the instructor's own notebook."""
    prints = classroom.instructor_fingerprints()[path.name]
    assert len(prints) > 0
    found = prints.found_in(classroom.notebook_text(nbformat.read(path, as_version=4)))
    assert len(found) == len(prints)


# -- the student edition, built -----------------------------------------------------------------


def _digest(paths):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture(scope="module")
def assigned(tmp_path_factory):
    """Otter Assign's output for every assignment (None without otter-grader: grading tests skip,
    the student edition is then built without assignments)."""
    try:
        import otter  # noqa: F401
    except ImportError:
        return None
    return classroom.assign(None, tmp_path_factory.mktemp("assigned"), run_tests=False)


@pytest.fixture
def otter_assigned(assigned):
    if assigned is None:
        pytest.skip(f"otter-grader is not installed ({classroom.OTTER_PIN})")
    return assigned


@pytest.fixture(scope="module")
def edition(tmp_path_factory, assigned):
    instructor = sorted((ROOT / "book").glob("*.ipynb"))
    before = _digest(instructor)
    out = tmp_path_factory.mktemp("student") / "edition"
    made = classroom.make_student_edition(
        out,
        chapters=None,  # every chapter: the build is then strict (warnings are errors)
        assignments=assigned is not None,
        assigned=assigned,
        build=True,
        execute=False,
    )
    made.instructor_unchanged = _digest(instructor) == before
    return made


def test_instructor_notebooks_unchanged(edition):
    assert edition.instructor_unchanged


def test_student_edition_has_no_solution_text(edition):
    html = sorted((edition.html / "book").glob("*.html"))
    assert {p.stem for p in html} >= {p.stem for p in IN_TOC}
    assert not (edition.html / "book" / "95_instructor_guide.html").exists()
    for chapter in IN_TOC:  # something to look for in every chapter
        assert len(edition.fingerprints[f"book/{chapter.name}"]) > 10, chapter.name
    assert classroom.find_leaks(edition.out) == {}
    for chapter in IN_TOC:  # the exercises themselves are still there
        page = (edition.html / "book" / f"{chapter.stem}.html").read_text()
        assert page.count('class="exercise admonition') >= 3, chapter.name
        # positive control of the HTML check: the student's prose is found in the HTML text
        nb = nbformat.read(edition.out / "book" / chapter.name, as_version=4)
        prose = classroom.Fingerprints(
            {
                w
                for c in nb.cells
                if c.cell_type == "markdown"
                for w in classroom._windows(c.source)
            },
            set(),
        )
        found = len(prose.found_in(classroom.html_text(page)))
        assert found > 0.6 * len(prose), (chapter.name, found, len(prose))


def test_student_edition_ships_assignments_without_answers(edition, otter_assigned):
    assert sorted(EXPECTED) == classroom.available_assignments()  # every one has samples
    for name in classroom.available_assignments():
        folder = edition.out / "assignments" / name
        text = classroom.notebook_text(nbformat.read(folder / f"{name}.ipynb", as_version=4))
        assert "grader.check(" in text and "..." in text
        prints = classroom.assignment_fingerprints(
            ROOT / "classroom" / "assignments" / f"{name}.ipynb"
        )
        assert len(prints.code) >= 5
        for path in folder.rglob("*"):
            if path.is_file():
                assert not prints.found_in(path.read_text(errors="replace")), path


# -- autograding ----------------------------------------------------------------------------------


# Each assignment's sample submissions, tests/data/classroom/<name>/: correct.ipynb scores full
# points; incorrect.ipynb scores what expected.json says, per question: [score, points].
EXPECTED = {
    path.parent.name: {q: tuple(v) for q, v in json.loads(path.read_text()).items()}
    for path in sorted(DATA.glob("*/expected.json"))
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_grade_writes_csv(name, otter_assigned, tmp_path):
    """Grading a folder writes a CSV: the correct sample scores full marks; the incorrect one loses
    points on public tests and on hidden tests its public tests did not catch. Chapter 02 goes
    through the instructor's command line (`main`), chapter 01 through the Python function."""
    csv_path = tmp_path / "scores.csv"
    if name == "02_soft_labels":  # the command line, called in-process (no second interpreter)
        argv = ["grade", "02", str(DATA / name), "--autograder", str(otter_assigned[name].zip),
                "--csv", str(csv_path)]  # fmt: skip
        assert classroom.main(argv) == 0
    else:
        classroom.grade(DATA / name, otter_assigned[name].zip, csv_path)
    rows = {r["submission"]: r for r in csv.DictReader(csv_path.open())}
    assert set(rows) == {"correct.ipynb", "incorrect.ipynb"}
    expected = EXPECTED[name]
    possible = sum(points for _, points in expected.values())
    for question, (score, points) in expected.items():
        assert float(rows["correct.ipynb"][question]) == points
        assert float(rows["incorrect.ipynb"][question]) == score, question
    assert float(rows["correct.ipynb"]["percent"]) == 100.0
    assert float(rows["incorrect.ipynb"]["possible"]) == possible
    assert not rows["correct.ipynb"]["error"] and not rows["incorrect.ipynb"]["error"]


def test_student_sees_pass_fail_and_hint_not_answer(otter_assigned, tmp_path):
    """Running the incorrect submission in the student folder: grader.check reports each public
    test with its hint, and shows neither the solution nor the hidden tests."""
    from nbclient import NotebookClient

    work = tmp_path / "student"
    shutil.copytree(otter_assigned["02_soft_labels"].student, work)
    nb = nbformat.read(DATA / "02_soft_labels" / "incorrect.ipynb", as_version=4)
    NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(work)}}).execute()
    checks = [
        classroom.notebook_text(new_notebook(cells=[c]))
        for c in nb.cells
        if c.cell_type == "code" and "grader.check" in c.source
    ]
    assert "All test cases passed" in checks[0]  # kd_gradient: public tests pass (hidden fail)
    assert "Test case failed" in checks[1]
    assert "If the mean accuracy never reaches the target, return float('inf')." in checks[1]
    prints = classroom.assignment_fingerprints(
        ROOT / "classroom" / "assignments" / "02_soft_labels.ipynb"
    )
    assert not prints.found_in("\n".join(checks))


def test_assignment_student_text_keeps_signatures_not_solutions():
    master = ROOT / "classroom" / "assignments" / "04_soft_vs_hard_neurons.ipynb"
    seen = classroom.assignment_student_text(master)
    prints = classroom.assignment_fingerprints(master)
    assert "def relu_ntk_gram(x):" in seen  # the signature is the student's to see
    assert prints.code and not prints.found_in(seen)  # no solution line or hidden test
