# The two commands of the README:
#   make demo   set up, train a tiny Lightning model with TMonCallback into ./tmon.db, print what was recorded
#   make test   set up and run the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip
# the CPU build of torch, installed first so no dependency pulls a multi-GB CUDA build
TORCH  ?= torch==2.13.0

.PHONY: setup system-deps lint demo test test-fast screenshots clean

# System packages the test suite uses: a PostgreSQL server for the postgres tests, chromium for
# the JupyterLab browser tests (driven by playwright's Python API; never `playwright install`),
# prometheus (with promtool) for the exporter's test against a real Prometheus.
# Installed with apt when missing and running as root (CI); otherwise those tests skip with the reason.
system-deps:
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; \
	  else \
	    echo "note: no PostgreSQL server here and not root: the postgres tests will skip (apt-get install postgresql)"; \
	  fi; \
	fi
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; \
	  else \
	    echo "note: no chromium here and not root: the browser tests will skip (apt-get install chromium)"; \
	  fi; \
	fi
	@if ! command -v prometheus >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus; \
	  else \
	    echo "note: no prometheus here and not root: the exporter's Prometheus test will skip (apt-get install prometheus)"; \
	  fi; \
	fi

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[all,test]" "$(TORCH)"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) examples/demo.py

# lint first (seconds): ruff check and ruff format --check over the code, tests, bench and notebooks
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup system-deps lint
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# the README's images (docs/img/monitor.png, report.png) from a real run in JupyterLab + headless chromium
screenshots: setup system-deps
	$(PY) scripts/screenshots.py

clean:
	rm -rf $(VENV) demo_out tmon.db tmon.db-wal tmon.db-shm
