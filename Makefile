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
TORCH_VERSION := 2.13.0
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu

BIN := $(VENV)/bin
CHECKPOINT_ARGS := $(if $(RANDOM),--random $(RANDOM),--model $(MODEL))

.PHONY: install build serve sample test lint bench clean

install: $(VENV)/.installed

# torch goes first, as its CPU build from PyTorch's own index (as build/Dockerfile.build does): PyPI's
# torch==2.13.0 is the CUDA build with several GB of nvidia libraries. The `+cpu` pin never falls back to it,
# and a pip configured with a local wheel (--find-links) takes that one. Only torch comes from that index;
# its dependencies come with the rest, where the build extra's `torch==2.13.0` is satisfied by 2.13.0+cpu.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install --no-deps 'torch==$(TORCH_VERSION)+cpu' --extra-index-url $(TORCH_INDEX_URL)
	$(BIN)/pip install -e '.[dev]'
	touch $@

build: install
	$(BIN)/beit-build $(CHECKPOINT_ARGS) --repository $(REPOSITORY) --skip-if-built

serve: build
	$(BIN)/beit-serve --repository $(REPOSITORY) \
		--http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)

# A photo for the README's examples: matplotlib's sample photo (installed with the loadtest extra).
sample: install
	$(BIN)/python -c "import shutil, matplotlib.cbook as c; shutil.copy(c.get_sample_data('grace_hopper.jpg', asfileobj=False), 'sample.jpg')"

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
