# imgpipe — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PYTHON_FOR_VENV ?= python3
INSTALLED := $(VENV)/.installed-from-lock
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help env data browser sshd repro test lab lock status bench bench-preprocess bench-streaming verify

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

# The virtual environment is (re)built whenever the lock or the project metadata is newer than it.
$(INSTALLED): requirements.lock pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON_FOR_VENV) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(VENV)/bin/python -c 'from imgpipe.remote_guard import write_pth; write_pth()'   # SSH remotes: check host keys
	@touch $@

env: $(INSTALLED) ## Create or refresh .venv from requirements.lock

data: env ## Fill data/raw with the verified Fashion-MNIST files (local, DVC remote, Debian package, download)
	imgpipe fetch-data

repro: data ## Set everything up and run the whole study (dvc repro)
	dvc repro

browser: ## Install Debian's Chromium for the report's browser test (as root, when it is missing)
	@command -v chromium >/dev/null || { test "$$(id -u)" = 0 && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium is not installed and cannot be (not root): the browser test will be skipped"

sshd: ## Install Debian's OpenSSH server for the SSH-remote test (as root, when it is missing)
	@command -v /usr/sbin/sshd >/dev/null || { test "$$(id -u)" = 0 && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null; } || \
		echo "sshd is not installed and cannot be (not root): the SSH-remote test will be skipped"

test: data browser sshd ## Set everything up and run the test suite
	python -m pytest

bench: data ## Training speed vs naive model.fit and sgemm, and time to a tutorial peer's accuracy (bench/*.json)
	dvc repro split
	imgpipe bench

bench-preprocess: env ## Preprocessing speed and peak memory on 20,000 generated JPEGs (bench/preprocess.json)
	imgpipe bench-preprocess

bench-streaming: env ## Train on 1.4 GB of images under a 1.1 GB memory limit: loaded vs streamed (bench/streaming.json)
	imgpipe bench-streaming

verify: data ## Rerun the committed study from scratch in a temporary clone and judge it against the commit
	imgpipe verify

lab: env ## JupyterLab at the project root (hand-run notebooks write to scratch/; outputs stripped on save)
	JUPYTER_CONFIG_PATH=$(CURDIR)/.jupyter jupyter lab --notebook-dir=$(CURDIR) $(if $(filter 0,$(shell id -u)),--allow-root)

status: env ## Show what dvc would rerun, and the metrics
	dvc status && dvc metrics show

lock: ## Recompile requirements.lock from requirements.in and regenerate environment.yml
	$(VENV)/bin/python -m pip install --quiet uv==0.13.8
	$(VENV)/bin/uv pip compile requirements.in --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 -o requirements.lock
	$(VENV)/bin/python tools/environment_from_lock.py
