/**
 * `preparedQuery` and `preparedSql` (src/db/prepared.ts), on a PGlite of this file's own and on the
 * machine's Postgres (a scratch database), whichever database the test pass uses. On PGlite a
 * prepared query is `PREPARE`d once in PGlite's session and run with `EXECUTE`, its parameters as
 * literals: what it returns must be what the plain query returns, for values that need quoting too,
 * and nothing in a parameter may run as SQL. Inside a transaction it runs on the transaction's
 * connection, prepared once there too, and a statement that cannot be prepared leaves the
 * transaction usable.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { eq, sql } from 'drizzle-orm';
import { bigint, pgTable, text, timestamp } from 'drizzle-orm/pg-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPglite, openDatabase, rowsOf, withTransaction, type Database } from '../../src/db/client.js';
import { preparedQuery, preparedSql } from '../../src/db/prepared.js';
import { scratchDatabase, type ScratchDatabase } from '../helpers/service-process.js';

const things = pgTable('prepared_things', {
  id: text('id').primaryKey(),
  amount: bigint('amount', { mode: 'bigint' }).notNull(),
  at: timestamp('at', { withTimezone: true, mode: 'date' }).notNull(),
});

const thingById = preparedQuery((db) => db.select().from(things).where(eq(things.id, sql.placeholder('id'))).prepare('prepared_things_by_id'));
const addAmount = preparedQuery((db) =>
  db
    .update(things)
    .set({ amount: sql`${things.amount} + ${sql.placeholder('by')}::bigint` })
    .where(eq(things.id, sql.placeholder('id')))
    .returning({ amount: things.amount })
    .prepare('prepared_things_add'),
);
/** Raw SQL with a row lock, as the dispatcher's claim runs it. */
const lockThing = preparedSql('prepared_things_lock', sql`select id, amount::text as amount from prepared_things where id = ${sql.placeholder('id')} for update`);
/** CALL takes parameters but PREPARE refuses it: it runs as text. */
const bumpCall = preparedSql('prepared_bump', sql`call prepared_bump(${sql.placeholder('id')}, ${sql.placeholder('by')})`);

const preparedCount = async (db: Database['db'], like: string): Promise<number> =>
  rowsOf<{ statement: string }>(await db.execute(sql`select statement from pg_prepared_statements`)).filter((p) => p.statement.includes(like)).length;

let root: string;
let database: Database;

beforeAll(async () => {
  root = mkdtempSync(path.join(tmpdir(), 'te-prepared-'));
  database = await openDatabase({ dataDir: root, pglite: await createPglite(root) });
  await database.db.execute(sql`create table prepared_things (id text primary key, amount bigint not null, at timestamptz not null)`);
  await database.db.execute(
    sql.raw(`create procedure prepared_bump(thing text, by bigint) language sql as $$ update prepared_things set amount = amount + by where id = thing $$`),
  );
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

  it('runs in a transaction on the transaction: prepared once, kept after a rollback, its writes rolled back', async () => {
    // First use inside a transaction that rolls back: the statement stays prepared, the write does not.
    await expect(
      withTransaction(database.db, async (tx) => {
        expect(await addAmount(tx).execute({ id: 'plain', by: '10' })).toEqual([{ amount: 11n }]);
        expect(rowsOf(await lockThing(tx).execute({ id: 'plain' }))).toEqual([{ id: 'plain', amount: '11' }]);
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    expect(await thingById(database.db).execute({ id: 'plain' })).toMatchObject([{ amount: 1n }]);
    expect(await preparedCount(database.db, 'set "amount"')).toBe(1);
    // Again, in two transactions and outside one: one statement each, the same answers.
    for (let i = 0; i < 2; i++) {
      await withTransaction(database.db, async (tx) => {
        await addAmount(tx).execute({ id: 'plain', by: '1' });
        expect(await thingById(tx).execute({ id: 'plain' })).toEqual(await tx.select().from(things).where(eq(things.id, 'plain')));
      });
    }
    expect(await addAmount(database.db).execute({ id: 'plain', by: '1' })).toEqual([{ amount: 4n }]);
    expect(await preparedCount(database.db, 'set "amount"')).toBe(1);
    expect(await preparedCount(database.db, 'for update')).toBe(1);
    expect(await preparedCount(database.db, 'from "prepared_things" where "prepared_things"."id"')).toBe(1);
  });

  it('leaves a transaction usable when a statement cannot be prepared, and runs it as text', async () => {
    await withTransaction(database.db, async (tx) => {
      await bumpCall(tx).execute({ id: 'plain', by: '10' }); // its PREPARE fails under a savepoint
      await bumpCall(tx).execute({ id: 'plain', by: '100' });
      await addAmount(tx).execute({ id: 'plain', by: '1' }); // the transaction is still usable
    });
    expect(await thingById(database.db).execute({ id: 'plain' })).toMatchObject([{ amount: 115n }]);
    await bumpCall(database.db).execute({ id: 'plain', by: '1000' });
    expect(await thingById(database.db).execute({ id: 'plain' })).toMatchObject([{ amount: 1115n }]);
    expect(await preparedCount(database.db, 'call ')).toBe(0);
  });
});

describe('preparedQuery on Postgres', () => {
  let scratch: ScratchDatabase;
  let pgDatabase: Database;

  beforeAll(async () => {
    scratch = await scratchDatabase('prepared');
    pgDatabase = await openDatabase({ url: scratch.url, dataDir: root, poolMax: 2 });
    await pgDatabase.db.execute(sql`create table prepared_things (id text primary key, amount bigint not null, at timestamptz not null)`);
    await pgDatabase.db.insert(things).values({ id: 'a', amount: 1n, at: new Date('2026-11-30T00:00:00.000Z') });
  }, 60_000);

  afterAll(async () => {
    await pgDatabase?.close();
    await scratch?.drop();
  });

  it('runs in a transaction as a named statement of its connection, committed and rolled back as the transaction is', async () => {
    await withTransaction(pgDatabase.db, async (tx) => {
      expect(await addAmount(tx).execute({ id: 'a', by: '2' })).toEqual([{ amount: 3n }]);
      expect(rowsOf(await lockThing(tx).execute({ id: 'a' }))).toEqual([{ id: 'a', amount: '3' }]);
      // The statements are named statements of this transaction's connection.
      const names = rowsOf<{ name: string }>(await tx.execute(sql`select name from pg_prepared_statements`)).map((r) => r.name);
      expect(names).toEqual(expect.arrayContaining(['prepared_things_add', 'prepared_things_lock']));
    });
    await expect(
      withTransaction(pgDatabase.db, async (tx) => {
        await addAmount(tx).execute({ id: 'a', by: '100' });
        throw new Error('roll back');
      }),
    ).rejects.toThrow('roll back');
    expect(await thingById(pgDatabase.db).execute({ id: 'a' })).toMatchObject([{ id: 'a', amount: 3n }]);
    // Many transactions over the pool's two connections: each its own connection's statement.
    await Promise.all(Array.from({ length: 6 }, () => withTransaction(pgDatabase.db, (tx) => addAmount(tx).execute({ id: 'a', by: '1' }))));
    expect(await thingById(pgDatabase.db).execute({ id: 'a' })).toMatchObject([{ amount: 9n }]);
  });
});
