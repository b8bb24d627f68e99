"""Print the built HTML book to one PDF, offline, without LaTeX.

Each page of the table of contents (``_toc.yml``: the root, then every chapter and appendix in
order) is opened in headless Chromium from a local server, with maths typeset by the book's own
MathJax, printed with the browser's print style sheet (no sidebars), and the pages are merged with
``pypdf`` into one file with a bookmark per chapter.

Usage (after ``make book``)::

    .venv/bin/python tools/book_pdf.py               # -> _build/pdf/distillation-executed.pdf
    .venv/bin/python tools/book_pdf.py --solutions   # exercises' solutions expanded
    .venv/bin/python tools/book_pdf.py --html DIR --output FILE.pdf

Needs Debian's ``chromium`` and the ``pypdf`` and ``websocket-client`` packages.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import yaml
from pypdf import PdfReader, PdfWriter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headless import Chromium, serve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Run before printing: links to other pages would point at the temporary local server, so they
# become plain text; links within the page stay. Optionally open every hidden solution.
PREPARE = """
(expand => {
  const style = document.createElement('style');  // long code lines wrap instead of being cut
  style.textContent = '@media print { pre { white-space: pre-wrap; overflow-wrap: anywhere; } }';
  document.head.appendChild(style);
  document.querySelectorAll('a[href]').forEach(a => {
    const url = new URL(a.href, location.href);
    const otherPage = url.origin === location.origin && url.pathname !== location.pathname;
    if (otherPage) a.removeAttribute('href');
  });
  if (expand) {
    document.querySelectorAll('details').forEach(d => { d.open = true; });
    document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
  }
  return document.title;
})(%s)
"""


def toc_pages(toc_file: Path) -> list[str]:
    """Document names of the book in reading order (``root`` first), from a jb-book ``_toc.yml``."""
    toc = yaml.safe_load(toc_file.read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", [toc]):
        walk(part.get("chapters"))
    return pages


def book_pdf(
    html_dir: Path, output: Path, solutions: bool = False, chromium: str | None = None
) -> Path:
    """Print every page of ``_toc.yml`` from the built ``html_dir``, merged into ``output``."""
    pages = toc_pages(ROOT / "_toc.yml")
    missing = [p for p in pages if not (html_dir / f"{p}.html").exists()]
    if missing:
        raise FileNotFoundError(f"not built (run `make book` first): {missing}")
    writer = PdfWriter()
    with serve(html_dir) as base, Chromium(chromium, width=1000, height=1400) as browser:
        for page in pages:
            visit = browser.open(f"{base}/{page}.html")
            if visit.blocked:
                print(f"warning: {page} tried to load {visit.blocked}", file=sys.stderr)
            title = browser.evaluate(PREPARE % ("true" if solutions else "false"))
            title = title.split(" — ")[0].split(" | ")[0].strip() or page
            data = browser.pdf(
                printBackground=True,
                paperWidth=8.27,  # A4, inches
                paperHeight=11.69,
                marginTop=0.6,
                marginBottom=0.7,
                marginLeft=0.6,
                marginRight=0.6,
                displayHeaderFooter=True,
                headerTemplate="<span></span>",
                footerTemplate=(
                    '<div style="font-size:8px;width:100%;text-align:center;color:#666">'
                    '<span class="title"></span> · <span class="pageNumber"></span></div>'
                ),
            )
            writer.append(PdfReader(io.BytesIO(data)), outline_item=title)
            print(f"{page}: {len(PdfReader(io.BytesIO(data)).pages)} pages", file=sys.stderr)
    writer.add_metadata({"/Title": "Distillation, Executed"})
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("wb") as handle:
        writer.write(handle)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--html", type=Path, default=ROOT / "_build" / "html", help="built HTML book"
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "_build" / "pdf" / "distillation-executed.pdf"
    )
    parser.add_argument("--solutions", action="store_true", help="expand exercises' solutions")
    parser.add_argument("--chromium", help="browser executable (default: chromium on PATH)")
    args = parser.parse_args(argv)
    path = book_pdf(args.html, args.output, args.solutions, args.chromium)
    print(f"wrote {path} ({len(PdfReader(path).pages)} pages)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
