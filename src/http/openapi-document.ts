import { PGlite } from '@electric-sql/pglite';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../app.js';
import { loadConfig } from '../config.js';
import { openDatabase } from '../db/client.js';

/** The OpenAPI document as stable JSON text (the form committed in openapi/openapi.json). */
export function openapiText(app: FastifyInstance): string {
  return `${JSON.stringify(app.swagger(), null, 2)}\n`;
}

/** Builds the app with default configuration on a throwaway in-memory database and reads its document. */
export async function generateOpenapi(): Promise<string> {
  const config = loadConfig({ NODE_ENV: 'production', LOG_LEVEL: 'silent' });
  const database = await openDatabase({ dataDir: '', pglite: await PGlite.create() });
  // x402 on, as in production; the facilitator is never called while the document is generated.
  const app = await buildApp({ config, database, logger: false, chainRpcUrl: 'http://127.0.0.1:1' });
  try {
    await app.ready();
    return openapiText(app);
  } finally {
    await app.close();
    await database.close();
  }
}
