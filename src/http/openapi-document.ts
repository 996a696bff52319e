import { PGlite } from '@electric-sql/pglite';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../app.js';
import { loadConfig } from '../config.js';
import { openDatabase } from '../db/client.js';

/** The OpenAPI document as stable JSON text (the form committed in openapi/openapi.json). */
export function openapiText(app: FastifyInstance): string {
  return `${JSON.stringify(app.swagger(), null, 2)}\n`;
}

/**
 * The configuration the committed document describes: defaults (x402 on, prices as configured by
 * default) plus an operator key, so that the operator-only admin routes are documented. The key
 * is never used: the document is read, no request is served.
 */
export const DOCUMENT_ENV: Record<string, string> = {
  NODE_ENV: 'production',
  LOG_LEVEL: 'silent',
  ADMIN_API_KEY: 'openapi-document-only-key',
};

/** The app the committed document describes, on a throwaway in-memory database (ready, not listening). */
export async function buildDocumentApp(): Promise<{ app: FastifyInstance; close: () => Promise<void> }> {
  const config = loadConfig(DOCUMENT_ENV);
  const database = await openDatabase({ dataDir: '', pglite: await PGlite.create() });
  // x402 on, as in production; the facilitator is never called while the document is generated.
  const app = await buildApp({ config, database, logger: false, chainRpcUrl: 'http://127.0.0.1:1' });
  const close = async () => {
    await app.close();
    await database.close();
  };
  try {
    await app.ready();
  } catch (err) {
    await close();
    throw err;
  }
  return { app, close };
}

/** Builds the app with the document's configuration and reads its document. */
export async function generateOpenapi(): Promise<string> {
  const { app, close } = await buildDocumentApp();
  try {
    return openapiText(app);
  } finally {
    await close();
  }
}
