# Multi-stage build of pingress. The build stage uses the `dist` profile of Cargo.toml (the
# release profile plus fat LTO and one codegen unit: about 7% fewer instructions per proxied
# request; the same build as `benches/load/run`), with cmake for Pingora's libz-ng-sys.
FROM rust:1.95-bookworm AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benches as targets: cargo needs their files to read the manifest.
COPY benches/*.rs ./benches/
RUN cargo build --profile dist --locked --bin pingress

FROM debian:bookworm-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ca-certificates libcap2-bin \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pingress \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin pingress
COPY --from=build /src/target/dist/pingress /usr/local/bin/pingress
# Bind 80/443 as non-root (hostNetwork deployments).
RUN setcap cap_net_bind_service=+ep /usr/local/bin/pingress
COPY conf/pingress.yaml /etc/pingress/pingress.yaml
# pid file and upgrade socket (an emptyDir in deploy/base/deployment.yaml, since the root filesystem is read-only).
RUN mkdir -p /run/pingress && chown 10001:10001 /run/pingress
USER 10001
EXPOSE 80 443 10254
ENTRYPOINT ["/usr/local/bin/pingress"]
CMD ["-c", "/etc/pingress/pingress.yaml"]
