# depscreen: `make demo` and `make test` each do all set-up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
GRPC_PORT ?= 50051
HTTP_PORT ?= 8080
SYSTEM_TOOLS := /usr/bin/chromedriver /usr/sbin/nginx /usr/bin/redis-server /usr/bin/promtool

.PHONY: venv demo test lint protos proto-check docs bench deploy-check system-tools clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[server,train,dev]'
	touch $(STAMP)

protos: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=src --grpc_python_out=src --pyi_out=src \
		protos/depscreen/v1/screening.proto

# The wire contract's breaking-change check: buf (from npm, pinned) compares protos/ with the descriptor set of
# the last release (protos/released/); tests/test_protos.py runs it, and skips naming this target without buf.
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
RELEASED_PROTOS := protos/released/depscreen-v1-0.1.0.binpb

$(BUF):
	@if command -v npm >/dev/null; then \
		npm install --silent --no-save --prefix .tools @bufbuild/buf@$(BUF_VERSION); \
	else \
		echo "note: npm is missing: tests/test_protos.py will skip the breaking-change check"; \
	fi

proto-check: $(BUF)
	$(BUF) breaking protos --against $(RELEASED_PROTOS)

docs: $(STAMP)
	$(BIN)/python -m depscreen.apidocs docs/api

demo: $(STAMP)
	$(BIN)/depscreen demo --host $(HOST) --grpc-port $(GRPC_PORT) --http-port $(HTTP_PORT)

# Debian tools the tests drive for real, installed once as root (their tests skip with a reason elsewhere):
# Chromium and its driver (tests/test_browser.py), nginx and redis-server (tests/test_resume.py), Prometheus's
# promtool (tests/test_deploy.py checks the alert rules with it).
system-tools:
	@if [ -x /usr/bin/chromedriver ] && [ -x /usr/sbin/nginx ] && [ -x /usr/bin/redis-server ] && [ -x /usr/bin/promtool ]; then \
		true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver nginx redis-server prometheus; \
	else \
		echo "note: only root can apt-get $(SYSTEM_TOOLS): the tests needing them will be skipped"; \
	fi

# The suite in parallel (pytest-xdist, each module on one worker so that its servers start once), then the few
# tests marked `serial` (real-time assertions that the others' load can break) alone; TEST_WORKERS=0: no workers.
TEST_WORKERS ?= 4

test: $(STAMP) system-tools $(BUF)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope -m "not serial"
	$(BIN)/python -m pytest -q -m serial

lint: $(STAMP)
	$(BIN)/ruff check .

deploy-check: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_deploy.py

bench: $(STAMP)
	$(BIN)/depscreen bench --out bench.md

clean:
	rm -rf $(VENV) .pytest_cache .tools
