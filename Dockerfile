# syntax=docker/dockerfile:1
# facetalk service image, multi-arch (linux/amd64 and linux/arm64):
#   docker buildx build --platform linux/amd64,linux/arm64 -t facetalk:latest .
# Every dependency ships binary wheels for both architectures (onnxruntime, numpy,
# opencv-python-headless, PyAV with its FFmpeg, numba), so neither stage needs a
# compiler; the final stage gets only the venv (no pip in it, no pip cache, no build
# tools) and runs as a non-root user. The slim base already has the C++ runtime
# (libstdc++6) the ONNX Runtime and OpenCV wheels link against.
# Accelerators: build from a CUDA/OpenVINO/CANN base and install the matching
# onnxruntime package instead (see README, "Platforms").

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Dependencies from wheels only: a missing wheel for this architecture fails the build
# here instead of compiling half of the scientific stack.
RUN python -m venv /opt/facetalk \
 && /opt/facetalk/bin/pip install --only-binary=:all: --upgrade pip \
 && /opt/facetalk/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && /opt/facetalk/bin/pip install --only-binary=:all: "$(ls /tmp/wheels/facetalk-*.whl)[server,queue]" \
 && /opt/facetalk/bin/pip uninstall -y pip \
 && rm -rf /tmp/wheels

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="facetalk" \
      org.opencontainers.image.description="Offline talking portraits on a CPU: one photo + one recording -> a lip-synced MP4" \
      org.opencontainers.image.licenses="Apache-2.0"
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
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FACETALK_PORT', '8000'), timeout=4)"]
# `facetalk doctor` checks the image: docker run --rm facetalk:latest facetalk doctor
CMD ["facetalk", "serve"]
