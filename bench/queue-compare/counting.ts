/**
 * Counts the SQL statements a target sends, the same way for every queue on a database kind:
 *
 * - Postgres: every `pg.Client#query` (node-postgres; `Pool#query` goes through it, and so do
 *   drizzle and pg-boss, which share this `pg`), BEGIN and COMMIT included;
 * - PGlite: every `query` / `exec` on the instance and on the transactions it hands out, plus 2 per
 *   transaction for the BEGIN and COMMIT PGlite sends itself.
 *
 * A multi-statement `exec` (pg-boss's schema install and maintenance) counts as one.
 */
import type { PGlite, Transaction } from '@electric-sql/pglite';
import pg from 'pg';

export interface Counter {
  statements: number;
}

type AnyFn = (...args: unknown[]) => unknown;

let pgHook: { counter: Counter; original: AnyFn } | undefined;

/** Counts every node-postgres query into `counter` until `uncountPostgres()`. */
export function countPostgres(counter: Counter): void {
  const proto = pg.Client.prototype as unknown as { query: AnyFn };
  if (pgHook) {
    pgHook.counter = counter;
    return;
  }
  const hook = { counter, original: proto.query };
  pgHook = hook;
  proto.query = function (this: unknown, ...args: unknown[]) {
    hook.counter.statements++;
    return hook.original.apply(this, args);
  };
}

export function uncountPostgres(): void {
  if (!pgHook) return;
  (pg.Client.prototype as unknown as { query: AnyFn }).query = pgHook.original;
  pgHook = undefined;
}

function countCalls<T extends object>(target: T, counter: Counter, methods: readonly string[]): T {
  const t = target as unknown as Record<string, AnyFn>;
  for (const m of methods) {
    const original = t[m]!.bind(target);
    t[m] = (...args: unknown[]) => {
      counter.statements++;
      return original(...args);
    };
  }
  return target;
}

/** Counts every statement sent through `client` (patched in place) into `counter`. */
export function countPglite(client: PGlite, counter: Counter): PGlite {
  countCalls(client, counter, ['query', 'exec']);
  const transaction = client.transaction.bind(client);
  (client as unknown as { transaction: <T>(fn: (tx: Transaction) => Promise<T>) => Promise<T> }).transaction = (fn) =>
    transaction(async (tx) => {
      counter.statements += 2; // BEGIN, COMMIT (or ROLLBACK)
      return fn(countCalls(tx, counter, ['query', 'exec']));
    });
  return client;
}
