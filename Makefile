# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/enforcer: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(BIN)/enforcer         ## the example policy in front of the demo upstream, with the dev issuer
	$(BIN)/enforcer demo

test: $(BIN)/enforcer        ## every test, then lint and the shipped policies
	$(BIN)/enforcer policy validate policies/
	$(BIN)/enforcer policy test policies/
	$(BIN)/ruff check enforcer tests
	$(BIN)/pytest

bench: $(BIN)/enforcer       ## needs nginx and wrk (apt-get install nginx-light wrk)
	$(BIN)/python tests/benchmarks/bench_proxy.py

clean:
	rm -rf $(VENV) .enforcer-dev
