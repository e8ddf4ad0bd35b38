# The two commands a user needs: `make serve` and `make test`. Everything else builds on `make install`.
PYTHON ?= python3.11
VENV ?= .venv
MODEL ?= microsoft/beit-base-patch16-224-pt22k-ft22k
# RANDOM=tiny|base|large builds a randomly initialized BEiT instead of MODEL (offline; predictions are noise).
RANDOM ?=
# The built repository (beit_repository.names.DEFAULT_REPOSITORY): model_repository/ is its template.
REPOSITORY ?= output/model_repository
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
# beit-gateway (Azure ML and Hugging Face compatible REST), started beside Triton by `make serve`.
GATEWAY_PORT ?= 8080

BIN := $(VENV)/bin
CHECKPOINT_ARGS := $(if $(RANDOM),--random $(RANDOM),--model $(MODEL))

.PHONY: install build serve test lint bench clean

install: $(VENV)/.installed

# torch goes first and pinned: any other resolution pulls a CUDA build of several GB.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

build: install
	$(BIN)/beit-build $(CHECKPOINT_ARGS) --repository $(REPOSITORY) --skip-if-built

# Triton and the gateway together; Ctrl-C stops both (each finishes its in-flight requests first).
serve: build
	$(BIN)/python -m beit_gateway.supervise \
		"$(BIN)/beit-serve --repository $(REPOSITORY) \
			--http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)" \
		"$(BIN)/beit-gateway --triton-url grpc://localhost:$(GRPC_PORT) --port $(GATEWAY_PORT)"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	# The Python-backend models are both modules named "model": one mypy run each.
	for model in model_repository/*/1/model.py; do $(BIN)/mypy --strict "$$model" || exit 1; done

test: lint
	$(BIN)/pytest

# The full benchmark (about 15 minutes on 2 cores): table on stdout, JSON and plots in results/benchmark.
bench: install
	$(BIN)/python -m loadtest.benchmark --model $(if $(RANDOM),random-$(RANDOM),$(MODEL)) --out results/benchmark

clean:
	rm -rf $(VENV) results
