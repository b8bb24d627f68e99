"""The book builds strictly (warnings are errors) and serves its maths locally.

The build renders the chapters as this session's nbmake tests executed them (at quick scale) and
executes the rest itself: every chapter without --nbmake, and a chapter that failed under nbmake,
whose claims raise again, so a theorem that no longer holds fails this test as well as its nbmake
test (``book_session.py``).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built_html(built_book):
    html, returncode, log = built_book
    assert returncode == 0, log
    return html


def test_book_builds_with_warnings_as_errors(built_book):
    _, returncode, log = built_book
    assert returncode == 0, log


def test_every_toc_page_is_built(built_html):
    toc = (ROOT / "_toc.yml").read_text()
    for name in re.findall(r"file: (\S+)", toc) + [re.search(r"root: (\S+)", toc).group(1)]:
        assert (built_html / f"{name}.html").exists(), name


def test_mathjax_is_served_locally(built_html):
    for page in built_html.glob("book/*.html"):
        html = page.read_text()
        scripts = re.findall(r'<script[^>]+src="([^"]+)"', html)
        external = [s for s in scripts if s.startswith(("http:", "https:", "//"))]
        assert not external, f"{page.name} loads external scripts: {external}"
        if re.search(r'class="math', html):
            assert "_static/mathjax/tex-mml-chtml.js" in html
    assert (built_html / "_static" / "mathjax" / "tex-mml-chtml.js").exists()


def test_claims_ledger_page_lists_claims(built_html):
    html = (built_html / "book" / "90_claims_ledger.html").read_text()
    assert "soft-labels" in html
    assert re.search(r"claims: \d+ passed, 0 failed", html), "the ledger shows failed claims"
