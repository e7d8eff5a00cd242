# ambientgen — every target does its own set-up; a second run reuses it.
SHELL := /bin/bash
PY_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.stamp-$(shell cat requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml | sha1sum | cut -c1-12)
RUN_DIR ?= runs/demo
REGISTRY ?= docker.io/ambientgen
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
PACH_ARGS ?=

.PHONY: help demo test test-fast test-tensorflow lint system-deps venv bench images test-images push-images deploy-pipelines put-mp3 put-config wait-jobs get-results undeploy clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

system-deps:  ## ffmpeg + fluidsynth + GM soundfont (apt-get when root and missing)
	@bash scripts/system_deps.sh

$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
	@test -x $(PY) || $(PY_BOOT) -m venv $(VENV)
	$(PIP) install -q --upgrade pip 'setuptools<81' wheel
	$(PIP) install -q -r requirements.txt -r requirements-dev.txt
	$(PIP) install -q --no-deps -r requirements-nodeps.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.stamp-*; touch $@

venv: $(STAMP)  ## create .venv with pinned packages

demo: system-deps venv  ## run the whole chain on produced sample data
	$(VENV)/bin/ambientgen demo --run-dir $(RUN_DIR)

test: system-deps venv  ## run the test suite
	$(VENV)/bin/ruff check src tests bench scripts
	bash scripts/run_tests.sh

test-fast: venv  ## tests without the slow ones
	$(PY) -m pytest -q -m "not slow"

test-tensorflow: system-deps  ## the optional tests that read our TFRecords with real TensorFlow (own venv: .venv-tf)
	@test -x .venv-tf/bin/python || $(PY_BOOT) -m venv .venv-tf
	.venv-tf/bin/pip install -q 'setuptools<81' wheel
	.venv-tf/bin/pip install -q -r requirements.txt -r requirements-dev.txt tensorflow-cpu==2.21.0
	.venv-tf/bin/pip install -q --no-deps -r requirements-nodeps.txt
	.venv-tf/bin/pip install -q --no-deps --no-build-isolation -e .
	.venv-tf/bin/python -m pytest -q -m tensorflow tests/test_dataset_tfrecord.py

lint: venv
	$(VENV)/bin/ruff check src tests bench scripts

bench: system-deps venv  ## run every benchmark (prints ratios; see bench/RESULTS.md)
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

images:  ## build one Docker image per stage (needs a Docker engine)
	bash scripts/build_images.sh $(REGISTRY) $(VERSION)

test-images: venv  ## build every image with buildah (as root; no Docker engine) and run the chain inside them
	@AMBIENTGEN_WITH_BUILDAH=1 bash scripts/system_deps.sh
	$(PY) scripts/test_images.py $(TEST_IMAGES_ARGS)

push-images:  ## push the images to REGISTRY
	bash scripts/build_images.sh $(REGISTRY) $(VERSION) --push

deploy-pipelines: venv  ## create/update every pipeline on the Pachyderm cluster (REPROCESS=1 to reprocess)
	$(VENV)/bin/ambientgen cluster deploy $(PACH_ARGS) --registry $(REGISTRY) $(if $(REPROCESS),--reprocess,)

put-mp3: venv  ## put a folder of MP3s in one commit: make put-mp3 DIR=~/music
	$(VENV)/bin/ambientgen cluster put-mp3 $(PACH_ARGS) "$(DIR)"

put-config: venv  ## put generation config files: make put-config FILE=night.toml
	$(VENV)/bin/ambientgen cluster put-config $(PACH_ARGS) $(FILE)

wait-jobs: venv  ## follow the newest input commit's jobs with a progress bar
	$(VENV)/bin/ambientgen cluster wait $(PACH_ARGS)

get-results: venv  ## wait for the jobs and download generated MIDI/audio: make get-results OUT=results
	$(VENV)/bin/ambientgen cluster get-results $(PACH_ARGS) "$(or $(OUT),results)"

undeploy: venv  ## delete the pipelines (repos kept unless PURGE=1)
	$(VENV)/bin/ambientgen cluster undeploy $(PACH_ARGS) $(if $(PURGE),--purge,)

clean:
	rm -rf runs .pytest_cache .ruff_cache
