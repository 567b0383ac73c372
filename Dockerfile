# syntax=docker/dockerfile:1
#
# The enforcer as a container image.
#
#   docker build -t enforcer .
#   docker run --rm --read-only --tmpfs /tmp -p 8080:8080 -p 9090:9090 \
#       -v "$PWD/my-policies:/etc/enforcer/policies:ro" enforcer
#
# No policy is built in: mount yours at /etc/enforcer/policies (or pass other arguments to
# `enforcer serve`). The process runs as uid/gid 10001, writes nothing but /tmp (the
# workers' status files and the metric value files in /tmp/metrics), and stops on SIGTERM:
# requests in flight get --shutdown-grace-seconds (ENFORCER_SHUTDOWN_GRACE_SECONDS) to
# finish, then the audit queue is drained for at most --audit-drain-seconds.
#
# Both stages start from the same base, so the wheels built in the first match the Python
# (version and platform) of the second. To pin by digest, pin both FROM lines alike.

# -- builder: wheels for the project and every dependency -------------------------------------
FROM python:3.11-slim-bookworm AS builder

WORKDIR /src
# only what the package is built from (.dockerignore keeps everything else out of the context)
COPY pyproject.toml README.md ./
COPY enforcer ./enforcer
RUN pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels .

# -- runtime: the wheels installed, nothing else ----------------------------------------------
FROM python:3.11-slim-bookworm

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="enforcer" \
      org.opencontainers.image.description="OAuth resource-server reverse proxy for MCP servers and HTTP APIs" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"

# The wheels are mounted for this one step, not copied: they never become a layer. Bytecode
# is compiled here, for the whole interpreter, as unchecked hash-based .pyc files: valid
# whatever the file times in the image, and never rewritten at run time (read-only root,
# PYTHONDONTWRITEBYTECODE).
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --disable-pip-version-check --no-index --find-links=/wheels --no-compile \
        /wheels/*.whl \
 && python -m compileall -q -f -j 0 --invalidation-mode unchecked-hash /usr/local/lib/python3.11 \
 && groupadd --system --gid 10001 enforcer \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin enforcer \
 && mkdir -p /etc/enforcer/policies

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp \
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics \
    ENFORCER_WORKERS=1 \
    ENFORCER_SHUTDOWN_GRACE_SECONDS=25

WORKDIR /etc/enforcer
USER 10001:10001
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["enforcer", "serve"]
CMD ["--policy", "/etc/enforcer/policies", "--host", "0.0.0.0", "--admin-host", "0.0.0.0"]
