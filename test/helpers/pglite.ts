import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import { inject } from 'vitest';
import { openDatabase, type Database } from '../../src/db/client.js';
import { runMigrations } from '../../src/db/migrate.js';

/**
 * A migrated embedded PGlite database whatever mode the suite runs in (tests that need PGlite
 * itself, e.g. to close it under the app): a copy of global-setup's template when the suite runs
 * on PGlite (fast), else a fresh in-memory one, migrated here (initdb takes several seconds).
 */
export async function openPgliteDatabase(): Promise<{ database: Database; destroy(): Promise<void> }> {
  const template = inject('pgliteTemplateDir');
  if (template) {
    const dir = mkdtempSync(path.join(tmpdir(), 'te-pglite-'));
    cpSync(template, path.join(dir, 'pglite'), { recursive: true });
    const database = await openDatabase({ dataDir: dir, pglite: await PGlite.create(path.join(dir, 'pglite')) });
    return {
      database,
      destroy: async () => {
        await database.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const database = await openDatabase({ dataDir: '', pglite: await PGlite.create() });
  await runMigrations(database);
  return { database, destroy: () => database.close() };
}
