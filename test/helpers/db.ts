import { mkdtempSync, rmSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { inject } from 'vitest';
import { openDatabase, type Database } from '../../src/db/client.js';
import { withDatabase } from './global-setup.js';

export interface TestDatabase {
  database: Database;
  /** Postgres URL of this file's own database (absent on PGlite). */
  url?: string;
  destroy(): Promise<void>;
}

/** A fresh, migrated database for one test file: a clone of the template made by global-setup. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const templateUrl = inject('pgTemplateUrl');
  if (templateUrl) {
    const name = `te_test_${randomBytes(6).toString('hex')}`;
    const template = new URL(templateUrl).pathname.slice(1);
    const admin = new pg.Client({ connectionString: templateUrl.replace(`/${template}`, '/postgres') });
    await admin.connect();
    await admin.query(`create database ${name} template ${template}`);
    const url = withDatabase(templateUrl, name);
    const database = await openDatabase({ url, dataDir: '', poolMax: 20 });
    return {
      database,
      url,
      destroy: async () => {
        await database.close();
        await admin.query(`drop database if exists ${name} with (force)`);
        await admin.end();
      },
    };
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'te-pglite-'));
  cpSync(inject('pgliteTemplateDir'), path.join(dir, 'pglite'), { recursive: true });
  const client = await PGlite.create(path.join(dir, 'pglite'));
  const database = await openDatabase({ dataDir: dir, pglite: client });
  return {
    database,
    destroy: async () => {
      await database.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
