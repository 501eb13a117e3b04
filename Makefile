# handsigns: two commands on a fresh machine — `make repro` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# dvc.yaml runs `python stages/...`: the venv's python must come first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install repro test gate lint bench clean-venv
.DEFAULT_GOAL := repro

# (Re)install when the project's metadata changes; the stamp keeps a second `make` instant.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Run the whole pipeline on the data params.yaml pins. Another copy or data set, as a DVC experiment
# (SHA256= pins it; without, the observed hash is recorded):
#   make repro SOURCE=path/or/url [SHA256=...]
# The value is quoted for DVC's -S parser (Hydra), where a bare `=`, `&` or `,` in a URL would not parse.
repro: $(STAMP)
ifdef SOURCE
	$(BIN)/dvc exp run -S "data.source='$(SOURCE)'" -S 'data.sha256=$(or $(SHA256),null)'
else
	$(if $(SHA256),$(error SHA256= pins the archive SOURCE= names; give both))$(BIN)/dvc repro
endif

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The metric regression gate (.ci/run): run every stage, print `dvc metrics diff $(GATE_BASE)`, fail when
# val/test accuracy dropped by more than ci.max_accuracy_drop or HEAD's committed run does not reproduce.
GATE_BASE ?= main
gate: $(STAMP)
	$(BIN)/handsigns gate --reproduce --exact --base '$(GATE_BASE)'

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/split_scaling.py

clean-venv:
	rm -rf $(VENV)
