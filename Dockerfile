# The daemon's image, one recipe for every builder:
#   docker build -t ghcr.io/reconciler-dev/reconciler:0.1.0 .      (a machine with Docker)
#   make image                                                    (no Docker: podman, with a
#       Debian base made from Debian's packages by image/base.sh; see image/build.sh)
# Python 3.11 and git from Debian, the project's pinned packages in a venv, a non-root user.
# At run time nothing but the entrypoint runs: no shell, a read-only root filesystem.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
# A no-op on image/base.sh's base, which has these packages already.
RUN dpkg -s python3 python3-venv git openssh-client ca-certificates >/dev/null 2>&1 \
 || (apt-get update \
     && apt-get install -y --no-install-recommends python3 python3-venv git openssh-client ca-certificates \
     && rm -rf /var/lib/apt/lists/*)
# Byte code compiled at build time is hash-checked (py_compile's rule when this is set), so the
# layers do not depend on the source files' times.
ARG SOURCE_DATE_EPOCH=0
ENV PATH=/opt/reconciler/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Dependencies first (their own layer: rebuilt only when the pins change).
COPY image/requirements.txt /src/requirements.txt
RUN python3 -m venv /opt/reconciler \
 && /opt/reconciler/bin/pip install --no-cache-dir -r /src/requirements.txt
COPY pyproject.toml README.md /src/
COPY reconciler /src/reconciler
RUN /opt/reconciler/bin/pip install --no-cache-dir --no-deps --no-build-isolation /src \
 && rm -rf /src
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /work --shell /usr/sbin/nologin reconciler \
 && mkdir -p /work && chown 10001:10001 /work
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["/opt/reconciler/bin/reconciler"]
CMD ["daemon", "--help"]
