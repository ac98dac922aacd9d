# layerforge service image (API + dashboard + controller) and Ray worker image, CPU build.
#
# GPU workers: build the same file from a CUDA base instead, e.g.
#   docker build --build-arg BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 -t layerforge:gpu .
# (a CUDA base needs python3.11 + pip installed on top; see README "Running on a cluster").
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    LAYERFORGE_HOST=0.0.0.0 \
    LAYERFORGE_DATA_DIR=/data

WORKDIR /app

# torch first, pinned, from the CPU wheel index: a bare `torch` would pull a CUDA build.
RUN pip install --index-url ${TORCH_INDEX} torch==${TORCH_VERSION}

# Dependencies before the source so that code changes do not reinstall them.
COPY pyproject.toml README.md ./
# (empty package folders stand in for the source: pyproject.toml lists every package)
RUN for p in layerforge layerforge/cli layerforge/integrations grammar grammar/export workers \
             workers/architectures workers/rejection search search/strategies storage api \
             api/routes; do mkdir -p $p && touch $p/__init__.py; done \
    && pip install . && pip uninstall -y layerforge \
    && rm -rf layerforge grammar workers search storage api build *.egg-info

COPY layerforge ./layerforge
COPY grammar ./grammar
COPY workers ./workers
COPY search ./search
COPY storage ./storage
COPY api ./api
RUN pip install --no-deps . && layerforge --version && command -v ray

RUN useradd --create-home --uid 1000 layerforge && mkdir -p /data && chown layerforge /data
USER layerforge
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=5 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"

CMD ["layerforge", "serve", "--host", "0.0.0.0"]
