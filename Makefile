# layerforge: `make serve` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

TYPECHECK := $(VENV)/typecheck

.PHONY: install serve test test-quick lint typecheck bench clean

$(PY):
	$(PYTHON) -c 'import sys; sys.exit("layerforge needs Python >= 3.11") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# timm without its dependencies: they include torchvision, whose wheels here pull a CUDA
	# torch. tests/integrations imports timm's layers without torchvision (see there).
	$(PY) -m pip install -q --no-deps timm
	touch $(STAMP)

install: $(STAMP)

serve: install
	@echo "layerforge: the dashboard will be at http://$${LAYERFORGE_HOST:-127.0.0.1}:$${LAYERFORGE_PORT:-8000}/ (API docs at /docs)"
	$(VENV)/bin/layerforge serve --demo

# two pytest-xdist workers (work stealing: a few tests run for minutes, mostly waiting on a
# server, a campaign or a cluster): CI stays under 15 minutes on a 2-core machine.
# LAYERFORGE_TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= $(or $(LAYERFORGE_TEST_WORKERS),2)
test: install lint typecheck
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist worksteal --durations=30

# while developing: everything but the tests marked slow (whole campaigns, servers, Ray
# clusters); `make test` (and CI) still runs them all
test-quick: install
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist worksteal -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy reads the package as it installs (layerforge.grammar, ...), which the editable
# install's import hook hides from it: so it checks a copy built from the working tree.
typecheck: install
	rm -rf $(TYPECHECK)
	$(PY) -m pip install -q --no-deps --no-build-isolation --target $(TYPECHECK) .
	cd $(TYPECHECK) && MYPYPATH=. $(CURDIR)/$(VENV)/bin/mypy --config-file $(CURDIR)/pyproject.toml -p layerforge

bench: install
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
