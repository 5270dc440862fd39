# syntax=docker/dockerfile:1
# Two images from one build:
#   product (the default, last stage): the `gemini-webhooks` operator and receiver, which
#     the chart runs and the operator deploys;
#   tools (`--target tools`): every subcommand, with the Gemini API emulator, the API
#     sandbox, the local sandbox and the control-plane tools, for running the emulator in
#     a cluster.
#   docker build -t ghcr.io/gemini-webhook-operator/gemini-webhook-operator:0.1.0 .
#   docker build --target tools -t ghcr.io/gemini-webhook-operator/gemini-webhook-operator-tools:0.1.0 .
#   docker run --rm IMAGE operator --help
# Without a container engine or registry, `scripts/image build` builds both with buildah
# from a Debian bookworm base it makes itself (PYTHON_IMAGE).
# The builder stage has the compilers that a dependency without a wheel for this platform
# would need; the final stages get only a finished virtualenv, so no compiler ships.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
# `python3`: a Debian base has no `python`. pip stays the one venv brings: upgrading it
# first gains nothing here and `pip install --upgrade pip` exits 0 when the index is
# unreachable; installing the project cannot (its dependencies come from the index).
RUN python3 -m venv /opt/venv
WORKDIR /src
# The dependencies first, in a layer of their own: a change to the sources (or the README)
# reinstalls only the project.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' > requirements.txt \
    && /opt/venv/bin/pip install -r requirements.txt
COPY README.md ./
COPY gemini_webhooks ./gemini_webhooks
COPY operator ./operator
COPY receiver ./receiver
RUN /opt/venv/bin/pip install --no-deps /src

# The tools' virtualenv: the builder's, with what only the tools import (the `tools` extra:
# the API sandbox's kmock and jsonpatch). After the sources, so a change to them installs
# these two small packages again (seconds), never the product's dependencies.
FROM builder AS tools-venv
RUN python3 -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["tools"], sep="\n")' > tools-requirements.txt \
    && /opt/venv/bin/pip install -r tools-requirements.txt

# The product's virtualenv: the builder's (which has none of the `tools` extra) without the
# packages only the tools image runs (the emulator, the API sandbox, the local sandbox, the
# control-plane tools, the dashboard generators, the users' `webhook-config` client helper
# and `kubectl gemini` plugin) nor pip and setuptools, which nothing runs once it is installed.
# The operator and the receiver import none of it (tests/chart/test_image_run.py checks it
# in the built image); `gemini-webhooks` lists only the subcommands present.
FROM builder AS product-venv
RUN cd /opt/venv/lib/python3*/site-packages/gemini_webhooks \
    && rm -r emulator kubesandbox sandbox controlplane observability jobs kubectl generate.py \
    && rm /opt/venv/bin/kubectl-gemini \
    && /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools

FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="gemini-webhook-operator" \
      org.opencontainers.image.description="Gemini API webhooks on Kubernetes: the operator and the verifying receiver" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/gemini-webhook-operator/gemini-webhook-operator" \
      org.opencontainers.image.documentation="https://github.com/gemini-webhook-operator/gemini-webhook-operator/blob/main/docs/deploy.md" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
ENV PATH="/opt/venv/bin:${PATH}" PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# A numeric UID/GID so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
WORKDIR /tmp
ENTRYPOINT ["gemini-webhooks"]
CMD ["--help"]

FROM runtime AS tools
LABEL org.opencontainers.image.title="gemini-webhook-operator-tools" \
      org.opencontainers.image.description="Gemini API webhooks on Kubernetes: every gemini-webhooks subcommand, with the Gemini API emulator and the sandboxes"
COPY --from=tools-venv /opt/venv /opt/venv

FROM runtime AS product
COPY --from=product-venv /opt/venv /opt/venv
