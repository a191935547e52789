# Set-up and the two jobs a fresh machine runs. Everything lands in .venv/.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch (the README says how a GPU user installs instead).
TORCH ?= torch==2.13.0
# root installs system packages itself; everyone else through sudo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup sandbox browser demo test bench clean

$(BIN)/agentx: pyproject.toml workspaces/movielens-ctr/requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,llm,ray]" -r workspaces/movielens-ctr/requirements.txt
	touch $(BIN)/agentx

# The real small LLM's runtime for the slow real-model tests and `agentx llm local`: llama.cpp's
# Python binding, built with portable CPU flags (the default build uses AMX and dies with
# "Illegal instruction" here); ~6 minutes on 2 cores the first time, then pip's cached wheel.
LLAMA ?= llama-cpp-python[server]==0.3.36
LLAMA_CMAKE ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF
$(VENV)/.llama: $(BIN)/agentx
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/pip install -q "$(LLAMA)"
	touch $@

setup: sandbox $(BIN)/agentx $(VENV)/.llama

# The OS sandbox for experiment kernels (tools/confine.py): bubblewrap, from the distribution.
sandbox:
	@if command -v bwrap >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "installing bubblewrap (the sandbox for experiment code)"; \
	  $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q bubblewrap >/dev/null; \
	elif command -v dnf >/dev/null 2>&1; then $(SUDO) dnf install -y bubblewrap; \
	else echo "bubblewrap (bwrap) is not installed and no apt-get or dnf was found: install it by hand," \
	  "or run agentx with --unsandboxed (every verdict then says so)"; fi

# The browser tests (tests/test_browser.py) drive Debian's chromium through its chromedriver (Selenium);
# nothing is downloaded at test time.
browser:
	@if command -v chromedriver >/dev/null 2>&1 && (command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1); then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium and chromium-driver (the web app's browser tests)"; \
	  $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q chromium chromium-driver >/dev/null; \
	else echo "chromium and chromedriver are not installed and no apt-get was found: the browser tests will skip"; fi

demo: setup
	$(BIN)/agentx demo

test: setup browser
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/sandbox.py

clean:
	rm -rf $(VENV)
