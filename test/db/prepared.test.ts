/**
 * `preparedQuery` (src/db/prepared.ts) on PGlite, whichever database the test pass uses: a PGlite of
 * this file's own. A prepared query is `PREPARE`d once in PGlite's session and run with `EXECUTE`,
 * its parameters as literals: what it returns must be what the plain query returns, for values that
 * need quoting too, and nothing in a parameter may run as SQL.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { eq, sql } from 'drizzle-orm';
import { bigint, pgTable, text, timestamp } from 'drizzle-orm/pg-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPglite, openDatabase, rowsOf, type Database } from '../../src/db/client.js';
import { preparedQuery } from '../../src/db/prepared.js';

const things = pgTable('prepared_things', {
  id: text('id').primaryKey(),
  amount: bigint('amount', { mode: 'bigint' }).notNull(),
  at: timestamp('at', { withTimezone: true, mode: 'date' }).notNull(),
});

const thingById = preparedQuery((db) => db.select().from(things).where(eq(things.id, sql.placeholder('id'))).prepare('prepared_things_by_id'));

let root: string;
let database: Database;

beforeAll(async () => {
  root = mkdtempSync(path.join(tmpdir(), 'te-prepared-'));
  database = await openDatabase({ dataDir: root, pglite: await createPglite(root) });
  await database.db.execute(sql`create table prepared_things (id text primary key, amount bigint not null, at timestamptz not null)`);
}, 60_000);

afterAll(async () => {
  await database?.close();
  rmSync(root, { recursive: true, force: true });
});

describe('preparedQuery on PGlite', () => {
  it('runs as a statement prepared once in the session, answering what the plain query answers', async () => {
    const rows = [
      { id: 'plain', amount: 1n, at: new Date('2026-11-30T01:02:03.456Z') },
      { id: "it's \\ a \"quoted\" id", amount: 2n ** 63n - 1n, at: new Date('2026-01-01T00:00:00.000Z') },
    ];
    await database.db.insert(things).values(rows);
    for (const row of rows) {
      const plain = await database.db.select().from(things).where(eq(things.id, row.id));
      expect(plain).toEqual([row]);
      expect(await thingById(database.db).execute({ id: row.id })).toEqual(plain);
      expect(await thingById(database.db).execute({ id: row.id })).toEqual(plain); // the second run reuses the statement
    }
    const prepared = rowsOf<{ statement: string }>(await database.db.execute(sql`select statement from pg_prepared_statements where name like 'te\\_%'`));
    expect(prepared.filter((p) => p.statement.includes('prepared_things'))).toHaveLength(1);
  });

  it('takes a parameter as data: SQL in it runs nowhere and finds nothing', async () => {
    expect(await thingById(database.db).execute({ id: "x'; drop table prepared_things; --" })).toEqual([]);
    expect(await thingById(database.db).execute({ id: "' or '1'='1" })).toEqual([]);
    expect(rowsOf<{ n: number }>(await database.db.execute(sql`select count(*)::int as n from prepared_things`))[0]!.n).toBe(2);
  });
});
