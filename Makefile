# The two commands a user needs: `make serve` and `make test`. Everything else builds on `make install`.
PYTHON ?= python3.11
VENV ?= .venv
MODEL ?= microsoft/beit-base-patch16-224-pt22k-ft22k
# RANDOM=tiny|base|large|data2vec-vision-large builds a randomly initialized checkpoint of that architecture
# instead of MODEL (offline; predictions are noise).
RANDOM ?=
# QUANTIZE=int8 also builds model.int8.onnx and serves it (README "int8 on CPU": check-engine --int8 first).
QUANTIZE ?=
# The built repository (beit_repository.names.DEFAULT_REPOSITORY): model_repository/ is its template.
REPOSITORY ?= output/model_repository
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
TORCH_VERSION := 2.13.0
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
# beit-gateway (Azure ML and Hugging Face compatible REST), started beside Triton by `make serve`.
GATEWAY_PORT ?= 8080

BIN := $(VENV)/bin
CHECKPOINT_ARGS := $(if $(RANDOM),--random $(RANDOM),--model $(MODEL))
# beit_repository.names.EMBEDDED_VARIANT, or its int8 twin (INT8_VARIANT).
MODEL_CONFIG := $(if $(QUANTIZE),embedded_$(QUANTIZE),embedded)

.PHONY: install build serve sample test lint bench soak faults fuzz reliability clean

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
	$(BIN)/beit-build $(CHECKPOINT_ARGS) $(if $(QUANTIZE),--quantize $(QUANTIZE)) --repository $(REPOSITORY) \
		--skip-if-built

# Triton and the gateway together; Ctrl-C stops both (each finishes its in-flight requests first).
serve: build
	$(BIN)/python -m beit_gateway.supervise \
		"$(BIN)/beit-serve --repository $(REPOSITORY) --model-config-name $(MODEL_CONFIG) \
			--http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT)" \
		"$(BIN)/beit-gateway --triton-url grpc://localhost:$(GRPC_PORT) --port $(GATEWAY_PORT)"

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

# The full benchmark (about 19 minutes on 2 cores, int8 vs fp32 included): table on stdout, JSON and plots in
# results/benchmark.
bench: install
	$(BIN)/python -m loadtest.benchmark --model $(if $(RANDOM),random-$(RANDOM),$(MODEL)) --out results/benchmark

# Reliability runs against beit-serve on a tiny random BEiT built into RELIABILITY_REPOSITORY (offline, seconds);
# RELIABILITY_REPOSITORY=output/model_repository runs them on the checkpoint `make build` built. Figures and
# plots go to results/; README "Reliability" holds one run's. Each takes the CPU lock other long runs take.
RELIABILITY_REPOSITORY ?= output/reliability_repository
SOAK_HOLD_S ?= 600
LOCK := flock /tmp/beit-cpu.lock

$(RELIABILITY_REPOSITORY)/beit/config.pbtxt: | install
	$(BIN)/beit-build --random tiny --repository $(RELIABILITY_REPOSITORY) --skip-if-built

# Saturation from loadtest/shape.py, then SOAK_HOLD_S seconds at it: soak.json, soak.png (about 14 minutes).
soak: $(RELIABILITY_REPOSITORY)/beit/config.pbtxt
	$(LOCK) $(BIN)/python -m loadtest.soak --repository $(RELIABILITY_REPOSITORY) --hold-s $(SOAK_HOLD_S) \
		--out results/soak

# kill -9 of each model's stub, then of Triton, under Locust load with SDK retries on (about 2 minutes).
faults: $(RELIABILITY_REPOSITORY)/beit/config.pbtxt
	$(LOCK) $(BIN)/python -m loadtest.faults --repository $(RELIABILITY_REPOSITORY) --out results/faults

# A few thousand malformed requests over HTTP and gRPC, good ones between them (under a minute).
fuzz: $(RELIABILITY_REPOSITORY)/beit/config.pbtxt
	$(LOCK) $(BIN)/python -m loadtest.fuzz --repository $(RELIABILITY_REPOSITORY) --count 3000 --out results/fuzz

reliability: faults fuzz soak

clean:
	rm -rf $(VENV) results
