/**
 * The options of `npm run bench:queue` (bench/queue-compare.ts) and the time budget of a run.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_PG_URL } from '../lib.js';

export interface Settings {
  /** N: jobs enqueued (and worked) per target. */
  jobs: number;
  /** K: concurrent enqueue lanes, and concurrent workers. */
  workers: number;
  /** B: jobs leased / fetched per claim. */
  batch: number;
  /** "Work" per claimed batch: a sleep of this many ms (0 = no-op). */
  workMs: number;
  /** Lease length of our queue (pg-boss: its default `expireIn`, 15 min). */
  leaseMs: number;
  /** PGlite in a temp directory (`file`, the service's mode) or in memory. */
  pglite: 'file' | 'memory';
  /** A Postgres role allowed to CREATE DATABASE. */
  pgUrl: string;
}

const USAGE = `usage: npm run bench:queue -- [--jobs N] [--workers K] [--batch B] [--work-ms MS] [--lease-ms MS] [--pglite file|memory]
  DATABASE_URL (default ${DEFAULT_PG_URL}): Postgres allowed to CREATE DATABASE`;

function positive(name: string, raw: string | undefined, fallback: number, min = 1): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got "${raw}"\n${USAGE}`);
  return n;
}

export function readSettings(argv: string[] = process.argv.slice(2)): Settings {
  const { values } = parseArgs({
    args: argv,
    options: {
      jobs: { type: 'string' },
      workers: { type: 'string' },
      batch: { type: 'string' },
      'work-ms': { type: 'string' },
      'lease-ms': { type: 'string' },
      pglite: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const pglite = values.pglite ?? 'file';
  if (pglite !== 'file' && pglite !== 'memory') throw new Error(`--pglite must be file or memory, got "${pglite}"\n${USAGE}`);
  return {
    jobs: positive('jobs', values.jobs, 5000),
    workers: positive('workers', values.workers, 4),
    batch: positive('batch', values.batch, 10),
    workMs: positive('work-ms', values['work-ms'], 0, 0),
    leaseMs: positive('lease-ms', values['lease-ms'], 30_000, 1000),
    pglite,
    pgUrl: process.env.DATABASE_URL || DEFAULT_PG_URL,
  };
}

/** The watchdog: generous for the defaults (which take well under 2 minutes), scaled with N and the work sleep. */
export function budgetSeconds(s: Settings): number {
  return Math.ceil(240 + s.jobs / 20 + (4 * s.jobs * s.workMs) / (1000 * s.batch * s.workers));
}
