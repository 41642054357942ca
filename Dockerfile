# syntax=docker/dockerfile:1
#
# One image for every lockmig role: the subcommand picks it (controller, agent, webhook, and the
# CLI tools). It also carries the restore-shim bundle in /app/shim, which the agent installs on
# its node so restore pods of ANY image (scratch, distroless, alpine/musl) can run `lockmig restore`.
#
#   docker build -t ghcr.io/lockmig/lockmig:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t … --push .
#
# No HEALTHCHECK: Kubernetes ignores it; the chart's liveness/readiness probes call /healthz and
# /readyz on each component instead.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
# strip (binutils) shrinks the Node binary the shim bundle carries by ~12 MiB; ldd comes with libc-bin.
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
# The lockfile decides every version; npm installs only this platform's koffi native module.
RUN npm ci --no-audit --no-fund
COPY . .
# The same script CI runs (`npm test` starts with `npm run build`): strict tsc, no type errors allowed.
RUN npm run build
RUN npm prune --omit=dev
# Self-contained shim runtime: node + its loader and libraries + the compiled restore graph.
RUN node dist/src/bundle/build.js --out /app/shim

# ---------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
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
# No package managers or build tools at run time.
RUN rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
           /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /opt/yarn-* /usr/local/bin/yarn /usr/local/bin/yarnpkg
WORKDIR /app
ENV NODE_ENV=production \
    LOCKMIG_SHIM_BUNDLE=/app/shim
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/crds ./crds
COPY --from=build /app/shim ./shim
# Non-root by default (controller, webhook). The agent DaemonSet runs as root and privileged
# through its securityContext, because it reads other processes' /proc entries and takes
# over their open files with pidfd_getfd.
USER 65532:65532
ENTRYPOINT ["node", "/app/dist/src/cli/main.js"]
CMD ["help"]
