import { defineConfig } from 'drizzle-kit';

// Migrations are generated from src/db/schema.ts and committed; the same SQL runs on PGlite and Postgres.
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/schema.ts',
  out: './migrations',
});
