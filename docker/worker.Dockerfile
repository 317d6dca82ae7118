# syntax=docker/dockerfile:1
# docker/worker.Dockerfile - codeq-worker, the daemon that runs code in sandboxes.
# Build context: the repository root (docker/compose.yaml sets it; .dockerignore trims it).
#
# Stage 1 compiles with the Debian 12 packages scripts/setup installs. Stage 2 holds the
# shared libraries the worker links, the worker, the sandbox's init, the language kernels
# (runtimes/), and the runtime that sandboxed code gets: every sandbox sees this image's
# /usr read-only, so Python with its data libraries and Node.js are installed here, as
# scripts/setup installs them on a host.

FROM debian:12 AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        gcc libc6-dev cmake ninja-build pkg-config \
        libseccomp-dev libjansson-dev librdkafka-dev libprotobuf-c-dev protobuf-c-compiler \
        libmicrohttpd-dev libcurl4-openssl-dev \
        libnftables-dev dpkg-dev libssl-dev \
        npm ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# hiredis 1.2.0 with TLS from Debian 13's source package, into /var/cache/codeq (where
# CMakeLists.txt looks), exactly as scripts/setup builds it on a host; linked
# statically, so the runtime stage needs only libssl3 (docs/dependencies.md).
COPY scripts/build-hiredis scripts/
RUN scripts/build-hiredis
# TypeScript for the JavaScript/TypeScript kernel, pinned by the lock file, installed into
# runtimes/node as scripts/setup does. Before the sources: a code change keeps this layer.
COPY runtimes/node/package.json runtimes/node/package-lock.json runtimes/node/
RUN cd runtimes/node && npm ci --no-audit --no-fund --loglevel=error
COPY . .
# Without the tests (they need check and pytest; scripts/test runs them). The install
# prefix is compiled in: the worker finds codeq-sandbox-init in /usr/local/libexec/codeq
# and the kernels next to the program, in /usr/local/bin/../share/codeq/runtimes.
RUN cmake -S . -B /build -G Ninja -DCODEQ_TESTS=OFF -DCMAKE_INSTALL_PREFIX=/usr/local \
    && cmake --build /build \
    && DESTDIR=/stage cmake --install /build

FROM debian:12
# libjansson4 ... libnftables1: what codeq-worker links (ldd; hiredis is in it, static), with
# their dependencies.
# python3 ... nodejs: the runtime of sandboxed code, the list of scripts/setup.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libjansson4 librdkafka1 libprotobuf-c1 libssl3 libmicrohttpd12 libnftables1 passt \
        python3 python3-numpy python3-pandas python3-matplotlib python3-scipy python3-sklearn \
        python3-seaborn python3-pil python3-openpyxl python3-sympy python3-dill python3-pip \
        nodejs \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /stage/usr/local/bin/codeq-worker /usr/local/bin/
COPY --from=build /stage/usr/local/libexec/codeq/ /usr/local/libexec/codeq/
COPY --from=build /stage/usr/local/share/codeq/ /usr/local/share/codeq/
COPY --chmod=0755 docker/worker-entrypoint.sh /usr/local/libexec/codeq/worker-entrypoint
# Root in the container: the worker creates namespaces, writes id maps and cgroups. What
# the container itself must be allowed is in docker/compose.yaml and docker/README.md.
ENTRYPOINT ["/usr/local/libexec/codeq/worker-entrypoint"]
