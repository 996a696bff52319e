/**
 * The CLI (bin/task-escrow.mjs → cli/task-escrow.ts) as a real child process against the real
 * service: x402 on, anvil, a webhook agent run by the dispatcher. Every payment is made by the
 * SDK inside the CLI, from a demo wallet whose key reaches it only through TASK_ESCROW_PRIVATE_KEY.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';
import { startClientHarness, type ClientHarness } from '../helpers/client-harness.js';
import type { PaidApp } from '../helpers/paid.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.join(ROOT, 'bin/task-escrow.mjs');
let p: PaidApp;
let harness: ClientHarness;
let agentId: string;
let dir: string;
/** Everything every CLI run wrote, to check that no key ever shows. */
const transcripts: string[] = [];

const keyOf = (n: number) => ANVIL_ACCOUNTS[DEV_ROLES.demo[n]!]!.privateKey;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}
/** Runs the CLI as its own process (node + tsx via the bin shim), asynchronously: the service runs in this one. */
function cli(args: string[], wallet: number, env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', TASK_ESCROW_URL: p.baseUrl, TASK_ESCROW_PRIVATE_KEY: keyOf(wallet), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      transcripts.push(stdout, stderr);
      resolve({ code, stdout, stderr });
    });
  });
}

beforeAll(async () => {
  harness = await startClientHarness('CLI');
  ({ p, agentId } = harness);
  dir = mkdtempSync(path.join(tmpdir(), 'cli-test-'));
}, 60_000);
afterAll(async () => {
  await harness?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the task-escrow CLI against the service', () => {
  it('hire --wait prints the task id, then the result; receipts --json lists its payments', async () => {
    const before = await p.balance(p.demo(0).address);
    const run = await cli(['hire', '--agent', agentId, '--budget', '0.2', '--description', 'a tagline', '--wait'], 0);
    expect(run.stderr.split('\n').at(-2) ?? '', run.stderr).toMatch(/completed/);
    expect(run.code, run.stderr).toBe(0);
    const [taskId, result] = run.stdout.trim().split('\n');
    expect(taskId).toMatch(/^task_/);
    expect(result).toBe('a tagline done');

    const receipts = await cli(['receipts', '--json'], 0);
    expect(receipts.code, receipts.stderr).toBe(0);
    const list = JSON.parse(receipts.stdout) as { kind: string; amount: string; task_id: string | null; tx_hash: string; endpoint: string }[];
    // create + (escrow + fund fee) + event stream + result: four settled payments, all on chain.
    expect(list).toHaveLength(4);
    expect(list.filter((r) => r.kind === 'escrow_funding').map((r) => r.task_id)).toEqual([taskId]);
    for (const r of list) expect(r.tx_hash).toMatch(/^0x[0-9a-f]{64}$/);
    const paid = list.reduce((s, r) => s + BigInt(r.amount), 0n);
    expect(await p.balance(p.demo(0).address)).toBe(before - paid);

    const tableRun = await cli(['receipts'], 0);
    expect(tableRun.code).toBe(0);
    expect(tableRun.stdout).toMatch(/^SETTLED\s+KIND\s+USDC/);
    expect(tableRun.stdout).toContain(taskId!);
    expect(tableRun.stdout).toContain('4 receipts');
  });

  it('batch FILE --json: one payment, results in input order, the failure report, exit 1', async () => {
    const file = path.join(dir, 'batch.json');
    writeFileSync(
      file,
      JSON.stringify([
        { agent_id: agentId, description: 'first', budget: '0.2' },
        { agent_id: agentId, description: 'breaks', budget: { amount: '150000', currency: 'USDC', chain: 'base' } },
        { agent_id: agentId, description: 'third', budget: 0.1, depends_on: [0] },
      ]),
    );
    const run = await cli(['batch', file, '--policy', 'continue', '--json'], 1);
    expect(run.code, run.stderr).toBe(1); // one item failed
    const out = JSON.parse(run.stdout) as {
      status: string;
      results: { index: number; status: string; result: { content: unknown } | null }[];
      failures: { index: number; refunded: string }[];
    };
    expect(out.status).toBe('partially_failed');
    expect(out.results.map((r) => [r.index, r.status, r.result?.content ?? null])).toEqual([
      [0, 'completed', 'first done'],
      [1, 'failed', null],
      [2, 'completed', 'third done'],
    ]);
    expect(out.failures).toEqual([expect.objectContaining({ index: 1, refunded: '150000' })]);

    // All items complete → exit 0; the human form prints each result in order.
    writeFileSync(file, JSON.stringify({ items: [{ agent_id: agentId, description: 'alpha', budget: '0.1' }, { agent_id: agentId, description: 'beta', budget: '0.1' }], max_concurrency: 1 }));
    const ok = await cli(['batch', file], 1);
    expect(ok.code, ok.stderr).toBe(0);
    const lines = ok.stdout.split('\n').filter((l) => l.startsWith('#'));
    expect(lines).toEqual([expect.stringMatching(/^#0 completed .* alpha done$/), expect.stringMatching(/^#1 completed .* beta done$/)]);
  });

  it('status --watch follows the task to completed (lines when not a terminal)', async () => {
    const hired = await cli(['hire', '--query', 'cli-writing', '--budget', '0.2', '--description', 'watched'], 2);
    expect(hired.code, hired.stderr).toBe(0);
    const taskId = hired.stdout.trim();
    expect(taskId).toMatch(/^task_/);
    const watch = await cli(['status', taskId, '--watch'], 2);
    expect(watch.code, watch.stderr).toBe(0);
    const lines = watch.stdout.trim().split('\n');
    expect(lines.at(-1)).toMatch(/^\[#{24}\] 100% completed/);
    expect(watch.stdout).not.toContain('\r');

    const once = await cli(['status', taskId, '--json'], 2);
    expect(once.code).toBe(0);
    expect(JSON.parse(once.stdout)).toMatchObject({ task_id: taskId, status: 'completed' });
  });

  it('a spend cap refusal exits 3 with the error, and no money moves', async () => {
    const address = p.demo(3).address;
    const before = await p.balance(address);
    const run = await cli(['hire', '--agent', agentId, '--budget', '1.5', '--description', 'too dear', '--max-per-call', '1'], 3);
    expect(run.code).toBe(3);
    expect(run.stdout).toBe('');
    expect(run.stderr).toMatch(/SpendLimitError: .*maxPerCall 1000000; nothing was paid/);

    const viaEnv = await cli(['hire', '--agent', agentId, '--budget', '0.6', '--description', 'x', '--json'], 3, { TASK_ESCROW_MAX_PER_SESSION: '0.5' });
    expect(viaEnv.code).toBe(3);
    expect(JSON.parse(viaEnv.stderr)).toMatchObject({ error: { name: 'SpendLimitError', code: 'spend_limit', cap: 'maxPerSession', limit: '500000' } });
    expect(await p.balance(address)).toBe(before);
    const receipts = await cli(['receipts', '--json'], 3);
    expect(JSON.parse(receipts.stdout)).toEqual([]);
  });

  it('HTTP errors show the code and message; usage errors exit 2; --help per command', { timeout: 90_000 }, async () => {
    const missing = await cli(['status', 'task_zzzzzzzzzzzzzzzzzzzz', '--max-per-call', '0.01'], 4);
    expect(missing.code).toBe(4);
    expect(missing.stderr).toMatch(/TaskEscrowApiError: status of task_zzzzzzzzzzzzzzzzzzzz: 404 [a-z_]+ \S/);
    const malformed = await cli(['status', 'nope', '--json'], 4);
    expect(malformed.code).toBe(4);
    expect(JSON.parse(malformed.stderr)).toMatchObject({ error: { name: 'TaskEscrowApiError', code: 'validation_error', status: 400 } });

    const usage = await cli(['hire', '--budget', '0.2'], 4);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/exactly one of --agent ID or --query TEXT/);

    const help = await cli(['batch', '--help'], 4);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^Usage: task-escrow batch FILE\.json/);

    const badKey = await cli(['receipts'], 4, { TASK_ESCROW_PRIVATE_KEY: `${keyOf(4)}ff` });
    expect(badKey.code).toBe(2);
    expect(badKey.stderr).toMatch(/its value is not shown/);
  });

  it('never prints a private key', () => {
    expect(transcripts.length).toBeGreaterThan(10);
    const all = transcripts.join('\n').toLowerCase();
    for (const n of [0, 1, 2, 3, 4]) {
      expect(all).not.toContain(keyOf(n).toLowerCase().slice(2));
    }
  });
});
