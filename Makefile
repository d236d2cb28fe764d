# Two entry points that do all set-up on a fresh clone: `make pipeline` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: setup pipeline test benchmark

$(INSTALLED): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(INSTALLED)

setup: $(INSTALLED)

# dvc runs each stage's `python -m stages.…` with the virtual environment first on PATH. What the
# DVC remote already holds is pulled, not recomputed (an unreachable remote: DVC says so, and
# `dvc repro` computes everything).
pipeline: setup
	PATH="$(BIN):$$PATH" dvc pull --allow-missing || true
	PATH="$(BIN):$$PATH" dvc repro

test: setup
	PATH="$(BIN):$$PATH" python -m pytest $(PYTEST_ARGS)

benchmark: setup
	PATH="$(BIN):$$PATH" python -m benchmarks.training
