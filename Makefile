# depscreen: `make demo` and `make test` each do all set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
GRPC_PORT ?= 50051
HTTP_PORT ?= 8080

.PHONY: venv demo test lint protos bench deploy-check clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=. --grpc_python_out=. --pyi_out=. \
		protos/depscreen/v1/screening.proto

demo: $(STAMP)
	$(BIN)/depscreen demo --host $(HOST) --grpc-port $(GRPC_PORT) --http-port $(HTTP_PORT)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

deploy-check: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_deploy.py

bench: $(STAMP)
	$(BIN)/depscreen bench --out bench.md

clean:
	rm -rf $(VENV) .pytest_cache
