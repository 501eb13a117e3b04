# handsigns: two commands on a fresh machine — `make repro` and `make test`. The targets: `make help`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# dvc.yaml runs `python stages/...`: the venv's python must come first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

LOCK   := requirements.txt
# torch's CPU build (PyTorch's own index: 1.5 GB, not the lock's 6 GB CUDA build), hash-pinned as the lock is
CPU_LOCK  := requirements-cpu.txt
CPU_INDEX := https://download.pytorch.org/whl/cpu
# The torch release the committed baseline ran on: both locks are compiled with it as a constraint.
TORCH_PINS := tools/torch-pins.txt

.PHONY: help install lock lock-cpu site repro exp exps test test-all gate verify remote pull lint check-workflows gpu-check bench bench-split bench-resume bench-queue bench-scaling bench-finetune bench-generality bench-audit screenshot notebook clean-venv
.DEFAULT_GOAL := repro

# Everything comes from the locks: exact versions, sha256-checked, no resolver; uv installs them (pip where uv
# cannot run). The stamp makes a second `make` instant and reinstalls when a lock or the project's metadata
# changes. torch (tools/torch_source.py): on Linux with no NVIDIA GPU, the CPU build from requirements-cpu.txt
# (PyTorch's index) where that index answers; else, saying so, the lock's. TORCH_INDEX=none: the lock's always;
# TORCH_INDEX=URL: requirements-cpu.txt from that index (a mirror). The rest comes from the lock either way.
TORCH_INDEX ?= auto
$(STAMP): pyproject.toml $(LOCK) $(wildcard $(CPU_LOCK)) tools/install.sh tools/torch_source.py
	tools/install.sh '$(PYTHON)' $(VENV) $(LOCK) '$(TORCH_INDEX)' $(CPU_LOCK)
	touch $(STAMP)

install: $(STAMP)

# Refresh the locks after changing pyproject.toml's dependencies: requirements.txt, one universal lock (every
# platform and Python the project supports) with hashes, by the command its header names (Dependabot re-runs
# it); then requirements-cpu.txt where PyTorch's CPU index answers. Versions already locked stay unless UPGRADE=1.
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra pipeline --extra notebook --group dev --constraint $(TORCH_PINS) \
		--universal --python-version 3.10 --generate-hashes --quiet $(if $(UPGRADE),--upgrade) --output-file $(LOCK)
	@if $(BIN)/python tools/torch_source.py --probe $(CPU_INDEX); then $(MAKE) --no-print-directory lock-cpu; \
	else echo "make lock: $(CPU_LOCK) kept as it is: $(CPU_INDEX) does not answer here" >&2; fi

# torch and torchvision's CPU wheels alone (their dependencies are the main lock's), every file's hash.
lock-cpu: $(STAMP)
	$(BIN)/uv pip compile $(TORCH_PINS) --index-url $(CPU_INDEX) --no-deps --universal --python-version 3.10 \
		--generate-hashes --custom-compile-command "make lock-cpu" --quiet $(if $(UPGRADE),--upgrade) \
		--output-file $(CPU_LOCK)

# Run the whole pipeline on the data params.yaml pins (the SIGNS zip shipped in datasets/). Another copy or
# data set, as a DVC experiment in the workspace (SHA256= pins it; without, the observed hash is recorded):
#   make repro SOURCE=path/or/url [SHA256=...]
# The value is quoted for DVC's -S parser (Hydra), where a bare `=`, `&` or `,` in a URL would not parse.
# `dvc exp run -S` writes the new source into params.yaml; the last two lines say so and how to go back.
repro: $(STAMP)
ifdef SOURCE
	$(BIN)/dvc exp run -S "data.source='$(SOURCE)'" -S 'data.sha256=$(or $(SHA256),null)'
	@echo "make repro: params.yaml now names data.source $(SOURCE) (and data.sha256); the outputs are that run's"
	@echo "make repro: back to the shipped data: git checkout -- params.yaml dvc.lock metrics data/provenance.json && make repro"
else
	$(if $(SHA256),$(error SHA256= pins the archive SOURCE= names; give both))$(BIN)/dvc repro
endif

# The demo page as a static site that runs the model in the browser (no server, no install): site/, from the
# exported model (make repro first) and ONNX Runtime Web (npm ci: package-lock.json's integrity hashes).
#   make site && python -m http.server -d site    then http://localhost:8000/      (docs/site.md)
site: $(STAMP)
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	$(BIN)/python tools/site.py $(SITE_ARGS)

# The experiments of HEAD side by side, readable at 200 columns: the headline metrics, the params that differ and
# the machine of each row (device, its model, precision); file hashes left out. More: make exps EXPS_ARGS=-A
exps: $(STAMP)
	$(BIN)/dvc exp show --no-pager --only-changed --precision 4 --drop '.*/|train_images_per_s$$|.*loss$$|.*macro_f1$$' \
		--keep '^(test\.accuracy|val\.accuracy|train_seconds|device|device_name|precision)$$' $(EXPS_ARGS)

# A variant as a DVC experiment, without activating the venv (this Makefile puts it first on PATH):
#   make exp SET='lr=0.01 epochs=20' [NAME=lr-0.01] [EXP_ARGS=--queue]     then `make exps`
exp: $(STAMP)
	$(if $(SET),,$(error make exp needs SET=, e.g. make exp SET='lr=0.01'))$(BIN)/dvc exp run \
		$(foreach s,$(SET),-S '$(s)') $(if $(NAME),-n '$(NAME)') $(EXP_ARGS)

# `make test`, the edit-and-test loop: every test not marked slow or e2e. `make test-all` (what .ci/run runs):
# those first, to fail fast, then the slow and end-to-end ones: every test, each once. TEST_JOBS pytest-xdist
# workers take the tests one at a time, except that a module defining a module-scoped fixture goes to one
# worker whole (tests/conftest.py), so the fixture is built once. TEST_JOBS=0: one process.
FAST := not slow and not e2e
TEST_JOBS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadgroup
test: $(STAMP)
	$(PYTEST) -m '$(FAST)' $(PYTEST_ARGS)

test-all: test
	$(PYTEST) -m 'not ($(FAST))' $(PYTEST_ARGS)

# The metric regression gate (.ci/run): run every stage, print `dvc metrics diff $(GATE_BASE)`, fail when held-out
# accuracy dropped beyond noise (the ci params) or HEAD's committed run does not reproduce (docs/comparing-runs.md).
GATE_BASE ?= main
gate: $(STAMP)
	$(BIN)/handsigns gate --reproduce --exact --base '$(GATE_BASE)'

# The same gate on the run HEAD commits, made on another machine (a GPU box) and pushed to the DVC remote: pull it,
# check it against dvc.lock, re-run evaluate and the export check on its model; no training (docs/sharing-runs.md).
verify: $(STAMP)
	$(BIN)/handsigns gate --verify --base '$(GATE_BASE)'

# Runs travel through a DVC remote (docs/sharing-runs.md). Name the team's once, then commit .dvc/config:
#   make remote URL=ssh://user@host/srv/handsigns-dvc [NAME=storage]   (also a path, s3://..., https:// mirror)
# `make pull` then gets the committed run's model, data and export on any clone instead of training.
remote: $(STAMP)
	$(if $(URL),,$(error make remote needs URL=, e.g. make remote URL=ssh://user@host/srv/handsigns-dvc))
	$(BIN)/handsigns remote '$(URL)' --name '$(or $(NAME),storage)'

pull: $(STAMP)
	$(BIN)/handsigns pull

# Types: mypy over what pyproject.toml's [tool.mypy] names (src/ and stages/).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The GitHub workflow and Dependabot's settings, checked statically (nothing here can run them): their schemas,
# then zizmor's security audits (unpinned actions, token permissions, persisted credentials, template injection,
# Dependabot cooldowns), offline.
check-workflows: $(STAMP)
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/check-jsonschema --builtin-schema vendor.dependabot .github/dependabot.yml
	$(BIN)/zizmor --offline .github

# Speed against the course notes' loop, side by side in one run (bench/results/speed.{json,md}; needs `make repro`).
# The threads are pinned so that runs compare: 2, or THREADS=N.
bench: $(STAMP)
	OMP_NUM_THREADS=$(or $(THREADS),2) $(BIN)/python bench/speed.py $(BENCH_ARGS)

# The CUDA path on a real GPU in a few minutes (bench/gpu_check.py; docs/speed.md has the figures): the default and
# the notes' recipes in fp32 and bf16 (auto is one), two deterministic runs compared byte for byte, the gate's rule
# against the committed run. Needs the split (dvc repro split). On a GPU box whose Python already has torch, numpy, pandas,
# Pillow, PyYAML and tqdm, without this venv: make gpu-check GPU_PYTHON=python3 GPU_CHECK_ARGS='--out DIR'
gpu-check: $(if $(GPU_PYTHON),,$(STAMP))
	PYTHONPATH=src $(or $(GPU_PYTHON),$(BIN)/python) bench/gpu_check.py $(GPU_CHECK_ARGS)

bench-split: $(STAMP)
	$(BIN)/python bench/split_scaling.py

# Streaming against in-memory data (50,000 generated JPEGs at 128 px), and 1 against 2 training processes on SIGNS.
bench-scaling: $(STAMP)
	$(BIN)/python bench/scaling.py

# Fine-tuning from the SIGNS model onto photos from another "camera", against training them from scratch.
bench-finetune: $(STAMP)
	$(BIN)/python bench/finetune.py $(BENCH_ARGS)

# The default recipe, untouched, on image-folder sets derived here (few-shot SIGNS, drawn shapes, grey 28 px,
# letters, 1024 px photos, digit scans): test accuracy over seeds 0 1 2 per set (bench/results/generality.{json,md}).
bench-generality: $(STAMP)
	$(BIN)/python bench/generality.py $(BENCH_ARGS)

# The course's notebook, in Spanish (notebooks/curso.ipynb), in JupyterLab. Saving it there also rewrites its
# plain-text twin notebooks/curso.py (jupytext), the file to read in a diff. Colab: the badge in README.es.md.
# As root (a container, WSL's default user) JupyterLab wants --allow-root. More options: NOTEBOOK_ARGS=--no-browser
notebook: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir='$(CURDIR)' $(if $(filter 0,$(shell id -u)),--allow-root) $(NOTEBOOK_ARGS) \
		notebooks/curso.ipynb

# `handsigns audit` on SIGNS with 5 % of its train labels flipped: how many its top list holds
# (bench/results/audit.{json,md}).
bench-audit: $(STAMP)
	$(BIN)/python bench/audit.py $(BENCH_ARGS)

# docs/demo.png: the demo page (`handsigns serve`) with a SIGNS photo, in headless Chromium (needs make repro).
screenshot: $(STAMP)
	$(BIN)/python tools/screenshot.py

# What a resume saves: the train stage killed after epoch 10 and re-run, against an uninterrupted one.
bench-resume: $(STAMP)
	$(BIN)/python bench/resume.py

# DVC's queue with two workers: queued experiments that finish and fail, round by round (docs/scaling.md).
bench-queue: $(STAMP)
	$(BIN)/python bench/queue_race.py $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)

# `make help`: the targets, one line each (this list is their one home; README points here).
help:
	@printf '%s\n' \
	  'make repro              the whole pipeline (dvc repro); SOURCE=path/or/url runs it on other data' \
	  'make test               the fast tests, the edit-and-test loop (TEST_JOBS=2 workers; 0: one process)' \
	  'make test-all           every test, end-to-end runs included, as .ci/run runs them' \
	  'make lint               ruff check, ruff format --check, mypy over src/ and stages/' \
	  'make check-workflows    the GitHub workflows and Dependabot settings, checked statically' \
	  'make gate               reproduce every stage and hold the run to the committed one (docs/comparing-runs.md)' \
	  'make verify             the gate without training: HEAD'"'"'s run pulled from the DVC remote (docs/sharing-runs.md)' \
	  'make remote URL=...     name the team'"'"'s DVC remote once; make pull: the committed run'"'"'s outputs from it' \
	  'make exp SET=lr=0.01    try a variant: dvc exp run -S lr=0.01 (NAME=, EXP_ARGS=--queue)' \
	  'make exps               the experiments side by side: metrics, differing params, machine and precision' \
	  'make notebook           the course'"'"'s notebook in JupyterLab (Spanish)' \
	  'make site               the demo page as a static site in site/, the model running in the tab' \
	  'make screenshot         docs/demo.png, the demo page on a SIGNS photo (after make repro)' \
	  'make lock               refresh requirements.txt after changing pyproject.toml; make lock-cpu: requirements-cpu.txt' \
	  'make bench              speed and time to accuracy against the notes'"'"' loop (docs/speed.md)' \
	  'make bench-generality   the default recipe on eleven other image folders (docs/generality.md)' \
	  'make bench-split | bench-resume | bench-queue | bench-scaling | bench-finetune | bench-audit  the other benchmarks' \
	  'make gpu-check          the CUDA path on a real GPU in a few minutes (docs/speed.md)' \
	  'make clean-venv         remove .venv' \
	  '.venv/bin/handsigns -h  predict, serve, audit, compare, gate, remote, pull: the command itself'
