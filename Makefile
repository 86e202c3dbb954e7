# Two commands on a fresh machine: `make run` and `make test` (see README).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist

.PHONY: help run test test-slow gpu-check lint bench data report presets docs clean-venv

help:  ## list the targets
	@echo "make run        train the default config (FW-DTP, F-MNIST, FC) and print its test error"
	@echo "make test       the test suite (CI runs exactly this)"
	@echo "make lint       ruff over the tree (config in pyproject.toml; tests/test_lint.py runs it too)"
	@echo "make test-slow  long checks (pytest marker slow): e.g. every default vs its frozen control, 5 epochs"
	@echo "make bench      speed benchmarks -> results/bench/"
	@echo "make gpu-check  every algorithm x arch for a few batches on CUDA (fp32, bf16) + epoch timings -> results/bench/gpu.json"
	@echo "make data       install Fashion-MNIST (Debian package) if missing"
	@echo "make report     tables and figures in results/ from results/runs"
	@echo "make presets    regenerate conf/experiment from scripts/make_presets.py"
	@echo "make docs       regenerate docs/configuration.md from the config schemas"
	@echo "make table-<paper>+<table> ARGS=seed=1,2,3   run a whole table"
	@echo "make clean-venv remove .venv"

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision pinned to the releases this project is tested with
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[dev,launchers]"
	touch $(STAMP)

# Make sure the default dataset (Fashion-MNIST) is present: Debian's package when we are root
# on Debian, otherwise torchvision's download on first use (dataset.download=true).
data:
	@if [ ! -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null)) || echo "apt-get failed; train.py will try torchvision's download"; \
	fi

run: $(STAMP) data
	$(PY) train.py

test: $(STAMP) data
	$(PY) -m pytest -q

gpu-check: $(STAMP)
	PY=$(PY) scripts/gpu_check.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test-slow: $(STAMP) data
	$(PY) -m pytest -q -m slow

bench: $(STAMP) data
	$(PY) scripts/bench.py

# the committed tables and figures, from the committed runs (your own runs: scripts/report.py -> reports/)
report: $(STAMP)
	$(PY) scripts/report.py --runs results/runs --out results
	$(PY) scripts/report.py --runs results/runs/defaults_vs_frozen_fmnist_10ep --out results/defaults_vs_frozen \
		--group-by algorithm trainer.frozen_blocks

# regenerate conf/experiment/** from the paper tables in scripts/make_presets.py
presets: $(STAMP)
	$(PY) scripts/make_presets.py

# docs/configuration.md: every config key, its meaning (the schema field's comment) and default (composed)
docs: $(STAMP)
	$(PY) scripts/config_docs.py

# a whole table: make table-shibuya2023+fmnist ARGS="seed=1,2,3"  (+ stands for /)
table-%: $(STAMP) data
	scripts/run_table.sh $(subst +,/,$*) $(ARGS)

clean-venv:
	rm -rf $(VENV)
