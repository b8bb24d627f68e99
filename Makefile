# Two commands on a fresh clone (see README):
#   make book   build the book into _build/html (creates .venv and installs everything first)
#   make test   run every test: kdlib unit tests, every chapter at quick scale, the strict build
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup book test unit notebooks build-check lint reproduce clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "Open _build/html/index.html"

test: $(STAMP)
	$(PY) -m pytest tests --nbmake book

lint: $(STAMP)
	$(VENV)/bin/ruff format --check kdlib tests
	$(VENV)/bin/ruff check kdlib tests

reproduce: $(STAMP)
	$(PY) -m kdlib reproduce all --scale full

clean:
	rm -rf _build .pytest_cache
