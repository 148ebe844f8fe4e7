# syntax=docker/dockerfile:1
#
# entra-sidecar container image.
#   build   : compile TypeScript with the full dependency set
#   deps    : production dependencies only
#   runtime : distroless Node.js 24, non-root (uid 65532), no shell, no package manager
#
# No tag below is `latest`, but only NODE_IMAGE's is a fixed version. It is also the Node release CI
# runs the test suite on (`npm run test:node24` reads it from this line; test/ops/dockerfile.test.ts
# keeps the two together): move it to a new patch here and nowhere else. distroless publishes no
# versioned tags: `nodejs24-debian12:nonroot` fixes Node's major and the Debian release and is
# rebuilt in place (Node patches, Debian security fixes), so it moves; it follows Node's patch
# releases, so keeping NODE_IMAGE at the newest 24.x keeps CI on the Node the runtime ships.
# For production pin both by digest without editing this file:
# --build-arg NODE_IMAGE=node:<tag>@sha256:<digest>
# --build-arg RUNTIME_IMAGE=gcr.io/distroless/nodejs24-debian12:nonroot@sha256:<digest>
# (docs/deployment.md, "The container image"; Renovate or Dependabot can move the digests).
# See docs/deployment.md for how to run it (read-only root filesystem, probes, ports).

ARG NODE_IMAGE=node:24.21.0-bookworm-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/nodejs24-debian12:nonroot

FROM ${NODE_IMAGE} AS build
WORKDIR /app
# Manifests first so the dependency layer is cached across source changes.
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
# Source maps stay out of the image (4 of dist/src's 6 MB): Node reads them only with
# --enable-source-maps, which the image does not set. Stack traces keep function names (the bundle
# is not name-minified); a position in sidecar.bundle.js maps back with the .map file `npm run build`
# writes for the same commit (docs/deployment.md, "The container image").
RUN npm run build && find dist/src -type f -name '*.map' -delete

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only (the Envoy .proto tree, @grpc/grpc-js-xds, is a build-time
# devDependency). Then what no package reads at run time: source maps, and TypeScript sources and
# declarations (Node never strips types under node_modules): 35 MB of node_modules down to 19 MB.
# test/ops/image-runtime.test.ts runs the sidecar from this tree without them.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && find node_modules -type f \( -name '*.map' -o -name '*.ts' -o -name '*.mts' -o -name '*.cts' \) -delete \
 && npm cache clean --force

# Same Debian release (12, bookworm) and Node major (24) as the build stages.
FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="entra-sidecar" \
      org.opencontainers.image.description="Identity sidecar for Microsoft Entra ID: Microsoft-compatible HTTP API and Envoy ext_authz gRPC server" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}"
WORKDIR /app
ENV NODE_ENV=production
# Keep V8's old generation well inside the 384Mi container limit of k8s/deployment.yaml (caches are
# bounded: Sidecar:Validation:VerifiedTokenCacheSize, Sidecar:TokenCache:MaxEntries; with both full at
# their defaults the process holds ~280 MiB on Node 24); raise it with the limit.
# The young generation is set explicitly (16 MB semi-spaces, Node 20's default): with only
# the old-space cap Node 20's V8 shrinks it to ~1 MB, and the extra scavenges cost ~10 % more CPU per
# Check. Node 24's own default under load is 64 MB semi-spaces: 16 keeps RSS inside the limit at
# about 12 µs more garbage collection per Check; 32 is a middle way (docs/deployment.md, bench/README.md
# findings 11 and 31). `npm run bench` runs the sidecar with this same NODE_OPTIONS (bench/setup.ts
# reads it here).
ENV NODE_OPTIONS="--max-old-space-size=160 --max-semi-space-size=16"
# glibc malloc: a fixed mmap threshold, so memory that start-up work (V8's background compiler,
# TLS) mallocs in large blocks goes back to the kernel when freed. With glibc's sliding threshold
# about one start in two kept ~10 MB more resident for the life of the process (70 vs 80 MB idle,
# /proc/<pid>/smaps; no change in CPU per Check in A/B rounds). The bench applies it too.
ENV MALLOC_MMAP_THRESHOLD_=131072
# Files stay owned by root and read-only to the runtime user: the process never writes to the image
# (caches are in memory), so the container runs with a read-only root filesystem.
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist/src ./dist/src
# package.json carries "type": "module", which the compiled ESM needs.
COPY package.json ./
USER 65532:65532
# 5000 identity HTTP API (loopback by default), 9191 ext_authz gRPC (loopback by default),
# 9090 management: /healthz, /readyz, /metrics (all interfaces, never shows a token).
EXPOSE 5000 9191 9090
# Plain Docker only (Kubernetes uses probes). Exec form: distroless has no shell.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/nodejs/bin/node", "dist/src/healthcheck.js", "http://127.0.0.1:9090/healthz"]
# Exec form so node is PID 1 and receives SIGTERM directly (main.ts drains and exits).
ENTRYPOINT ["/nodejs/bin/node", "dist/src/main.js"]
