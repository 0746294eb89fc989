# One image for the study's init job, every worker and the dashboard: hpsearch with the torch and
# torchvision it is tested with, on a slim Python base. PyPI's Linux torch wheels are CUDA-enabled,
# so the same image runs on CPUs (docker-compose.yml) and on NVIDIA GPUs (docker-compose.gpu.yml).
#   docker compose build         (or: docker build -t hpsearch .)
# Offline (no package index): put every wheel into docker/wheels/ first, e.g.
#   pip download -d docker/wheels torch==2.14.1 torchvision==0.29.1 'setuptools>=68' '.[postgres]'
# and build with PIP_NO_INDEX=1 (a build arg; benchmarks/compose_check.sh does this).
# CPU only: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu (a build arg) installs PyTorch's
# CPU-only torch and torchvision from that index instead of PyPI's CUDA-enabled wheels. Built from
# the default (PyPI) the image is 6.3 GB, 3.0 GB of it downloaded torch/CUDA wheels; the CPU-only
# variant's size was not measured (that index was not reachable where this was written).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG PIP_NO_INDEX=0
# empty: PyPI (CUDA-enabled Linux wheels, for CPUs and GPUs alike)
ARG TORCH_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=/tmp/wheels
# A virtual environment: the same layout on the official python image and on a Debian base whose
# system Python pip may not touch (PEP 668).
RUN python3 -m venv /opt/hpsearch
COPY docker/wheels/ /tmp/wheels/
# torch first, in its own layer: it changes far less often than the package.
RUN /opt/hpsearch/bin/pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"
COPY pyproject.toml README.md /src/
COPY conf /src/conf
# hpsearch/conf links to ../conf: the wheel carries the Hydra configs inside the package.
COPY hpsearch /src/hpsearch
RUN /opt/hpsearch/bin/pip install "/src[postgres]"

FROM ${BASE_IMAGE}
COPY --from=build /opt/hpsearch /opt/hpsearch
ENV PATH=/opt/hpsearch/bin:$PATH \
    PYTHONUNBUFFERED=1
# storage/artifacts: the checkpoints and reports every container shares (a volume); the study
# itself lives in PostgreSQL; storage/cache: this container's feature cache.
WORKDIR /app
RUN mkdir -p storage/artifacts storage/cache
CMD ["python", "-m", "hpsearch", "--help"]
