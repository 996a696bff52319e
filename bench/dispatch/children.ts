/**
 * Parent side: the app children (bench/dispatch.ts with `--serve`), each on a fresh database of
 * its own, and the calls to them.
 */
import type { ChildProcess } from 'node:child_process';
import { forkSelf, makeTempDir, onceFromChild, removeTempDir, stopProcess, type ThrowawayDb } from '../lib.js';
import { AGENT_SECRET, type FromChild, type Request, type ToChild } from './protocol.js';

export interface Child {
  base: string;
  proc: ChildProcess;
  /** The child's answer to `req` (its error rejects, so do its exit and the timeout). */
  call<T>(req: Request, timeoutMs?: number): Promise<T>;
}

/** Forks the script at `scriptUrl` with `--serve` and waits until its app listens. */
async function startChild(scriptUrl: string, env: Record<string, string>): Promise<Child> {
  const proc = forkSelf(scriptUrl, ['--serve'], { ...env, BENCH_AGENT_SECRET: AGENT_SECRET });
  const pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  let seq = 0;
  proc.on('exit', (code, signal) => {
    for (const [id, p] of pending) {
      clearTimeout(p.timer);
      p.reject(new Error(`child exited (${code ?? signal})`));
      pending.delete(id);
    }
  });
  proc.on('message', (raw: unknown) => {
    const msg = raw as FromChild;
    if (msg.type !== 'result') return;
    const p = pending.get(msg.id);
    if (!p) return;
    pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.ok) p.resolve(msg.value);
    else p.reject(new Error(msg.message));
  });
  const { port } = await onceFromChild<FromChild, 'listening'>(proc, 'listening', 120_000);
  return {
    base: `http://127.0.0.1:${port}`,
    proc,
    call: <T>(req: Request, timeoutMs = 600_000) =>
      new Promise<T>((resolve, reject) => {
        const id = ++seq;
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`child did not answer "${req.type}" within ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
        proc.send({ ...req, id } satisfies ToChild);
      }),
  };
}

/** Where a child keeps its database: a fresh PGlite directory, or a fresh Postgres database. */
export interface DbTarget {
  label: 'PGlite' | 'Postgres';
  env(): Promise<{ env: Record<string, string>; cleanup(): Promise<void> }>;
}

export const pgliteTarget: DbTarget = {
  label: 'PGlite',
  env: async () => {
    const dir = makeTempDir('te-bench-dispatch-');
    return {
      env: { BENCH_DB_URL: '', BENCH_DATA_DIR: dir },
      cleanup: async () => removeTempDir(dir),
    };
  },
};

export function postgresTarget(create: () => Promise<ThrowawayDb>): DbTarget {
  return {
    label: 'Postgres',
    env: async () => {
      const db = await create();
      return { env: { BENCH_DB_URL: db.url, BENCH_DATA_DIR: '' }, cleanup: () => db.drop() };
    },
  };
}

/** `fn` with a child on a fresh database of `target`; the child is stopped and the database removed after. */
export async function withChild<T>(scriptUrl: string, target: DbTarget, env: Record<string, string>, fn: (child: Child) => Promise<T>): Promise<T> {
  const db = await target.env();
  try {
    const child = await startChild(scriptUrl, { ...db.env, ...env });
    try {
      return await fn(child);
    } finally {
      await stopProcess(child.proc, 20_000);
    }
  } finally {
    await db.cleanup();
  }
}
