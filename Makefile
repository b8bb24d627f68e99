# Two commands on a fresh clone (see README):
#   make book   build the book into _build/html (creates .venv and installs everything first)
#   make test   run every test: kdlib unit tests, every chapter at quick scale, the strict build
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup browser book test unit notebooks build-check lint reproduce clean

setup: $(STAMP)

# Debian's Chromium for the headless-browser test (tests/test_browser.py) and the PDF
# (tools/book_pdf.py). Installed with apt when missing and allowed (root, or sudo without a
# password); otherwise a note, and the browser test skips (or fails under CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	  else echo "note: chromium is missing and apt needs root: the browser test will not run"; exit 0; fi; \
	  echo "installing Debian's chromium (apt)"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "Open _build/html/index.html"

# One pytest worker per CPU (pytest-xdist), each with one math thread: the suite is many small
# single-threaded jobs, and two workers of two threads each on two cores would oversubscribe.
test: $(STAMP) browser
	OMP_NUM_THREADS=1 $(PY) -m pytest tests --nbmake book -n auto

lint: $(STAMP)
	$(VENV)/bin/ruff format --check kdlib tests
	$(VENV)/bin/ruff check kdlib tests

reproduce: $(STAMP)
	$(PY) -m kdlib reproduce all --scale full

clean:
	rm -rf _build .pytest_cache
