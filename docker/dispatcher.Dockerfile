# syntax=docker/dockerfile:1
# docker/dispatcher.Dockerfile - codeq-dispatcher, the daemon that routes requests from
# Kafka to workers. Build context: the repository root (docker/compose.yaml sets it).
#
# Stage 1 compiles the dispatcher alone (-DCODEQ_SANDBOX=OFF): it links the fleet's
# plumbing and the tool surface's shapes, never the worker core or the sandbox, so it
# needs neither libseccomp nor the sandbox's build steps.
# Stage 2 holds the dispatcher and the shared libraries it links, nothing else: it runs no
# sandboxes and needs no privileges.

FROM debian:12 AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        gcc libc6-dev cmake ninja-build pkg-config \
        libjansson-dev librdkafka-dev libprotobuf-c-dev protobuf-c-compiler \
        libmicrohttpd-dev libcurl4-openssl-dev \
        dpkg-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# hiredis 1.2.0 with TLS from Debian 13's source package, into /var/cache/codeq (where
# CMakeLists.txt looks), exactly as scripts/setup builds it on a host; linked
# statically, so the runtime stage needs only libssl3 (docs/dependencies.md).
COPY scripts/build-hiredis scripts/
RUN scripts/build-hiredis
COPY . .
RUN cmake -S . -B /build -G Ninja -DCODEQ_TESTS=OFF -DCODEQ_SANDBOX=OFF \
    && cmake --build /build --target codeq-dispatcher

FROM debian:12
# What codeq-dispatcher links (ldd; hiredis is in it, static), with their dependencies.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libjansson4 librdkafka1 libprotobuf-c1 libssl3 libmicrohttpd12 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/bin/codeq-dispatcher /usr/local/bin/
USER nobody
ENTRYPOINT ["/usr/local/bin/codeq-dispatcher"]
