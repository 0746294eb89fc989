# One image for the study's init job and for every worker: hpsearch on PyTorch with CUDA.
# docker compose builds it (docker-compose.yml); on another machine: docker build -t hpsearch .
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY hpsearch ./hpsearch
COPY conf ./conf
# Editable, so that the Hydra configs under /app/conf stay next to the package. The base image's
# torch and torchvision satisfy the requirements and are kept.
RUN pip install -e '.[postgres]' \
 && mkdir -p storage/artifacts storage/cache

# storage/artifacts: the checkpoints every worker shares (a volume); storage/cache: this
# container's feature cache. The study itself lives in PostgreSQL.
CMD ["python", "-m", "hpsearch", "--help"]
