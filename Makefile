# Every target creates the virtual environment it needs from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
RUN_DIR ?= .run

.PHONY: run demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## run: one gateway on its embedded SQLite default, development keys, in $(RUN_DIR)/
run: $(BIN)/.installed
	@test -f $(RUN_DIR)/gateway/gateway.toml || \
	  $(BIN)/gateway init $(RUN_DIR)/gateway --id demo-gw --port 8443 --insecure-dev-keys
	$(BIN)/gateway run --config $(RUN_DIR)/gateway/gateway.toml

## demo: three gateways (vn-mps, kh-cnp, la-mps) on 127.0.0.1 play a scenario, then serve until Ctrl-C
demo: $(BIN)/.installed
	$(BIN)/gateway demo --dir $(RUN_DIR)/demo

## test: the whole test suite
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

## lint: ruff everywhere, mypy (strict on gateway/crypto/ and gateway/protocol/merkle.py)
lint: $(BIN)/.installed
	$(BIN)/ruff check gateway tests bench docker
	$(BIN)/mypy gateway

## bench: every benchmark in one run; bench/REPORT.md with each figure beside its raw limit
bench: $(BIN)/.installed
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(RUN_DIR) .pytest_cache .mypy_cache .ruff_cache .hypothesis
