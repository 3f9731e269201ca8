# Minimal image: slim Python, git for the source layer, the package from this repository,
# a non-root user. (Not built in CI: these machines have no container engine.)
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN pip install --no-cache-dir . && rm -rf /src
RUN useradd --uid 10001 --create-home --home-dir /work reconciler
USER 10001:10001
WORKDIR /work
ENTRYPOINT ["reconciler"]
CMD ["daemon", "--help"]
