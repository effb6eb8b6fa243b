# Quick start: `make demo` runs the kit end to end, `make test` runs the test suite.
# Both create .venv and install the project into it when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
OUT    ?= out/demo

.PHONY: demo test test-slow lint bench screenshot clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# CPU torch first, so the project's torch range is already satisfied and no CUDA build is pulled.
	$(PIP) install -q "$(TORCH)" || $(PIP) install -q "$(TORCH)" --index-url https://download.pytorch.org/whl/cpu
	$(PIP) install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m mark1.demo --out $(OUT)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check mark1 export firmware_sim tests benchmarks
	$(VENV)/bin/mypy mark1 export firmware_sim
	$(PY) -m pytest -q

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check mark1 export firmware_sim tests benchmarks
	$(VENV)/bin/mypy mark1 export firmware_sim

bench: $(VENV)/.installed
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

# docs/img/playground.png: the screenshot the browser test takes (needs chromium)
screenshot: $(VENV)/.installed
	MARK1_PLAYGROUND_SCREENSHOT=docs/img/playground.png $(PY) -m pytest -q tests/test_playground_browser.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .mypy_cache
