# syntax=docker/dockerfile:1
# facetalk service image, multi-arch (linux/amd64 and linux/arm64):
#   docker buildx build --platform linux/amd64,linux/arm64 -t facetalk:latest .
# Every dependency ships binary wheels for both architectures (onnxruntime, numpy,
# opencv-python-headless, PyAV with its FFmpeg, numba), so neither stage needs a
# compiler; the final stage gets only the venv (no pip in it, no pip cache, no build
# tools, no test tools, no mediapipe) and runs as a non-root user. The face models are
# package data of the wheel, so they are inside the image. The slim base already has the
# C++ runtime (libstdc++6) the ONNX Runtime and OpenCV wheels link against.
#
# BASE_IMAGE: any Debian-like image with Python 3.11 or 3.12, `python` on PATH, the venv
# module, groupadd/useradd. The default is the public one; tools/image_check.sh builds
# with a base made by debootstrap instead (no registry needed), see README "Containers".
# Accelerators: build from a CUDA/OpenVINO/CANN base and install the matching
# onnxruntime package instead (see README, "Platforms").
#
# Entry points (the command is the whole argv, so compose/Kubernetes `command:` work):
#   facetalk serve   (default)  the HTTP API, embedded queue or `--queue redis://...`
#   facetalk worker --queue redis://HOST:6379/0   a render worker for the Redis queue
#   facetalk demo / doctor      one render of the bundled sample / a report of the box

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# Optional: a CA bundle for pip behind a TLS-intercepting proxy, mounted for the build only
# (podman build -v /etc/ssl/certs/ca-certificates.crt:/run/host-ca.crt:ro
#  --build-arg PIP_CERT=/run/host-ca.crt); unset, pip trusts its own bundle.
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first, in a layer only pyproject.toml invalidates (an edit to the code or
# the README rebuilds the small facetalk layer below, not this one), from wheels only: a
# missing wheel for this architecture fails the build here instead of compiling half of
# the scientific stack. numpy>=2: the runtime users install (mediapipe, which pins
# numpy<2, is only a development reference). The list is read from pyproject.toml
# (the base dependencies and the server and queue extras) with the stdlib's tomllib.
COPY pyproject.toml ./
RUN python -m venv /opt/facetalk \
 && /opt/facetalk/bin/pip install --only-binary=:all: --upgrade pip \
 && python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; x = p['optional-dependencies']; print('\n'.join(p['dependencies'] + x['server'] + x['queue']))" > /tmp/requirements.txt \
 && /opt/facetalk/bin/pip install --only-binary=:all: -r /tmp/requirements.txt "numpy>=2"
COPY README.md ./
COPY src ./src
# Then facetalk itself, pip removed, and `facetalk doctor`: it imports everything, loads
# the face models and checks the codecs, so a broken install fails the build, not the
# first render.
RUN /opt/facetalk/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && /opt/facetalk/bin/pip install --no-deps "$(ls /tmp/wheels/facetalk-*.whl)" \
 && /opt/facetalk/bin/pip check \
 && /opt/facetalk/bin/pip uninstall -y pip \
 && rm -rf /tmp/wheels /tmp/requirements.txt \
 && /opt/facetalk/bin/facetalk doctor

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="facetalk" \
      org.opencontainers.image.description="Offline talking portraits on a CPU: one photo + one recording -> a lip-synced MP4" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="README.md, section Containers"
RUN groupadd --system --gid 10001 facetalk \
 && useradd --system --uid 10001 --gid facetalk --home-dir /home/facetalk --create-home facetalk \
 && install -d -o facetalk -g facetalk -m 0700 /var/lib/facetalk
COPY --from=build /opt/facetalk /opt/facetalk
ENV PATH=/opt/facetalk/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FACETALK_HOST=0.0.0.0 \
    FACETALK_PORT=8000 \
    FACETALK_STORAGE=/var/lib/facetalk \
    FACETALK_DEVICE=cpu
USER 10001:10001
WORKDIR /home/facetalk
VOLUME ["/var/lib/facetalk"]
EXPOSE 8000
# Asks the HTTP API; a `facetalk worker` container has no HTTP port and reports through
# its heartbeat instead (GET /v1/workers), so disable the check there.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FACETALK_PORT', '8000'), timeout=4)"]
CMD ["facetalk", "serve"]
