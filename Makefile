# handsigns: two commands on a fresh machine — `make repro` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# dvc.yaml runs `python stages/...`: the venv's python must come first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: repro test lint bench clean-venv
.DEFAULT_GOAL := repro

# (Re)install when the project's metadata changes; the stamp keeps a second `make` instant.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Run the whole pipeline. Offline, from a local copy of the data:
#   make repro SOURCE=../shared/datasets/64x64_SIGNS.zip
repro: $(STAMP)
ifdef SOURCE
	$(BIN)/dvc exp run -S 'data.source=$(SOURCE)'
else
	$(BIN)/dvc repro
endif

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/split_scaling.py

clean-venv:
	rm -rf $(VENV)
