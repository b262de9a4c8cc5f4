# The one entry point. `make run` (or `make demo`) starts the exporter on its simulated clouds;
# `make test` installs what the tests need and runs lint, types and the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
LISTEN ?= 127.0.0.1:9871

.PHONY: run demo stack dashboards chart-sync soak bench test lint typecheck pytest system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run demo: $(STAMP)
	$(BIN)/python -m exporter --demo --listen $(LISTEN) $(ARGS)

# The demo exporter plus a real Prometheus (bundled rules loaded) and Alertmanager on 127.0.0.1.
stack: $(STAMP) system-deps
	$(BIN)/python -m dashboards.stack $(ARGS)

# Regenerate the committed dashboard JSON and rules YAML from dashboards/*.py, and the chart's copies.
dashboards: $(STAMP)
	$(BIN)/python -m dashboards.generate
	$(MAKE) chart-sync

# promtool (package prometheus) and Alertmanager, and chromium with chromium-driver for the status
# page's browser tests, come from Debian; install them when missing.
system-deps:
	@if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus-alertmanager >/dev/null 2>&1; then \
		echo "installing prometheus and prometheus-alertmanager from Debian"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			prometheus prometheus-alertmanager >/dev/null; \
	fi
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "installing chromium and chromium-driver from Debian"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
			chromium chromium-driver >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check exporter tests dashboards
	$(BIN)/ruff format --check exporter tests dashboards

typecheck: $(STAMP)
	$(BIN)/mypy exporter dashboards

# Everything, the soak (marked slow, ~3.5 min) included.
pytest: $(STAMP) system-deps
	$(BIN)/pytest -q $(ARGS)

# The soak alone, with its figures printed: 5,000 jobs, random faults, an exporter process.
soak: $(STAMP)
	$(BIN)/pytest -q -s -m slow $(ARGS)

# Every figure next to its anchor (SDK, bare aiohttp, naive generate_latest, pre-rendered bytes),
# one run of several minutes: a table on stdout, figures in bench-results.json. ARGS="--quick".
bench: $(STAMP)
	$(BIN)/python -m tests.bench.run $(ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info

# Helm cannot read outside its chart: copy the generated dashboard and rules into it. A test fails
# when they differ (tests/test_helm_chart.py).
chart-sync:
	cp dashboards/cloudjob-exporter.json dashboards/cloudjob-exporter.rules.yaml \
		helm/cloudjob-exporter/files/
