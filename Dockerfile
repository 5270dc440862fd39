# syntax=docker/dockerfile:1
# One image for every `gemini-webhooks` subcommand: operator, receiver, emulator, sandboxes.
#   docker build -t ghcr.io/gemini-webhook-operator/gemini-webhook-operator:0.1.0 .
#   docker run --rm IMAGE operator --help
# The builder stage has the compilers that a dependency without a wheel for this platform
# would need; the final stage gets only the finished virtualenv, so no compiler ships.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gemini_webhooks ./gemini_webhooks
COPY operator ./operator
COPY receiver ./receiver
RUN /opt/venv/bin/pip install --upgrade pip
RUN /opt/venv/bin/pip install /src

FROM ${PYTHON_IMAGE} AS final
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="gemini-webhook-operator" \
      org.opencontainers.image.description="Gemini API webhooks on Kubernetes: operator, verifying receiver, emulator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/gemini-webhook-operator/gemini-webhook-operator" \
      org.opencontainers.image.documentation="https://github.com/gemini-webhook-operator/gemini-webhook-operator/blob/main/docs/deploy.md" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"
ENV PATH="/opt/venv/bin:${PATH}" PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=builder /opt/venv /opt/venv
# A numeric UID/GID so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["gemini-webhooks"]
CMD ["--help"]
