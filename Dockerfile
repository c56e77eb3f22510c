# syntax=docker/dockerfile:1
# machine-catalog server image.
#   docker build -t ghcr.io/machine-catalog/machine-catalog:0.1.0 .
# Pin the base images by digest in your registry mirror for reproducible builds
# (python:3.11-slim@sha256:...); both stages must use the same Python build, because the
# virtualenv is copied from one to the other.

# ---- build: a wheel of this project, then a venv with it and its runtime dependencies only
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# .dockerignore keeps the context to pyproject.toml, README.md and the three packages.
COPY . .
# Runtime dependencies only (no [test]/[bench] extras); pip and setuptools are not needed at
# run time. Byte-compile now: the root filesystem is read-only in the cluster.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install /wheels/*.whl \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# ---- runtime: the venv on a clean slim image, as a non-root user
FROM python:3.11-slim
# HOME: uid 65532 has no passwd entry; point anything that looks for ~ at the writable
# /tmp (an emptyDir in the manifests).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
COPY --from=build /opt/venv /opt/venv
# 65532 = "nonroot" in distroless images; the manifests run as this uid/gid too
# (runAsNonRoot needs a numeric USER to verify).
USER 65532:65532
WORKDIR /tmp
EXPOSE 8443
ENTRYPOINT ["machine-catalog"]
CMD ["serve"]
