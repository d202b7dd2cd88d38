# syntax=docker/dockerfile:1
# kvs-edge-agent as a container (README.md, "Docker"): build with `docker build -t kvs-edge-agent .`
# The runtime image holds the agent and CA certificates only; it runs as a non-root user and
# keeps recordings, catalog and logs on volumes. On EC2 or a Snowball device, run it with the
# IoT mode variables (AWS_REGION, AWS_IOT_*) and the device certificates mounted read-only.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY agent ./agent
# Patched crates (vendor/*/PATCHES.md), wired in by [patch.crates-io].
COPY vendor ./vendor
# The same command CI checks (tests/packaging/check.sh): the locked dependency versions.
RUN cargo build --release --locked

FROM debian:bookworm-slim
# Unpinned on purpose: CA certificates should follow Debian's updates at each rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 kvs-edge-agent \
    && useradd --system --uid 10001 --gid kvs-edge-agent --no-create-home \
        --home-dir /var/lib/kvs-edge-agent --shell /usr/sbin/nologin kvs-edge-agent \
    && install -d -o kvs-edge-agent -g kvs-edge-agent -m 0750 \
        /var/lib/kvs-edge-agent /var/log/kvs-edge-agent
COPY --from=build /src/target/release/kvs-edge-agent /usr/local/bin/kvs-edge-agent

# The agent's variables (README.md, "Environment variables"); `docker run -e` overrides them.
# Recordings and the catalog (kvs-edge-agent.db) share one volume, so that media and the index
# describing it move together; the log files (also on stderr: `docker logs`) have their own.
ENV AWS_KVS_EDGE_RECORDING_DIRECTORY=/var/lib/kvs-edge-agent \
    AWS_KVS_EDGE_LOG_OUTPUT_DIRECTORY=/var/log/kvs-edge-agent \
    AWS_KVS_EDGE_LOG_LEVEL=INFO \
    AWS_KVS_EDGE_LOG_MAX_FILE_SIZE=20 \
    AWS_KVS_EDGE_LOG_ROLLOVER_COUNT=10 \
    AWS_KVS_EDGE_CLOUDWATCH_ENABLED=FALSE
VOLUME ["/var/lib/kvs-edge-agent", "/var/log/kvs-edge-agent"]
# Numeric, so that runtimes (Kubernetes runAsNonRoot) can tell it is not root: kvs-edge-agent.
USER 10001:10001
WORKDIR /var/lib/kvs-edge-agent
# `docker stop` sends SIGTERM and waits 10 s; the agent stops within that (--stop-timeout 15
# leaves a margin).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/kvs-edge-agent", "run"]
