# Two entry points that do all set-up on a fresh clone: `make pipeline` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: setup pipeline test benchmark docs

# A venv whose pip cannot start (a set-up cut short during pip's own upgrade) is made again from scratch;
# a working one is updated in place.
$(INSTALLED): pyproject.toml requirements.lock
	$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $(INSTALLED)

setup: $(INSTALLED)

# dvc runs each stage's `python -m stages.…` with the virtual environment first on PATH. What the
# DVC remote already holds is pulled, not recomputed; flows.first_run says so in one line (an empty
# or unreachable remote too: `dvc repro` then computes everything), and one line at the end if the
# results differ from the committed ones (another CPU: docs/sharing.md, "Results from another CPU").
pipeline: setup
	PATH="$(BIN):$$PATH" python -m flows.first_run pull
	PATH="$(BIN):$$PATH" dvc repro
	PATH="$(BIN):$$PATH" python -m flows.first_run compare

# TEST_WORKERS=2 (or auto) runs the suite on pytest-xdist workers (--dist loadscope keeps a module's tests,
# and its module-wide Prefect server, on one worker; conftest.built_repo is built once and shared). The
# default is none: on CI's 2 cores two workers took as long (37 min against 33) and starved the Prefect
# servers the end-to-end tests time.
TEST_WORKERS ?= 0
test: setup
	PATH="$(BIN):$$PATH" python -m pytest -n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

benchmark: setup
	PATH="$(BIN):$$PATH" python -m benchmarks.training

# The docs site (docs/, mkdocs.yml) into site/, as tests/test_docs.py builds it: open site/index.html
# (no server, no network); `.venv/bin/mkdocs serve` for a live preview while editing.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
