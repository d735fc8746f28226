# syntax=docker/dockerfile:1.7
# Review dashboard and the migrations job: no torch, no Kafka client, no model.
#   docker build -f deploy/docker/slim.Dockerfile -t agpt-slim .
#   docker run agpt-slim                       # the dashboard on :8501
#   docker run agpt-slim db upgrade            # the migrations job
# slim-requirements.txt lists what review/, storage/ and `agpt db upgrade` import
# (tests/deploy/test_dockerfiles.py checks it against the code).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/agpt
ENV PATH=/opt/agpt/bin:$PATH
WORKDIR /src
COPY deploy/docker/slim-requirements.txt ./
RUN pip install -r slim-requirements.txt
COPY pyproject.toml README.md ./
COPY agpt ./agpt
COPY ingest ./ingest
COPY inference ./inference
COPY review ./review
COPY storage ./storage
# --no-deps: the package's own dependencies include torch; the slim set is installed above.
RUN pip install --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 agpt \
 && useradd --system --uid 10001 --gid agpt --create-home --home-dir /home/agpt agpt
COPY --from=build /opt/agpt /opt/agpt
ENV PATH=/opt/agpt/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AGPT_DASHBOARD_PORT=8501
USER 10001:10001
WORKDIR /home/agpt
EXPOSE 8501
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"]
ENTRYPOINT ["agpt"]
CMD ["dashboard"]
