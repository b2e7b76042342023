# Every target is self-sufficient on a fresh machine: it creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
JOBS   ?= 1
# The exact versions that passed (constraints.txt); pyproject.toml keeps lower bounds only.
PIP    := $(BIN)/pip install --quiet -c constraints.txt

.PHONY: setup book book-student test unit regression notebooks notebooks-check clean weights bench calibrate release-check

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch torchvision
	@# the distribution was called "companion" before it became robust-imaging-companion: drop that old install
	$(BIN)/pip uninstall --quiet --yes companion 2>/dev/null || true
	$(PIP) -e ".[book,test]"
	touch $(STAMP)

setup: $(STAMP)

## book: execute every chapter with papermill (profile "book", cached in _build/book/runs, JOBS=N at once),
## check its claims, generate the reproducibility and API appendices, build the HTML into _build/book/_build/html
book: $(STAMP)
	$(BIN)/python -m companion book --profile book --jobs $(JOBS)

## book-student: the student edition, the same book without the exercises' solutions, into _build/book-student/_build/html;
## it reuses the runs of make book (_build/book/runs: runs only what make book would) and checks that no solution shows
book-student: $(STAMP)
	$(BIN)/python -m companion book --profile book --edition student --jobs $(JOBS)

## test: unit tests, papermill regression of every chapter (profile "ci"), then the same book build from those runs
test: $(STAMP)
	$(BIN)/python -m pytest tests
	$(BIN)/python -m companion book --profile ci

## calibrate: re-run every chapter's ci profile over seeds, threads and CPU kernels; rewrite tests/expected
calibrate: $(STAMP)
	$(BIN)/python -m companion calibrate

unit: $(STAMP)
	$(BIN)/python -m pytest tests -m "not chapter"

regression: $(STAMP)
	$(BIN)/python -m pytest tests -m chapter

## notebooks: the chapters as reader notebooks in _build/notebooks/<part>/<chapter>.ipynb: plain Jupyter Markdown
## (no MyST roles or directives, macros expanded, solutions collapsed), values glued from the last current book run,
## a first cell that installs the companion where it is missing (Colab), no outputs (companion/notebooks.py)
notebooks: $(STAMP)
	$(BIN)/python -m companion notebooks --out _build/notebooks --runs _build/book/runs

## notebooks-check: the reader's path end to end (about 15 min): a fresh venv in _build/reader-venv with only the
## reader requirements, then every reader notebook run with papermill in the ci profile (scripts/check_reader_notebooks.sh)
notebooks-check:
	PYTHON=$(PYTHON) bash scripts/check_reader_notebooks.sh

## weights: retrain every shipped weight file in companion/weights/ from scratch (see companion/pretrained.py)
weights: $(STAMP)
	$(BIN)/python -m companion.pretrained

## bench: speed of the companion's Radon transform and FBP against scikit-image (not part of the tests)
bench: $(STAMP)
	$(BIN)/python benchmarks/ct_speed.py

## release-check: the version in pyproject.toml, CITATION.cff and CHANGELOG.md agree; CITATION.cff has the
## required keys; the licence files exist (tests/test_release.py, also part of make unit and make test)
release-check: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_release.py

clean:
	rm -rf _build
