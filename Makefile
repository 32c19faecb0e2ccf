# The two commands README opens with: `make dev` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test test-unit gen lint breaking release-contract bench clean help

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml client/pyproject.toml sandbox/pyproject.toml constraints.txt
	@echo "==> creating $(VENV) and installing nobill, nobill-client and nobill-sandbox with the dev tools"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ./client -e ./sandbox -e ".[dev]"
	@touch $(STAMP)

dev: $(STAMP)  ## start the whole platform on embedded defaults
	$(BIN)/nobill dev

test: $(STAMP)  ## run the full test suite (real PostgreSQL/Redis, embedded ones if none listen)
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-unit: $(STAMP)  ## run the unit layer alone: pure domain logic, no database or network (seconds)
	$(BIN)/python -m pytest -p no:xdist -q tests/unit

gen: $(STAMP)  ## regenerate gen/ and docs/API.md from protos/
	$(BIN)/python scripts/gen_protos.py
	$(BIN)/python scripts/gen_api_docs.py

lint: $(STAMP)  ## buf lint the contract
	$(BIN)/buf lint

breaking: $(STAMP)  ## fail if protos/ breaks the released contract (contract/released.binpb)
	$(BIN)/buf breaking --against contract/released.binpb

release-contract: $(STAMP)  ## record protos/ as the released contract (after a release)
	$(BIN)/buf build --exclude-source-info -o contract/released.binpb

bench: $(STAMP)  ## authenticated vs unauthenticated GetOrganization throughput
	$(BIN)/python bench/auth_overhead.py

clean:  ## remove the virtualenv and dev data
	rm -rf $(VENV) .nobill
