import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import pg from 'pg';
import { createPglite, openDatabase } from '../../src/db/client.js';
import { runMigrations } from '../../src/db/migrate.js';

/**
 * Migrates one database up front; every test file then starts from a copy of it:
 * - PGlite (default): a migrated data directory that files copy (reopening takes ~0.2 s, initdb ~2 s);
 * - Postgres (DATABASE_URL set): a template database that files clone with CREATE DATABASE … TEMPLATE.
 */
declare module 'vitest' {
  export interface ProvidedContext {
    pgliteTemplateDir: string;
    pgTemplateUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const url = process.env.DATABASE_URL;
  if (url) {
    const templateName = `te_template_${process.pid}`;
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    await admin.query(`drop database if exists ${templateName} with (force)`);
    await admin.query(`create database ${templateName}`);
    const templateUrl = withDatabase(url, templateName);
    const database = await openDatabase({ url: templateUrl, dataDir: '' });
    await runMigrations(database);
    await database.close();
    project.provide('pgTemplateUrl', templateUrl);
    project.provide('pgliteTemplateDir', '');
    return async () => {
      await admin.query(`drop database if exists ${templateName} with (force)`);
      await admin.end();
    };
  }
  const root = mkdtempSync(path.join(tmpdir(), 'te-pglite-template-'));
  const client = await createPglite(root);
  const database = await openDatabase({ dataDir: root, pglite: client });
  await runMigrations(database);
  await database.close();
  project.provide('pgliteTemplateDir', path.join(root, 'pglite'));
  project.provide('pgTemplateUrl', '');
  return async () => rmSync(root, { recursive: true, force: true });
}

export function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/** A database URL fit for an error message: its password masked. */
export function redactPassword(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '<invalid DATABASE_URL>';
  }
}
