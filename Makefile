# Every target is self-sufficient on a fresh machine: it creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TORCH  := torch==2.14.1 torchvision==0.29.1
CHAPTERS := $(shell find book -name '*.md' -not -name intro.md -path 'book/*/*')

.PHONY: setup book test unit regression book-check notebooks clean weights bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[book,test]"
	touch $(STAMP)

setup: $(STAMP)

## book: execute every chapter (profile "book") and build the HTML book into _build/html
book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

## test: unit tests, papermill regression of every chapter (profile "ci"), book build check
test: $(STAMP)
	$(BIN)/python -m pytest tests
	$(BIN)/python -m companion stage-book _build/ci _build/ci-book
	$(BIN)/jupyter-book build _build/ci-book -W -n --keep-going

unit: $(STAMP)
	$(BIN)/python -m pytest tests -m "not chapter"

regression: $(STAMP)
	$(BIN)/python -m pytest tests -m chapter

## notebooks: .ipynb versions of the chapters (for download, Colab and papermill) in _build/notebooks
notebooks: $(STAMP)
	@for f in $(CHAPTERS); do \
	  out=_build/notebooks/$${f#book/}; out=$${out%.md}.ipynb; mkdir -p $$(dirname $$out); \
	  $(BIN)/jupytext --quiet --to ipynb --output $$out $$f && echo "wrote $$out"; \
	done

## weights: retrain every shipped weight file in companion/weights/ from scratch (see companion/pretrained.py)
weights: $(STAMP)
	$(BIN)/python -m companion.pretrained

## bench: speed of the companion's Radon transform and FBP against scikit-image (not part of the tests)
bench: $(STAMP)
	$(BIN)/python benchmarks/ct_speed.py

clean:
	rm -rf _build
