/**
 * The real service as an OS process (`node --import tsx src/server.ts`), for tests and the soak
 * that kill it with SIGKILL: on a Postgres database of its own and an anvil chain of the caller's,
 * with the anvil accounts as escrow, operator and fee wallets.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SERVER_ENTRY = path.join(REPO_ROOT, 'src/server.ts');
export const POSTGRES_URL = process.env.DATABASE_URL || 'postgres://postgres@127.0.0.1:5432/test';

export interface ScratchDatabase {
  url: string;
  drop(): Promise<void>;
}

/** A throwaway Postgres database `te_<prefix>_<random>` (the service migrates it when it starts). */
export async function scratchDatabase(prefix: string, baseUrl = POSTGRES_URL): Promise<ScratchDatabase> {
  const admin = new pg.Client({ connectionString: baseUrl, connectionTimeoutMillis: 5_000 });
  await admin.connect();
  const name = `te_${prefix}_${randomBytes(6).toString('hex')}`;
  await admin.query(`create database ${name}`);
  const u = new URL(baseUrl);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    drop: async () => {
      await admin.query(`drop database if exists ${name} with (force)`).catch(() => undefined);
      await admin.end();
    },
  };
}

export interface ServiceProcess {
  proc: ChildProcess;
  /** http://127.0.0.1:<port> (empty for the worker role). */
  baseUrl: string;
  output: string[];
  /** SIGKILL, and wait until the process is gone. */
  kill(): Promise<void>;
  /** SIGTERM (graceful), then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** The environment of a service on `rpcUrl` and `databaseUrl` with the anvil wallets. */
export function serviceEnv(databaseUrl: string, rpcUrl: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    NODE_ENV: 'test',
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    DATABASE_URL: databaseUrl,
    DB_POOL_MAX: '5',
    CHAIN_RPC_URL: rpcUrl,
    CHAIN_NETWORK: 'base',
    ESCROW_PRIVATE_KEY: ANVIL_ACCOUNTS[DEV_ROLES.escrow]!.privateKey,
    OPERATOR_PRIVATE_KEY: ANVIL_ACCOUNTS[DEV_ROLES.operator]!.privateKey,
    FEE_ADDRESS: ANVIL_ACCOUNTS[DEV_ROLES.feeTreasury]!.address,
    FEE_PRIVATE_KEY: ANVIL_ACCOUNTS[DEV_ROLES.feeTreasury]!.privateKey,
    CALLBACK_SIGNING_SECRET: 'service-process-callback-secret-0123456789',
    SESSION_SECRET: 'service-process-session-secret-0123456789',
    ALLOW_PRIVATE_URLS: 'true',
    RATE_LIMIT_MAX: '1000000',
    MAX_EVENT_LOOP_DELAY_MS: '0',
    SHUTDOWN_GRACE_MS: '2000',
    // Every payment settles first here; the micro-fee tests (test/payments/micro-fees*.test.ts) turn deferral on.
    MICRO_FEES_DEFERRED: 'false',
    ...extra,
  };
}

/** Calls `onLine` with every complete line the process writes to stdout or stderr. */
export function eachLine(proc: ChildProcess, onLine: (line: string) => void): void {
  for (const stream of [proc.stdout!, proc.stderr!]) {
    let buffered = '';
    stream.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      lines.forEach(onLine);
    });
  }
}

/** Starts the service and resolves once it listens (or, for ROLE=worker, once its workers run). */
export async function startService(env: Record<string, string>, timeoutMs = 30_000): Promise<ServiceProcess> {
  const proc = spawn(process.execPath, ['--import', 'tsx', SERVER_ENTRY], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  const output: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    proc.once('exit', (code, signal) => {
      live.delete(proc);
      resolve({ code, signal });
    }),
  );
  const ready = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`service did not start in ${timeoutMs} ms:\n${output.slice(-20).join('\n')}`)), timeoutMs);
    const onLine = (line: string) => {
      output.push(line);
      if (output.length > 2000) output.splice(0, 1000);
      const listening = line.match(/listening on (http:\/\/[0-9.:]+)/);
      if (listening || line.includes('worker started')) {
        clearTimeout(timer);
        resolve(listening?.[1] ?? '');
      }
    };
    eachLine(proc, onLine);
    void exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`service exited (${code ?? signal}) before it started:\n${output.slice(-20).join('\n')}`));
    });
  });
  const baseUrl = await ready;
  const gone = async () => {
    await exited;
  };
  return {
    proc,
    baseUrl,
    output,
    exited,
    kill: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await gone();
    },
    stop: async (graceMs = 5000) => {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await gone();
      clearTimeout(timer);
    },
  };
}

/** Polls `probe` every 100 ms until it answers something truthy (returned), or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs = 30_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
