# task-escrow: API + workers in one image.
#   docker build -t task-escrow .
#   docker run -p 3000:3000 task-escrow                       # embedded PGlite in /app/data
#   docker run -p 3000:3000 -e DATABASE_URL=postgres://… task-escrow
# Migrations are applied by the process at start-up (src/server.ts → runMigrations).

# ---- build: full dependencies, compile TypeScript to dist/ ----
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies only, non-root ----
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production HOST=0.0.0.0 PORT=3000 DATA_DIR=/app/data
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
# src/db/migrate.ts resolves ../../migrations from dist/db; the embedded dev chain (src/chain/dev/contracts.ts, used
# when CHAIN_RPC_URL is unset) walks up from dist/chain/dev to contracts/artifacts.
COPY migrations ./migrations
COPY contracts/artifacts ./contracts/artifacts
# The embedded database (PGlite) writes here when DATABASE_URL is unset; everything else stays root-owned.
RUN mkdir -p /app/data && chown node:node /app/data
USER node
EXPOSE 3000
# Slim images have no curl: Node 20's fetch probes the liveness route.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# The same command as `npm start` (compiled JS, no tsx). --max-old-space-size makes V8 grow its heap by
# ~1.6x of the live data between full GCs instead of up to 4x (bench/README.md, memory).
CMD ["node", "--max-old-space-size=1024", "dist/server.js"]
