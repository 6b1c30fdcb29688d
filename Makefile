# Two commands set everything up on a fresh machine:
#   make demo   - create .venv, install facetalk, render out/demo.mp4
#   make test   - the same, plus espeak-ng (apt, for test speech) and the full test suite
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint sysdeps install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,server,queue]'
	@touch $(STAMP)

# System packages the tests need: espeak-ng (English test speech, the demo's sentence),
# Chromium + ChromeDriver (browser tests of the web page), redis-server (the Celery
# queue backend's tests). Installed with apt when missing and running as root.
SYS_PACKAGES := espeak-ng:espeak-ng chromium:chromium chromedriver:chromium-driver redis-server:redis-server
sysdeps:
	@missing=""; for pair in $(SYS_PACKAGES); do \
	  cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "missing system packages:$$missing -- run 'sudo apt-get install$$missing' and retry"; exit 1; \
	  fi; \
	fi

demo: $(STAMP)
	$(BIN)/facetalk demo -o out/demo.mp4

lint: $(STAMP)
	$(BIN)/ruff check src tests tools

test: $(STAMP) sysdeps lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
