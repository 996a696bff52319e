import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ResearchContent } from '../scripts/demo/agents.js';
import { shortHex, usdc } from '../scripts/demo/format.js';
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

const BATCH_FEE = 10_000n;
const released = (escrow: bigint) => (escrow * 975n) / 1000n;

/** The batch part: one payment per batch, confirmed releases, and the money to the atomic unit. */
function expectBatchesAddUp(s: DemoSummary): void {
  const b = s.batches;
  expect(b.ok).toBe(true);
  expect(b.batches.map((x) => [x.label, x.status])).toEqual([
    ['fan-out', 'completed'],
    ['pipeline', 'completed'],
  ]);
  for (const batch of b.batches) {
    // ONE payment (a POST /v1/batches receipt) carried every escrow plus one batch fee; its transaction is the batch's
    expect(batch.paid).toBe(batch.escrow + BATCH_FEE);
    expect(batch.payments).toEqual([{ amount: batch.paid, txHash: batch.fundTxHash, kind: 'escrow_funding' }]);
    expect(batch.fundTxHash).toMatch(/^0x[0-9a-f]{64}$/);
    for (const item of batch.items) {
      expect(item.payouts, item.description).toEqual([
        expect.objectContaining({ kind: 'release', amount: released(item.escrow), status: 'confirmed', txHash: expect.stringMatching(/^0x[0-9a-f]{64}$/) }),
      ]);
      expect(item.released).toBe(released(item.escrow));
    }
  }
  const m = b.money;
  expect(m.checks.filter((c) => !c.ok)).toEqual([]);
  expect(m.escrows).toBe(3_500_000n);
  expect(m.batchFees).toBe(2n * BATCH_FEE);
  expect(m.refunds).toBe(0n);
  expect(m.pollingFees).toBe(BigInt(b.calls.batchPolls + b.calls.statusPolls) * 1000n);
  // the client paid exactly escrows + batch fee + polls, on chain and in its receipts
  expect(m.actual).toBe(m.escrows + m.batchFees + m.pollingFees);
  expect(-m.client.change).toBe(m.actual);
  expect(m.receipts).toEqual({ count: 2 + b.calls.batchPolls + b.calls.statusPolls, total: m.actual, batchPayments: 2, polls: b.calls.batchPolls + b.calls.statusPolls });
  expect(m.feeWallet.change).toBe(m.pollingFees);
  const allReleased = b.batches.flatMap((x) => x.items).reduce((sum, i) => sum + released(i.escrow), 0n);
  expect(m.escrowWallet.change).toBe(m.escrows + m.batchFees - allReleased);
  expect(m.agentWallets.filter((w) => w.change !== 0n).map((w) => [w.agentName, w.change])).toEqual([
    ['Pixel Forge', 2n * released(800_000n)],
    ['Copy Wright', released(600_000n)],
    ['Field Scout', released(700_000n)],
    ['Story Smith', released(600_000n)],
  ]);
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
  }, 180_000);
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

  it('runs a batch of three paid with ONE payment and collects the results in input order', () => {
    const fanOut = summary.batches.batches[0]!;
    expect(fanOut.items.map((i) => [i.index, i.description, i.agentName, i.status, i.resultType])).toEqual([
      [0, 'Generate the banner image', 'Pixel Forge', 'completed', 'image'],
      [1, 'Generate the social image', 'Pixel Forge', 'completed', 'image'],
      [2, 'Write the launch copy', 'Copy Wright', 'completed', 'text'],
    ]);
    expect(fanOut.escrow).toBe(2_200_000n);
    expect(fanOut.items[2]!.resultText).toContain('SunBeam');
    for (const i of fanOut.items) expect(i.resultHash).toMatch(/^[0-9a-f]{64}$/);
    expect(summary.batches.calls.create).toBe(2);
    expect(fanOut.polls).toBeGreaterThanOrEqual(1);
  });

  it('runs research, then write: the writer builds on the research it got in task.predecessors', () => {
    const [research, write] = summary.batches.batches[1]!.items;
    expect([research!.agentName, research!.status, research!.resultType]).toEqual(['Field Scout', 'completed', 'structured']);
    expect([write!.agentName, write!.status, write!.dependsOn]).toEqual(['Story Smith', 'completed', [0]]);
    expect(research!.predecessors).toEqual([]);
    expect(write!.predecessors).toEqual([{ task_id: research!.taskId, index: 0, status: 'completed', result: expect.objectContaining({ type: 'structured' }), failure: null }]);
    // the brief's result is the research as delivered, and the writer's text is made of it
    const notes = write!.predecessors[0]!.result!.content as ResearchContent;
    expect(JSON.parse(research!.resultText!)).toEqual(notes);
    expect(write!.resultText).toContain(`Research ${research!.taskId} found that ${notes.findings[0]}`);
    expect(write!.resultText).toContain(notes.audience);
    // the writer was briefed only after the research was answered, and its brief named the research
    const answered = lines.findIndex((l) => l.includes(`Field Scout: answered 200 with the result of ${research!.taskId}`));
    const briefed = lines.findIndex((l) =>
      l.includes(`Story Smith: brief "Write the launch blurb from the research" for ${write!.taskId} (signature ok), with the results of ${research!.taskId}`),
    );
    expect(answered).toBeGreaterThanOrEqual(0);
    expect(briefed).toBeGreaterThan(answered);
    // its text is printed in full with the results
    expect(lines.join(' ').replace(/\s+/g, ' ')).toContain(`found that ${notes.findings[0]}`);
  });

  it('moves the batches’ money exactly: the client paid escrows + batch fees + polls, to the atomic unit', () => {
    expectBatchesAddUp(summary);
  });

  it('prints the task tree with every on-chain movement', () => {
    const text = lines.join('\n');
    expect(text).toContain('▸ Task tree of the batches');
    for (const batch of summary.batches.batches) {
      expect(text).toContain(`${batch.batchId} ${batch.label}`);
      for (const item of batch.items) {
        const release = item.payouts[0]!;
        expect(text).toContain(`${usdc(release.amount)}  → ${item.agentName} payout ${shortHex(release.to)} confirmed, tx ${shortHex(release.txHash)}`);
      }
    }
    expect(text).toContain('client paid');
    expect(text).not.toMatch(/not shown by this demo yet/);
    expect(text).not.toMatch(/✗/);
  });

  it('says in one line that the hosted agent runs against a loopback chat-completions stand-in', () => {
    expect(lines.filter((l) => /runs against a loopback chat-completions stand-in/.test(l))).toHaveLength(1);
    expect(summary.delegation.llm).toBe('stand-in');
  });

  it('sub-delegates: the hosted agent hires two children with delegate_task, they run, and their results come back in input order', () => {
    const d = summary.delegation;
    expect(d.ok).toBe(true);
    expect(d.parent).toMatchObject({ agentName: 'Launch Lead', status: 'completed', escrow: 2_000_000n });
    expect(d.children.map((c) => [c.agentName, c.status, c.escrow, c.ran])).toEqual([
      ['Field Scout', 'completed', 600_000n, true],
      ['Copy Wright', 'completed', 500_000n, true],
    ]);
    // the model was handed the children's results in the order it asked, and answered from them
    expect(d.toolAnswers).toHaveLength(1);
    const answer = d.toolAnswers[0]!;
    expect(answer.children.map((c) => [c.index, c.task_id, c.status])).toEqual(d.children.map((c, i) => [i, c.taskId, 'completed']));
    expect(answer.children[1]!.result?.content).toContain('SunBeam');
    expect(d.parent.resultText).toMatch(new RegExp(`\\[0\\] ${d.children[0]!.taskId} completed: .*\\[1\\] ${d.children[1]!.taskId} completed: .*SunBeam`));
  });

  it('moves the sub-delegation’s money exactly: carves and returns match the ledger and the status views, the client paid what the receipts say', () => {
    const d = summary.delegation;
    const m = d.money;
    expect(m.checks.filter((c) => !c.ok)).toEqual([]);
    // 0.6 + 0.5 carved from the parent's 2 USDC escrow (ledger carve = status delegation.totals.escrow = the tool's answer), nothing returned
    expect(m.carved).toEqual({ ledger: 1_100_000n, status: 1_100_000n, children: 1_100_000n, tool: 1_100_000n });
    expect(m.returned).toEqual({ ledger: 0n, status: 0n });
    expect(d.toolAnswers[0]!.escrow).toEqual({ carved: '1100000', returned: '0', remaining: '900000' });
    // each child released its escrow minus 2.5 % to its agent, on chain
    for (const c of d.children) {
      expect(c.payouts).toEqual([expect.objectContaining({ kind: 'release', amount: released(c.escrow), status: 'confirmed', txHash: expect.stringMatching(/^0x[0-9a-f]{64}$/) })]);
      expect([c.released, c.refunded]).toEqual([released(c.escrow), 0n]);
    }
    // the parent's own share (2 − 1.1) released to its agent minus 2.5 %: escrow = carved + own release + platform fee
    expect(m.parentOwn).toBe(900_000n);
    expect(d.parent.payouts).toEqual([expect.objectContaining({ kind: 'release', amount: released(900_000n), status: 'confirmed' })]);
    expect(m.parentEscrow).toBe(m.carved.ledger - m.returned.ledger + m.parentReleased + m.parentPlatformFee + m.parentRefunded);
    expect(m.escrowBalances).toEqual([0n, 0n, 0n]);
    // the client paid exactly its receipts: ONE escrow payment, the fees and the polls (children moved no new money)
    expect(m.actual).toBe(m.expected);
    expect(-m.client.change).toBe(m.actual);
    expect(m.receipts.total).toBe(m.actual);
    expect(m.actual).toBe(2_000_000n + m.fees.total);
    expect(m.fees.polls).toBe(BigInt(m.polls) * 1000n);
    expect(m.agentWallets.filter((w) => w.change !== 0n).map((w) => [w.agentName, w.change])).toEqual([
      ['Launch Lead', released(900_000n)],
      ['Copy Wright', released(500_000n)],
      ['Field Scout', released(600_000n)],
    ]);
  });

  it('prints the sub-delegation tree: the parent, its two children, carves, releases and their transactions', () => {
    const text = lines.join('\n');
    const d = summary.delegation;
    expect(text).toContain('▸ Task tree of the sub-delegation');
    expect(text).toContain(`${d.parent.taskId} ${d.parent.description}: Launch Lead, completed, escrow 2.000, carved 1.100 for 2 children, 0.000 returned`);
    for (const c of d.children) {
      expect(text).toContain(`${c.taskId} ${c.description}: ${c.agentName}, completed, cost ${usdc(c.escrow)}`);
      expect(text).toContain(`carve     ${usdc(c.escrow).padStart(8)}  escrow:${shortHex(d.parent.taskId)} → escrow:${shortHex(c.taskId)}`);
      const release = c.payouts[0]!;
      expect(text).toContain(`${usdc(release.amount)}  → ${c.agentName} payout ${shortHex(release.to)} confirmed, tx ${shortHex(release.txHash)}`);
    }
    const own = d.parent.payouts[0]!;
    expect(text).toContain(`${usdc(own.amount)}  → Launch Lead payout ${shortHex(own.to)} confirmed, tx ${shortHex(own.txHash)}`);
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
    // A configured LLM also runs the delegating agent: asked for delegate_task, it hires what its brief's requirements list.
    llm = await new LlmServer((req) => {
      if (!req.tools?.some((t) => t.function.name === 'delegate_task')) return 'Sunlight by day, glow all night.';
      if (req.messages.some((m) => m.role === 'tool')) return 'Launch brief from the research and the copy.';
      const requirements = /Requirements \(JSON\):\n([\s\S]*?)\n\nBudget:/.exec(String(req.messages[1]?.content))?.[1];
      const tasks = (JSON.parse(requirements ?? 'null') as { delegate_task?: { tasks: unknown[] } } | null)?.delegate_task?.tasks ?? [];
      return { tool_calls: [{ id: 'call_1', name: 'delegate_task', arguments: { tasks } }] };
    }).start();
    summary = await runDemo({ log: () => undefined, env: { LLM_BASE_URL: llm.baseUrl, LLM_API_KEY: 'sk-demo-test-key', LLM_MODEL: 'demo-model' } });
  }, 180_000);
  afterAll(() => llm.stop());

  it('registers the hosted agent and gives it a fourth subtask, paid like the others', () => {
    expect(summary.ok).toBe(true);
    expect(summary.hostedAgent.registered).toBe(true);
    expect(summary.tasks).toHaveLength(4);
    expect(summary.tasks[3]).toMatchObject({ agentName: 'Tagline Muse', status: 'completed', resultType: 'text', resultText: 'Sunlight by day, glow all night.' });
    expectMoneyAddsUp(summary, 4);
    expectBatchesAddUp(summary);
    const tagline = llm.requests.filter((r) => !r.tools);
    expect(tagline).toHaveLength(1);
    expect(tagline[0]).toMatchObject({ model: 'demo-model', authorization: 'Bearer sk-demo-test-key' });
    // the delegating agent ran on the configured LLM too, and hired its two children
    expect(summary.delegation.llm).toBe('configured');
    expect(summary.delegation.children.map((c) => [c.agentName, c.status])).toEqual([
      ['Field Scout', 'completed'],
      ['Copy Wright', 'completed'],
    ]);
    expect(summary.delegation.money.checks.filter((c) => !c.ok)).toEqual([]);
  });
});
