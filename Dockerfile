# convzoo images. Always name the target: without BuildKit every stage before the target is built,
# so `runtime` comes before the torch stages and the file's last stage is `export`:
#   docker build --target runtime -t convzoo:latest .
#   docker build --target runtime --build-arg ORT_PACKAGE='onnxruntime-gpu[cuda,cudnn]' -t convzoo:gpu .
#   docker build --target export -t convzoo-export:latest .
# Corporate CA: put PEM certificates (*.crt or *.pem) in certs/; they are trusted while building and
# never reach an image that is shipped. Works with BuildKit and with the legacy builder.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# base-build: the Python base, plus a CA bundle that includes certs/ (build stages only).
FROM ${PYTHON_IMAGE} AS base-build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PYTHONDONTWRITEBYTECODE=1
COPY certs/ /tmp/certs/
# One bundle for pip, Python's ssl module and apt (Acquire::https::CAInfo).
RUN set -eu; bundle=/tmp/ca-bundle.pem; cat /etc/ssl/certs/ca-certificates.crt > "$bundle"; \
    for f in /tmp/certs/*.crt /tmp/certs/*.pem; do [ -f "$f" ] && { cat "$f"; echo; } >> "$bundle"; done; \
    printf 'Acquire::https::CAInfo "%s";\n' "$bundle" > /etc/apt/apt.conf.d/99convzoo-ca; \
    grep -c 'BEGIN CERTIFICATE' "$bundle"
ENV PIP_CERT=/tmp/ca-bundle.pem \
    SSL_CERT_FILE=/tmp/ca-bundle.pem \
    REQUESTS_CA_BUNDLE=/tmp/ca-bundle.pem

# ---------------------------------------------------------------------------------------------
# deps: the serving dependencies in /opt/venv, with the ONNX Runtime package chosen by ORT_PACKAGE.
# No project code here, so that code changes reinstall neither these nor torch.
FROM base-build AS deps
# onnxruntime (CPU) or 'onnxruntime-gpu[cuda,cudnn]' (CUDA and cuDNN come as pip wheels).
ARG ORT_PACKAGE=onnxruntime
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY deploy/docker/requirements.py deploy/docker/requirements.py
# Serving dependencies from pyproject.toml, with onnxruntime swapped for ORT_PACKAGE.
RUN python deploy/docker/requirements.py --ort "$ORT_PACKAGE" > /tmp/requirements.txt \
 && cat /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# ---------------------------------------------------------------------------------------------
# build: the project itself installed into the virtualenv.
FROM deps AS build
COPY service/ service/
COPY export/ export/
COPY convzoo/ convzoo/
RUN pip install --no-deps . \
 && python -c "import onnxruntime as ort; print('onnxruntime', ort.__version__, ort.get_available_providers())"

# ---------------------------------------------------------------------------------------------
# runtime: serving only. No compilers, no torch, no build CA; runs as an unprivileged user.
FROM ${PYTHON_IMAGE} AS runtime
ARG ORT_PACKAGE=onnxruntime
LABEL org.opencontainers.image.title="convzoo" \
      org.opencontainers.image.description="Inference service for classic convnets on ONNX Runtime" \
      org.convzoo.onnxruntime-package="${ORT_PACKAGE}"
RUN groupadd --gid 10001 convzoo \
 && useradd --uid 10001 --gid convzoo --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin convzoo
COPY --from=build /opt/venv /opt/venv
# CUDA/cuDNN from pip wheels: let the dynamic linker find them (an empty list for the CPU build).
RUN find /opt/venv/lib -path '*/site-packages/nvidia/*' -name 'lib*.so*' -printf '%h\n' | sort -u \
        > /etc/ld.so.conf.d/convzoo-nvidia.conf \
 && ldconfig
COPY deploy/docker/healthcheck.py /opt/convzoo/healthcheck.py
# The bundled models and their registry: root-owned, so read-only to the service user.
COPY registry.yaml /var/lib/convzoo/registry.yaml
COPY models/ /var/lib/convzoo/models/
# HOME on /tmp: the root filesystem may be read-only; libraries that keep caches write there.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONVZOO_HOST=0.0.0.0 \
    CONVZOO_PORT=8000 \
    CONVZOO_REGISTRY_PATH=/var/lib/convzoo/registry.yaml \
    CONVZOO_MODELS_DIR=/var/lib/convzoo/models
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/convzoo/healthcheck.py"]
CMD ["python", "-m", "service"]

# ---------------------------------------------------------------------------------------------
# export-build: the serving dependencies plus torch and the export tools (no project code).
FROM deps AS export-build
# TORCH_INDEX_URL: e.g. https://download.pytorch.org/whl/cpu for CPU-only torch (much smaller).
ARG TORCH_INDEX_URL=
RUN python deploy/docker/requirements.py --extra export > /tmp/requirements-export.txt \
 && cat /tmp/requirements-export.txt \
 && pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r /tmp/requirements-export.txt
# Fashion-MNIST comes from Debian's dataset-fashion-mnist package, as on a development machine.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------
# export: trains/exports the models and writes the registry into /var/lib/convzoo (a volume).
# Runs from the source tree in /opt/convzoo (`python -m export` finds it in the working directory).
FROM ${PYTHON_IMAGE} AS export
RUN groupadd --gid 10001 convzoo \
 && useradd --uid 10001 --gid convzoo --create-home --home-dir /home/convzoo convzoo \
 && mkdir -p /var/lib/convzoo/models && chown -R convzoo:convzoo /var/lib/convzoo
COPY --from=export-build /opt/venv /opt/venv
COPY --from=export-build /usr/share/datasets/fashion-mnist /usr/share/datasets/fashion-mnist
WORKDIR /opt/convzoo
COPY pyproject.toml README.md ./
COPY service/ service/
COPY export/ export/
# The bundled registry and models seed a new volume, so that a build merges into them.
COPY --chown=10001:10001 registry.yaml /var/lib/convzoo/registry.yaml
COPY --chown=10001:10001 models/ /var/lib/convzoo/models/
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/convzoo \
    PYTHONUNBUFFERED=1
USER 10001:10001
VOLUME ["/var/lib/convzoo"]
CMD ["python", "-m", "export", "build", "--zoo", "fashion", \
     "--out", "/var/lib/convzoo/models", "--registry", "/var/lib/convzoo/registry.yaml"]
