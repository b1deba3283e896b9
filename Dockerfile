# syntax=docker/dockerfile:1.7
# Two images from one file:
#   app          frontend, scheduler, sim engine and the one-shot migration (python:3.11-slim)
#   engine-vllm  the engine service on the official vLLM CUDA image (GPU)
# Dependencies install in their own cached layer, so code changes rebuild in seconds.

ARG PYTHON_IMAGE=python:3.11-slim
ARG VLLM_IMAGE=vllm/vllm-openai:v0.11.0

FROM ${PYTHON_IMAGE} AS app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# 1) dependencies only (cached until pyproject.toml changes)
COPY pyproject.toml setup.py README.md ./
RUN --mount=type=cache,target=/root/.cache/pip \
    mkdir -p src/autellix services migrations \
    && echo '__version__ = "0"' > src/autellix/__init__.py \
    && pip install . && pip uninstall -y autellix
# 2) the code
COPY src ./src
COPY services ./services
COPY migrations ./migrations
RUN --mount=type=cache,target=/root/.cache/pip pip install --no-deps .
RUN useradd --create-home autellix
USER autellix
# 8000: the frontend's OpenAI-compatible HTTP API; 9464: Prometheus metrics of any service
EXPOSE 8000 9464
CMD ["autellix", "--help"]

FROM ${VLLM_IMAGE} AS engine-vllm
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY src ./src
COPY services ./services
COPY migrations ./migrations
# keep the image's vLLM/torch: install only what Autellix adds
RUN --mount=type=cache,target=/root/.cache/pip pip install .
ENTRYPOINT []
CMD ["python3", "-m", "autellix.services.engine", "--backend", "vllm"]
