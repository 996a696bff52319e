import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDemo, SEED_SUBTASKS, type DemoSummary } from '../scripts/demo/run.js';
import { LlmServer } from './helpers/llm-server.js';

/** `npm run demo` in-process: the seed's batch delegation, paid with x402, settled on a fresh anvil. */

const LLM_VARS = ['LLM_BASE_URL', 'LLM_API_KEY', 'OPENAI_API_KEY', 'LLM_MODEL'] as const;
const RELEASE = 975_000n; // 1 USDC escrow minus the 2.5 % platform fee

function expectMoneyAddsUp(s: DemoSummary, taskCount: number): void {
  expect(s.totalEscrow).toBe(BigInt(taskCount) * 1_000_000n);
  expect(s.totalRefunded).toBe(0n);
  // the client paid exactly the escrows and the fees of its receipts, as the seed's budget note says
  expect(-s.client.change).toBe(s.totalEscrow + s.totalFees);
  expect(s.budget).toMatchObject({ ok: true, expected: s.budget.actual, pollingFees: BigInt(s.polls) * 1000n });
  expect(s.receipts.unattributed).toBe(0n);
  expect(s.receipts.total).toBe(s.totalEscrow + s.totalFees);
  expect(s.tasks.reduce((sum, t) => sum + t.fees, 0n)).toBe(s.totalFees);
  // per-call fees reach the fee wallet; funding fees and the platform fee stay in the escrow wallet
  expect(s.feeWallet.change).toBe(s.callFees);
  expect(s.fundingFees).toBe(BigInt(taskCount) * 5000n);
  expect(s.escrowWallet.change).toBe(s.fundingFees + BigInt(taskCount) * (1_000_000n - RELEASE));
  // every agent's payout wallet got 0.975 per task it did, every release confirmed on chain
  for (const w of s.agentWallets) expect(w.change, w.agentName).toBe(RELEASE * BigInt(w.tasks));
  expect(s.agentWallets.reduce((n, w) => n + w.tasks, 0)).toBe(taskCount);
  for (const t of s.tasks) {
    expect(t.payouts).toEqual([expect.objectContaining({ kind: 'release', amount: RELEASE, status: 'confirmed', txHash: expect.stringMatching(/^0x[0-9a-f]{64}$/) })]);
  }
}

describe('npm run demo, without an LLM provider', () => {
  const saved: Partial<Record<(typeof LLM_VARS)[number], string>> = {};
  const lines: string[] = [];
  let summary: DemoSummary;

  beforeAll(async () => {
    for (const name of LLM_VARS) {
      if (process.env[name] !== undefined) saved[name] = process.env[name];
      delete process.env[name];
    }
    summary = await runDemo({ log: (line) => lines.push(line) });
  }, 120_000);
  afterAll(() => {
    for (const [name, value] of Object.entries(saved)) process.env[name] = value;
  });

  it('completes the seed’s three tasks with the right agents and collects their results', () => {
    expect(summary.ok).toBe(true);
    expect(summary.tasks.map((t) => [t.description, t.agentName, t.status, t.stage])).toEqual([
      ['Generate image A', 'Pixel Forge', 'completed', 'done'],
      ['Generate image B', 'Pixel Forge', 'completed', 'done'],
      ['Write copy', 'Copy Wright', 'completed', 'done'],
    ]);
    expect(summary.tasks.map((t) => t.description)).toEqual(SEED_SUBTASKS.map((s) => s.description));
    expect(summary.tasks.map((t) => t.resultType)).toEqual(['image', 'image', 'text']);
    expect(summary.tasks[2]!.resultText).toContain('SunBeam');
    for (const t of summary.tasks) expect(t.resultHash).toMatch(/^[0-9a-f]{64}$/);
    expect(summary.calls).toMatchObject({ search: 3, create: 3, fund: 3, result: 3 });
    expect(summary.polls).toBeGreaterThanOrEqual(3);
    // the asynchronous agent's progress showed up in the polls before it delivered
    expect(lines.some((l) => /copy: in_progress\/running (35|70)%/.test(l))).toBe(true);
  });

  it('moves the money exactly: escrows + fees out of the client, 0.975 per task to each agent, call fees to the fee wallet', () => {
    expectMoneyAddsUp(summary, 3);
    expect(summary.agentWallets.map((w) => [w.agentName, w.tasks, w.change])).toEqual([
      ['Pixel Forge', 2, 2n * RELEASE],
      ['Copy Wright', 1, RELEASE],
    ]);
  });

  it('skips the hosted LLM agent and says why', () => {
    expect(summary.hostedAgent.registered).toBe(false);
    expect(summary.hostedAgent.message).toMatch(/skipped/i);
    expect(summary.hostedAgent.message).toContain('OPENAI_API_KEY');
    expect(lines.filter((l) => l.includes('Hosted LLM agent skipped')).length).toBeGreaterThanOrEqual(1);
  });

  it('prints a readable summary and removes its temporary data directory', () => {
    const text = lines.join('\n');
    expect(text).toContain('▸ Summary');
    expect(text).toContain('✓ matches');
    expect(text).not.toMatch(/^\s*[{[]/m); // no JSON dumps
    const dataDir = /embedded PGlite in (\S+)/.exec(text)?.[1];
    expect(dataDir).toBeTruthy();
    expect(existsSync(dataDir!)).toBe(false);
  });
});

describe('npm run demo, with an LLM provider (a fake one on loopback)', () => {
  let llm: LlmServer;
  let summary: DemoSummary;

  beforeAll(async () => {
    llm = await new LlmServer(() => 'Sunlight by day, glow all night.').start();
    summary = await runDemo({ log: () => undefined, env: { LLM_BASE_URL: llm.baseUrl, LLM_API_KEY: 'sk-demo-test-key', LLM_MODEL: 'demo-model' } });
  }, 120_000);
  afterAll(() => llm.stop());

  it('registers the hosted agent and gives it a fourth subtask, paid like the others', () => {
    expect(summary.ok).toBe(true);
    expect(summary.hostedAgent.registered).toBe(true);
    expect(summary.tasks).toHaveLength(4);
    expect(summary.tasks[3]).toMatchObject({ agentName: 'Tagline Muse', status: 'completed', resultType: 'text', resultText: 'Sunlight by day, glow all night.' });
    expectMoneyAddsUp(summary, 4);
    expect(llm.requests).toHaveLength(1);
    expect(llm.requests[0]).toMatchObject({ model: 'demo-model', authorization: 'Bearer sk-demo-test-key' });
  });
});
