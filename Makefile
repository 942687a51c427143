# Every target creates the virtual environment it needs from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
RUN_DIR ?= .run
# The officers' web client: built from web/ by npm (the committed lock file) and esbuild
# into the Python package, which serves it at /app/ (docs/WEBCLIENT.md).
WEB_BUILT   = gateway/web/static/manifest.json
WEB_SOURCES = web/build.mjs web/package.json web/package-lock.json $(wildcard web/src/*.* web/src/i18n/*.json)

ARGS   ?=
# `make run` serves apart from the demo's ports (8441-8443, metrics 9464-9466), so both
# can run at once.
RUN_PORT         ?= 8450
RUN_METRICS_PORT ?= 9470

.PHONY: run demo test lint bench clean constraints web screenshots

# Running a gateway needs only the package and its runtime dependencies...
$(BIN)/.installed-run: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	touch $@

# ...the tests, linters and benchmarks add the development tools.
$(BIN)/.installed: $(BIN)/.installed-run
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

## web: build the web client into gateway/web/static/ (npm ci from web/package-lock.json)
web: $(WEB_BUILT)

web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(WEB_BUILT): web/node_modules/.installed $(WEB_SOURCES)
	cd web && node build.mjs

## constraints: pin what the current environment has (after changing a dependency)
constraints: $(BIN)/.installed
	{ sed -n '1,3p' constraints.txt; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^focal-point-gateway'; \
	} > constraints.txt.new && mv constraints.txt.new constraints.txt

## run: one gateway on its embedded SQLite default, development keys, in $(RUN_DIR)/ (no dev tools)
run: $(BIN)/.installed-run $(WEB_BUILT)
	@test -f $(RUN_DIR)/gateway/gateway.toml || \
	  $(BIN)/gateway init $(RUN_DIR)/gateway --id demo-gw --port $(RUN_PORT) \
	    --metrics-port $(RUN_METRICS_PORT) --insecure-dev-keys
	$(BIN)/gateway run --config $(RUN_DIR)/gateway/gateway.toml

## demo: three gateways (vn-mps, kh-cnp, la-mps) on 127.0.0.1 play a scenario, then serve until Ctrl-C;
##       more options in ARGS, e.g. make demo ARGS="--free-ports --once"
demo: $(BIN)/.installed-run $(WEB_BUILT)
	$(BIN)/gateway demo --dir $(RUN_DIR)/demo --prometheus-targets config/targets/demo.json $(ARGS)

## test: the whole test suite
test: $(BIN)/.installed $(WEB_BUILT)
	$(BIN)/python -m pytest -q

## screenshots: refresh docs/screenshots/ (the README's) from the web client's e2e test
screenshots: $(BIN)/.installed $(WEB_BUILT)
	FPG_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/test_webclient_e2e.py

## lint: ruff everywhere, mypy (strict on gateway/crypto/ and gateway/protocol/merkle.py)
lint: $(BIN)/.installed
	$(BIN)/ruff check gateway tests bench docker
	$(BIN)/mypy gateway

## bench: every benchmark in one run; bench/REPORT.md with each figure beside its raw limit
bench: $(BIN)/.installed
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(RUN_DIR) .pytest_cache .mypy_cache .ruff_cache .hypothesis \
	  web/node_modules gateway/web/static
