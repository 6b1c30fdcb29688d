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

# espeak-ng synthesizes the English test speech (and the demo's sentence).
sysdeps:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q espeak-ng; \
	  else \
	    echo "espeak-ng is missing: run 'sudo apt-get install espeak-ng' and retry"; exit 1; \
	  fi; }

demo: $(STAMP)
	$(BIN)/facetalk demo -o out/demo.mp4

lint: $(STAMP)
	$(BIN)/ruff check src tests tools

test: $(STAMP) sysdeps lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
