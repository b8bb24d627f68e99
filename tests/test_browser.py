"""Every page of the built book, opened in a headless Chromium with the network outside the site
blocked: no console error, no request leaving the site, every formula typeset by MathJax, every
image loaded, every internal link resolving, search working offline.

Needs Debian's ``chromium`` (``apt-get install -y chromium``; the Makefile's setup installs it).
Without it the browser tests are skipped with a reason, except under CI (``CI`` set), where a
missing browser fails them. Screenshots of a few pages go to ``_build/screenshots/``.

The book is built once per test session, shared with tests/test_book.py (every chapter executed
once, at quick scale); set ``KDLIB_BOOK_HTML`` to an existing ``_build/html`` to check that build
instead.
"""

from __future__ import annotations

import html.parser
import json
import os
import re
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from headless import Chromium, find_chromium, is_local, serve  # noqa: E402

SCREENSHOTS = ROOT / "_build" / "screenshots"
# (page relative to the site, screenshot name, JavaScript that scrolls to the part to show or None)
SCREENSHOTS_OF = [
    ("book/index.html", "index", None),
    ("book/02_soft_labels.html", "02_soft_labels", None),
    (
        "book/02_soft_labels.html",
        "02_soft_labels_theorem",
        "document.getElementById('soft-labels-thm-gradient').scrollIntoView()",
    ),
    (
        "book/02_soft_labels.html",
        "02_soft_labels_widget",
        "[...document.querySelectorAll('div.cell')]"
        ".find(c => c.textContent.includes('temperature_explorer')).scrollIntoView()",
    ),
    ("book/03_phuong_lampert.html", "03_phuong_lampert", None),
    (
        "book/06_label_averaging.html",
        "06_label_averaging_widget",
        "[...document.querySelectorAll('div.cell')]"
        ".find(c => c.textContent.includes('label_averaging_explorer')).scrollIntoView()",
    ),
    ("book/90_claims_ledger.html", "90_claims_ledger", None),
    ("book/92_notation.html", "92_notation", None),
    ("book/93_glossary.html", "93_glossary", None),
]
# Pages also checked when opened from disk (file://), without a server.
FROM_DISK = ["book/index.html", "book/02_soft_labels.html", "book/93_glossary.html"]
# Requests a browser makes on its own, not the page's: not the book's fault.
BROWSER_NOISE = ("/favicon.ico",)

# JavaScript run in each page once MathJax has finished.
MATHS_PROBLEMS = r"""
(() => {
  const problems = [];
  document.querySelectorAll('.math').forEach(el => {
    if (!el.querySelector('mjx-container') && !el.closest('mjx-container'))
      problems.push('not typeset: ' + el.textContent.trim().slice(0, 80));
  });
  document.querySelectorAll('mjx-merror, [data-mjx-error]').forEach(el => problems.push(
    'MathJax error: ' + (el.getAttribute('data-mjx-error') || el.textContent).slice(0, 80)));
  // Left-over TeX: a dollar sign, \( \) \[ \], or a \command in visible text outside code.
  const raw = /\$|\\[()\[\]]|\\[a-zA-Z]{2,}/;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (node.parentElement.closest('pre, code, script, style, textarea, mjx-container, .highlight'))
      continue;
    if (raw.test(node.textContent))
      problems.push('raw TeX in text: ' + node.textContent.trim().slice(0, 80));
  }
  return problems;
})()
"""
BROKEN_IMAGES = """
Promise.all([...document.images].map(img => {
  img.loading = 'eager';
  const src = img.getAttribute('src');
  return img.decode().then(
    () => (img.naturalWidth > 0 || src.endsWith('.svg')) ? null : src,
    () => src);
})).then(results => ({broken: results.filter(x => x), count: results.length}))
"""
SEARCH_RESULTS = """
new Promise(resolve => {
  const start = Date.now();
  const poll = () => {
    const links = [...document.querySelectorAll('#search-results li a')].map(a => a.href);
    if (links.length || Date.now() - start > 15000) resolve(links); else setTimeout(poll, 100);
  };
  poll();
})
"""


def _ci() -> bool:
    return bool(os.environ.get("CI"))


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        message = "no chromium executable: install it with `apt-get install -y chromium`"
        if _ci():
            pytest.fail(f"{message} (required under CI)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def site(built_book) -> Path:
    """The built book's HTML folder: the test session's one strict build (``conftest.py``),
    unless ``KDLIB_BOOK_HTML`` names an existing one."""
    if os.environ.get("KDLIB_BOOK_HTML"):
        return Path(os.environ["KDLIB_BOOK_HTML"]).resolve()
    html, returncode, log = built_book
    assert returncode == 0, log
    return html


def _pages(site: Path) -> list[str]:
    skip = ("_static/", "_sources/", "_images/", "_downloads/")
    return sorted(
        p.relative_to(site).as_posix()
        for p in site.rglob("*.html")
        if not p.relative_to(site).as_posix().startswith(skip)
    )


def _redirect_target(page: Path) -> str | None:
    match = re.search(r'http-equiv="refresh"[^>]*url=([^"]+)"', page.read_text(), re.I)
    return match.group(1) if match else None


@pytest.fixture(scope="module")
def visits(chromium, site):
    """Open every page once; returns page -> (Visit, maths problems, image report)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    results = {}
    with serve(site) as base, Chromium(chromium) as browser:
        for page in _pages(site):
            if _redirect_target(site / page):
                continue  # a bare redirect (the root index.html); its target is checked as a page
            visit = browser.open(f"{base}/{page}")
            maths = browser.evaluate(MATHS_PROBLEMS)
            images = browser.evaluate(BROKEN_IMAGES)
            results[page] = (visit, maths, images)
        for page, name, scroll in SCREENSHOTS_OF:
            browser.open(f"{base}/{page}")
            if scroll:
                browser.evaluate(scroll)
                time.sleep(0.2)
            browser.screenshot(SCREENSHOTS / f"{name}.png")
        search = browser.open(f"{base}/search.html?q=temperature")
        search_links = browser.evaluate(SEARCH_RESULTS)
        browser.screenshot(SCREENSHOTS / "search.png")
        # Opened straight from disk (a USB stick, no server), as the README suggests.
        disk = {}
        for page in FROM_DISK:
            visit = browser.open((site / page).as_uri())
            disk[page] = (visit, browser.evaluate(MATHS_PROBLEMS))
        disk_search = browser.open((site / "search.html").as_uri() + "?q=temperature")
        disk_search_links = browser.evaluate(SEARCH_RESULTS)
    return {
        "pages": results,
        "search": (search, search_links),
        "disk": disk,
        "disk_search": (disk_search, disk_search_links),
    }


def _report(failures: dict[str, list[str]]) -> str:
    return "\n".join(f"{page}: {item}" for page, items in failures.items() for item in items)


def test_every_page_was_opened(site, visits):
    opened = set(visits["pages"])
    for required in (
        "book/index.html",
        "book/02_soft_labels.html",
        "book/92_notation.html",
        "book/93_glossary.html",
        "book/99_references.html",
        "search.html",
        "genindex.html",
    ):
        assert required in opened, f"{required} was not built or not opened"
    target = _redirect_target(site / "index.html")  # the site's entry point redirects to the book
    assert target and (site / target).exists(), target


def test_no_console_errors(visits):
    failures = {}
    for page, (visit, _, _) in visits["pages"].items():
        errors = [e for e in visit.errors if not any(noise in e for noise in BROWSER_NOISE)]
        if errors:
            failures[page] = errors
    assert not failures, "console errors or failed requests:\n" + _report(failures)


def test_no_request_leaves_the_site(visits):
    failures = {}
    for page, (visit, _, _) in visits["pages"].items():
        outside = visit.blocked + [u for u in visit.requested if not is_local(u)]
        if outside:
            failures[page] = sorted(set(outside))
    assert not failures, "requests outside the site (blocked):\n" + _report(failures)


def test_every_formula_is_typeset(visits):
    failures = {page: maths for page, (_, maths, _) in visits["pages"].items() if maths}
    assert not failures, "maths left untypeset:\n" + _report(failures)
    chapter = visits["pages"]["book/02_soft_labels.html"]
    assert not chapter[1]


def test_every_image_loads(visits):
    failures = {
        page: imgs["broken"] for page, (_, _, imgs) in visits["pages"].items() if imgs["broken"]
    }
    assert not failures, "images that did not load:\n" + _report(failures)
    # the soft-labels chapter shows its figures (including the widget's static fallback)
    assert visits["pages"]["book/02_soft_labels.html"][2]["count"] >= 5


def test_search_works_offline(visits):
    search, links = visits["search"]
    assert not [e for e in search.errors if not any(n in e for n in BROWSER_NOISE)], search.errors
    assert not search.blocked, search.blocked
    assert any("02_soft_labels.html" in link for link in links), (
        f"no hit for 'temperature': {links}"
    )


def test_pages_work_from_disk(visits):
    failures = {}
    for page, (visit, maths) in visits["disk"].items():
        if visit.errors or visit.blocked or maths:
            failures[page] = visit.errors + visit.blocked + maths
    assert not failures, "opened from disk:\n" + _report(failures)


def test_search_lists_results_from_disk(visits):
    """From file:// the search still finds pages; only the text snippets under each hit are missing
    (Sphinx fetches them, which browsers forbid for file:// pages: those errors are expected)."""
    search, links = visits["disk_search"]
    assert not search.blocked, search.blocked
    assert any(link.endswith("02_soft_labels.html") for link in links), links


def test_screenshots_saved(visits):
    for _, name, _ in SCREENSHOTS_OF:
        shot = SCREENSHOTS / f"{name}.png"
        assert shot.exists() and shot.stat().st_size > 10_000, f"{shot} missing or blank"


def test_book_prints_to_one_pdf(chromium, site, tmp_path):
    """tools/book_pdf.py: every page of the table of contents, one bookmark each, no LaTeX."""
    import book_pdf
    from pypdf import PdfReader

    pages = book_pdf.toc_pages(ROOT / "_toc.yml")
    pdf = book_pdf.book_pdf(site, tmp_path / "book.pdf", chromium=chromium)
    reader = PdfReader(pdf)
    assert len(reader.outline) == len(pages)
    assert len(reader.pages) >= len(pages)
    assert "Soft labels" in "".join(page.extract_text() for page in reader.pages[:12])


# -- static checks of the built HTML (no browser needed) -------------------------------------


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name") if tag != "meta" else ():
            if attrs.get(key):
                self.ids.add(attrs[key])
        url = attrs.get("href") if tag in ("a", "link") else attrs.get("src")
        if url and tag in ("a", "link", "img", "script", "source", "iframe"):
            self.targets.append(url)


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_internal_links_resolve(site):
    parsed: dict[Path, _Links] = {}

    def links_of(path):
        if path not in parsed:
            parsed[path] = _parse(path)
        return parsed[path]

    failures: dict[str, list[str]] = {}
    for page in _pages(site):
        source = site / page
        for url in links_of(source).targets:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc or url.startswith(("mailto:", "javascript:", "data:")):
                continue
            target = (source.parent / unquote(parts.path)).resolve() if parts.path else source
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                failures.setdefault(page, []).append(f"{url}: no file {target}")
            elif parts.fragment and target.suffix == ".html":
                if unquote(parts.fragment) not in links_of(target).ids:
                    failures.setdefault(page, []).append(f"{url}: no anchor #{parts.fragment}")
    assert not failures, "broken internal links:\n" + _report(failures)


def test_theorem_references_are_numbered_links(site):
    notation = (site / "book" / "92_notation.html").read_text()
    link = r'<a class="reference internal" href="02_soft_labels.html#([\w-]+)">(.*?)</a>'
    refs = re.findall(link, notation, re.S)
    texts = {anchor: re.sub(r"<[^>]+>", "", text) for anchor, text in refs}
    assert re.fullmatch(
        r"Theorem \d+(\.\d+)*", texts.get("soft-labels-thm-gradient", "").strip()
    ), texts
    chapter = (site / "book" / "02_soft_labels.html").read_text()
    assert 'id="soft-labels-thm-gradient"' in chapter


def test_launch_buttons_point_at_the_notebooks(site):
    config = (ROOT / "_config.yml").read_text()
    repo = re.search(r"^\s*url:\s*https://github\.com/(\S+?)/?\s*$", config, re.M).group(1)
    branch = re.search(r"^\s*branch:\s*(\S+)", config, re.M).group(1)
    chapter = (site / "book" / "02_soft_labels.html").read_text()
    assert (
        f"https://colab.research.google.com/github/{repo}/blob/{branch}/book/02_soft_labels.ipynb"
        in chapter
    )
    assert (
        f"https://mybinder.org/v2/gh/{repo}/{branch}?urlpath=tree/book/02_soft_labels.ipynb"
        in chapter
    )
    assert "/./" not in "".join(re.findall(r'href="(https://(?:colab|mybinder)[^"]+)"', chapter))
    assert (ROOT / "book" / "02_soft_labels.ipynb").exists()


def test_glossary_defines_its_terms(site):
    glossary = (site / "book" / "93_glossary.html").read_text()
    for term in (
        "knowledge distillation",
        "teacher",
        "student",
        "soft label",
        "temperature",
        "self-distillation",
        "NTK",
        "margin",
        "privileged information",
        "replica",
        "claim",
        "multi-view",
        "label averaging",
        "partial label learning",
    ):
        assert re.search(rf'<dt id="term-[^"]*">{re.escape(term)}', glossary, re.I), term


# -- chapter sources (no build needed) ---------------------------------------------------------


def _display_maths_inside_paragraphs(text: str) -> list[str]:
    """Lines opening a ``$$`` block right after a line of text: MyST does not start a maths block
    inside a paragraph, so the block is shown as raw TeX (with stray dollar signs)."""
    problems, fence, inside = [], None, False
    lines = text.splitlines()
    for number, line in enumerate(lines):
        stripped = line.strip()
        if fence is not None:  # inside a code fence: nothing is maths
            if stripped.startswith(fence):
                fence = None
            continue
        opener = re.match(r"(`{3,}|~{3,})(.*)", stripped)
        if opener and not inside:
            info = opener.group(2).strip()
            if not info.startswith("{") or info.startswith(("{code-cell", "{code")):
                fence = opener.group(1)
            continue
        if stripped.startswith("$$") and not inside:
            before = lines[number - 1].strip() if number else ""
            if before and not before.startswith((":", "```", "~~~")):
                problems.append(f"line {number + 1}: $$ right after {before[:50]!r}")
            inside = not (len(stripped) > 2 and stripped.endswith("$$"))  # one-line $$...$$
        elif inside and stripped.endswith("$$"):  # the closing $$, alone or ending a line
            inside = False
    return problems


def test_display_maths_starts_its_own_paragraph():
    failures = {}
    for path in sorted((ROOT / "book").glob("*.ipynb")) + sorted((ROOT / "book").glob("*.md")):
        if path.suffix == ".ipynb":
            cells = json.loads(path.read_text())["cells"]
            texts = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
        else:
            texts = [path.read_text()]
        problems = [p for text in texts for p in _display_maths_inside_paragraphs(text)]
        if problems:
            failures[path.name] = problems
    assert not failures, "put a blank line before each $$ block:\n" + _report(failures)
