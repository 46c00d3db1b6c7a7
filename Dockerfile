# syntax=docker/dockerfile:1
#
# steadfast container image.
#
#   docker build -t steadfast:0.1.0 .
#   docker run --rm --read-only --tmpfs /run/steadfast \
#     -p 127.0.0.1:8787:8787 -p 127.0.0.1:9090:9090 steadfast:0.1.0
#
# Build stage: the same script CI runs (scripts/build-release.sh), on the
# same Debian release CI runs on. Runtime stage: Debian slim with
# ca-certificates (rustls uses the system trust store) and tini, a fixed
# non-root UID, and one writable directory (/run/steadfast: pid file and
# upgrade socket) so the root filesystem can be read-only.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    scripts/build-release.sh /out

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# Unpinned package versions on purpose: Debian's security updates replace them.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*

# Fixed UID/GID 10001, so Kubernetes runAsUser and host volume ownership can
# name them.
RUN groupadd --system --gid 10001 steadfast \
 && useradd --system --uid 10001 --gid steadfast --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin steadfast \
 && install -d -o steadfast -g steadfast -m 0750 /run/steadfast

COPY --from=build /out/steadfast /usr/local/bin/steadfast
COPY deploy/bin/steadfast-entrypoint deploy/bin/steadfast-upgrade /usr/local/bin/
COPY deploy/docker/steadfast.yaml /etc/steadfast/steadfast.yaml

# Provider keys come from the environment variables the config names
# (api_key_env); never bake them into the image.
# STEADFAST_UPGRADE_LOG: an in-container `steadfast-upgrade` sends the new
# process's logs to the container log (PID 1's stderr), not to the exec
# session that started it.
ENV STEADFAST_CONFIG=/etc/steadfast/steadfast.yaml \
    STEADFAST_PID_FILE=/run/steadfast/steadfast.pid \
    STEADFAST_UPGRADE_SOCK=/run/steadfast/upgrade.sock \
    STEADFAST_UPGRADE_LOG=/proc/1/fd/2 \
    RUST_LOG=info

USER 10001:10001
VOLUME ["/run/steadfast"]
# 8787: the proxy, 9090: admin (/live /ready /health /metrics /stats).
EXPOSE 8787 9090
STOPSIGNAL SIGTERM
# /health is 503 while draining or when no provider of some route is left.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/steadfast", "healthcheck", "--url", "http://127.0.0.1:9090/health"]

# tini reaps processes and forwards signals; steadfast-entrypoint keeps the
# container alive across an in-container fd-handoff upgrade.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/steadfast-entrypoint"]
CMD ["serve"]
