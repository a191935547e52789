# Set-up and the two jobs a fresh machine runs. Everything lands in .venv/.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch (the README says how a GPU user installs instead).
TORCH ?= torch==2.13.0

.PHONY: setup demo test bench clean

$(BIN)/agentx: pyproject.toml workspaces/movielens-ctr/requirements.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,llm]" -r workspaces/movielens-ctr/requirements.txt
	touch $(BIN)/agentx

setup: $(BIN)/agentx

demo: setup
	$(BIN)/agentx demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/sandbox.py

clean:
	rm -rf $(VENV)
