# Two commands set everything up on a fresh machine:
#   make demo   bootstrap .venv, then run the embedded default distillation
#   make test   bootstrap .venv, then run the test suite
#   make docs   bootstrap .venv, then build the docs site into site/ (mkdocs build --strict)
# CPU torch is pinned; override it elsewhere, e.g. make test TORCH_SPEC='torch==2.5.1'
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.distill-installed

.PHONY: venv demo test docs bench clean help

help:
	@echo "make demo   - set up .venv and run the demo (distill demo)"
	@echo "make test   - set up .venv and run the tests"
	@echo "make docs   - set up .venv and build the docs site into site/ (strict: any warning fails)"
	@echo "make bench  - run the Fashion-MNIST benchmark (long; needs dataset-fashion-mnist)"
	@echo "TORCH_SPEC='$(TORCH_SPEC)' (override to pick another torch build)"

venv: $(STAMP)

# torch goes in first, pinned, so that nothing pulls a multi-GB CUDA build;
# the stamp depends on pyproject.toml, so a change of dependencies re-installs.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/distill demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

# the docs extra (mkdocs, mkdocs-material) is part of dev; installed here too if it is missing.
# NO_MKDOCS_2_WARNING silences Material's end-of-life banner (not a build warning).
docs: $(STAMP)
	@$(PY) -c "import mkdocs, material" 2>/dev/null || $(PY) -m pip install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

bench: $(STAMP)
	$(PY) benchmarks/fashion_mnist.py

clean:
	rm -rf $(VENV) runs .distill-cache .pytest_cache site
