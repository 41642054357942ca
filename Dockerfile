# syntax=docker/dockerfile:1
#
# One image for every lockmig role: the subcommand picks it (controller, agent, webhook, and the
# CLI tools). It also carries the restore-shim bundle in /app/shim, which the agent installs on
# its node so restore pods of ANY image (scratch, distroless, alpine/musl) can run `lockmig restore`.
#
#   docker build -t ghcr.io/lockmig/lockmig:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t … --push .
#
# One Node.js binary: the runtime stage is FROM scratch and runs the Node.js, glibc and loader the
# shim bundle carries anyway (/app/shim/bin/node, /app/shim/lib). /usr/local/bin/node and the
# loader's standard path are links into the bundle, and /etc/ld.so.cache (made by ldconfig) points
# the loader at /app/shim/lib, so `node …` works as in any Node.js image without a second copy of
# Node.js, a shell, or a package manager.
#
# No HEALTHCHECK: Kubernetes ignores it; the chart's liveness/readiness probes call /healthz and
# /readyz on each component instead.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# strip (binutils) shrinks the Node binary the shim bundle carries by ~12 MiB; ldd and ldconfig come
# with libc-bin; gcc + libc6-dev compile liblockmig (native/lockmig.c), which the restore shim and
# the dump use.
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# The lockfile decides every version; npm installs only this platform's koffi native module.
RUN npm ci --no-audit --no-fund
COPY . .
# The same script CI runs (`npm test` starts with `npm run build`): strict tsc, no type errors
# allowed, then the bundled commands and liblockmig (required here: the image must have it).
RUN LOCKMIG_REQUIRE_NATIVE=1 npm run build
RUN npm prune --omit=dev
# Self-contained shim runtime: node + its loader and libraries + the compiled restore graph.
RUN node dist/src/bundle/build.js --out /app/shim
# The runtime's root file system beyond /app: links into the shim bundle for `node` and the
# loader path in node's ELF header, the loader cache, a nonroot user, /tmp.
RUN set -eu; \
    interp=$(ldd /app/shim/bin/node | awk '$1 ~ /^\/.*ld-linux/ {print $1; exit}'); \
    test -n "$interp"; \
    mkdir -p /rootfs/usr/local/bin /rootfs/etc "/rootfs$(dirname "$interp")" /rootfs/tmp; \
    chmod 1777 /rootfs/tmp; \
    ln -s /app/shim/bin/node /rootfs/usr/local/bin/node; \
    ln -s /app/shim/lib/ld.so "/rootfs$interp"; \
    echo /app/shim/lib > /rootfs/etc/ld.so.conf; \
    mkdir -p /rootfs/app && cp -a /app/shim /rootfs/app/shim; \
    ldconfig -r /rootfs; \
    rm -rf /rootfs/app; \
    echo 'nonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin' > /rootfs/etc/passwd; \
    echo 'nonroot:x:65532:' > /rootfs/etc/group

# ---------------------------------------------------------------------------------------------
FROM scratch AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="lockmig" \
      org.opencontainers.image.description="Moves the file-lock state (POSIX, OFD, flock) of a running Kubernetes pod to a new pod" \
      org.opencontainers.image.source="https://github.com/lockmig/lockmig" \
      org.opencontainers.image.url="https://github.com/lockmig/lockmig" \
      org.opencontainers.image.documentation="https://github.com/lockmig/lockmig/blob/main/README.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="lockmig" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
WORKDIR /app
ENV PATH=/usr/local/bin \
    NODE_ENV=production \
    LOCKMIG_SHIM_BUNDLE=/app/shim
# No package managers or build tools at run time: nothing but these files.
COPY --from=build /rootfs/ /
COPY --from=build /app/shim ./shim
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/crds ./crds
# Non-root by default (controller, webhook). The agent DaemonSet runs as root and privileged
# through its securityContext, because it reads other processes' /proc entries and takes
# over their open files with pidfd_getfd.
USER 65532:65532
ENTRYPOINT ["node", "/app/dist/src/cli/main.js"]
CMD ["help"]
