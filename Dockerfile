# ankihost container image (see docs/deploy.md, "Docker").
#
#   docker build -t ankihost .
#   docker run -d --name ankihost -p 8080:8080 -v anki_data:/anki_data \
#       -e SYNC_USER1=alice:a-long-password ankihost
#
# Builds with BuildKit (the default since Docker 23; DOCKER_BUILDKIT=1 before). Build arguments:
#   BASE_IMAGE     a Debian 12 image for both stages (default debian:bookworm-slim)
#   PIP_INDEX_URL  a PyPI mirror for the builder stage
# Behind a TLS-inspecting proxy, give the builder your CA bundle as a secret (never stored in
# the image): docker build --secret id=build_ca,src=/etc/ssl/certs/ca-certificates.crt .
# At run time: data in /anki_data (SYNC_BASE), port 8080, PUID/PGID pick the ids the server
# runs as (default 1000:1000), every ankihost setting as an environment variable.

ARG BASE_IMAGE=debian:bookworm-slim

# ---- Python from Debian, shared by both stages
FROM ${BASE_IMAGE} AS python
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

# ---- builder: ankihost's wheel and the wheels of its dependencies, from PyPI
FROM python AS builder
ARG PIP_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /build
COPY pyproject.toml README.md LICENSE /src/
COPY ankihost /src/ankihost
RUN --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export PIP_CERT=/run/secrets/build_ca; fi \
 && /build/bin/pip wheel --wheel-dir /wheels /src

# ---- the image: a venv with the wheels, an unprivileged user
FROM python
RUN groupadd --system --gid 1000 ankihost \
 && useradd --system --uid 1000 --gid ankihost --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin ankihost \
 && install -d -o ankihost -g ankihost -m 0700 /anki_data
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python3 -m venv /opt/ankihost \
 && /opt/ankihost/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
        --find-links /wheels ankihost \
 && /opt/ankihost/bin/pip uninstall --yes --disable-pip-version-check pip setuptools
COPY contrib/docker/entrypoint.sh /usr/local/bin/ankihost-entrypoint

ENV PATH=/opt/ankihost/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SYNC_BASE=/anki_data \
    SYNC_HOST=0.0.0.0 \
    SYNC_PORT=8080
VOLUME /anki_data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["ankihost", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/ankihost-entrypoint"]
CMD ["ankihost", "serve"]
