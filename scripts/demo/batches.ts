import type { Address } from 'viem';
import type { PrivateKeyAccount } from 'viem/accounts';
import type { PriceBook } from '../../src/payments/prices.js';
import { sleep, type Predecessor } from './agents.js';
import { DemoError, listReceipts, type DemoPayout, type Receipt, type WalletChange, type X402Request } from './client.js';
import { displayContent, shortHex, truncate, usdc, wrap } from './format.js';

/**
 * The batch part of the demo: many agents hired with ONE payment (POST /v1/batches, paid by the
 * stock @x402/fetch client with the sum of the escrows plus one batch fee), followed with
 * GET /v1/batches/{id} until they end, results collected in input order, then every payout
 * followed to its transaction and the money checked against the chain to the atomic unit.
 * Two batches: three independent tasks (fan-out), and research → write (item 1 depends_on [0],
 * the writer gets the research in `task.predecessors[]`).
 */

// ------------------------------------------------------------------------------ the batches

interface ItemPlan {
  label: string;
  description: string;
  /** agent_query (resolved by the service) or a demo agent hired by name (agent_id). */
  agent: { query: string } | { name: string };
  budget: bigint;
  dependsOn?: number[];
}

export interface BatchPlan {
  label: string;
  title: string;
  items: ItemPlan[];
}

/** Three independent tasks, one payment. */
export const FAN_OUT_BATCH: BatchPlan = {
  label: 'fan-out',
  title: 'three tasks, one payment',
  items: [
    { label: 'banner', description: 'Generate the banner image', agent: { query: 'image-generation' }, budget: 800_000n },
    { label: 'social', description: 'Generate the social image', agent: { query: 'image-generation' }, budget: 800_000n },
    { label: 'launch copy', description: 'Write the launch copy', agent: { query: 'copywriting' }, budget: 600_000n },
  ],
};

export const WRITER_NAME = 'Story Smith';

/** Research, then write using the research: item 1 depends on item 0. */
export const PIPELINE_BATCH: BatchPlan = {
  label: 'pipeline',
  title: 'research, then write using the research',
  items: [
    { label: 'research', description: 'Research who buys solar lanterns', agent: { query: 'research' }, budget: 700_000n },
    { label: 'write', description: 'Write the launch blurb from the research', agent: { name: WRITER_NAME }, budget: 600_000n, dependsOn: [0] },
  ],
};

// ------------------------------------------------------------------------------ the wire

interface BatchItemBody {
  index: number;
  task_id: string;
  agent_id: string;
  status: string;
  stage: string;
  escrow_status: string;
  depends_on: number[];
  progress_percent: number;
  attempts: number;
  escrow: string;
  released: string;
  refunded: string;
  failure: string | null;
  result: { type: string; content: unknown } | null;
  result_hash: string | null;
}

interface BatchBody {
  batch_id: string;
  status: string;
  policy: string;
  items: BatchItemBody[];
  totals: { escrow: string; fee: string; paid: string; released: string; refunded: string };
  failures: { index: number; reason: string; attempts: number; refunded: string }[];
  fund_tx_hash: string | null;
}

interface StatusBody {
  payouts: { kind: 'release' | 'refund'; to: Address; amount: string; status: string; tx_hash: string | null }[];
}

// ------------------------------------------------------------------------------ the summary

export interface DemoBatchItem {
  index: number;
  label: string;
  description: string;
  taskId: string;
  agentId: string;
  agentName: string;
  status: string;
  dependsOn: number[];
  attempts: number;
  escrow: bigint;
  released: bigint;
  refunded: bigint;
  failure: string | null;
  resultType: string | null;
  /** The result's content as one line of text (not truncated). */
  resultText: string | null;
  resultHash: string | null;
  /** What the agent's brief carried in `task.predecessors[]` (empty for an item without depends_on). */
  predecessors: Predecessor[];
  payouts: DemoPayout[];
}

export interface DemoBatch {
  label: string;
  title: string;
  batchId: string;
  status: string;
  policy: string;
  /** The one payment's transaction: it funded every item's escrow. */
  fundTxHash: string | null;
  escrow: bigint;
  fee: bigint;
  paid: bigint;
  released: bigint;
  refunded: bigint;
  /** Receipts of POST /v1/batches for this batch (one: the whole batch in one payment). */
  payments: { amount: bigint; txHash: string; kind: string }[];
  /** GET /v1/batches/{id} calls. */
  polls: number;
  items: DemoBatchItem[];
}

export interface BatchMoney {
  escrows: bigint;
  batchFees: bigint;
  /** Batch polls and the status polls that followed the payouts, each at the status price. */
  pollingFees: bigint;
  refunds: bigint;
  /** escrows + batchFees + pollingFees − refunds */
  expected: bigint;
  /** The client's balance change on chain. */
  actual: bigint;
  receipts: { count: number; total: bigint; batchPayments: number; polls: number };
  client: WalletChange;
  escrowWallet: WalletChange & { expected: bigint };
  feeWallet: WalletChange & { expected: bigint };
  agentWallets: (WalletChange & { agentName: string; expected: bigint })[];
  /** Every check by name; `ok` is all of them. */
  checks: { name: string; ok: boolean }[];
  ok: boolean;
}

export interface BatchDemoSummary {
  ok: boolean;
  batches: DemoBatch[];
  calls: { create: number; batchPolls: number; statusPolls: number };
  money: BatchMoney;
}

// ------------------------------------------------------------------------------ the run

export interface BatchDemoContext {
  baseUrl: string;
  payer: PrivateKeyAccount;
  request: X402Request;
  prices: PriceBook;
  balance(address: Address): Promise<bigint>;
  escrowWallet: Address;
  feeWallet: Address;
  /** The registered demo agents with their payout wallets. */
  agents: { id: string; name: string; payout: Address }[];
  /** The brief a demo agent received for a task (with its predecessors). */
  briefOf(taskId: string): { predecessors: Predecessor[] } | undefined;
  pollMs: number;
  signal?: AbortSignal;
  checkDeadline(what: string): void;
  /** Throws when a demo agent reported an error. */
  checkAgents(): void;
  log(line: string): void;
}

interface Followed {
  plan: BatchPlan;
  view: BatchBody;
  createTx: string | null;
  pollTxs: string[];
  polls: number;
  payouts: Map<string, StatusBody['payouts']>;
}

/** Runs both batches side by side, then checks the money. */
export async function runBatchDemo(ctx: BatchDemoContext, plans: BatchPlan[] = [FAN_OUT_BATCH, PIPELINE_BATCH]): Promise<BatchDemoSummary> {
  const { log } = ctx;
  const calls = { create: 0, batchPolls: 0, statusPolls: 0 };
  const knownReceipts = new Set((await listReceipts(ctx.baseUrl, ctx.payer)).map((r) => r.payment_id));
  const before = await walletBalances(ctx);

  log('');
  log(`▸ 5. Batches: each one paid with ONE payment, escrows + ${usdc(ctx.prices.create_batch)} batch fee (POST /v1/batches)`);
  const followed = await Promise.all(plans.map((plan) => createBatch(ctx, plan, calls)));
  for (const f of followed) logCreated(ctx, f);

  log('');
  log(`▸ 6. Follow the batches (GET /v1/batches/{id}, ${usdc(ctx.prices.batch_status)} each) every ${ctx.pollMs} ms until they end`);
  await followBatches(ctx, followed, calls);

  log('');
  log('▸ 7. Results in input order (from the last GET /v1/batches/{id})');
  for (const f of followed) logResults(ctx, f);

  log('');
  log(`▸ 8. Wait for every item's release or refund on chain (GET /v1/tasks/{id}/status, ${usdc(ctx.prices.task_status)} each)`);
  await followPayouts(ctx, followed, calls);

  const receipts = (await listReceipts(ctx.baseUrl, ctx.payer)).filter((r) => !knownReceipts.has(r.payment_id));
  const after = await walletBalances(ctx);
  const batches = followed.map((f) => summarize(ctx, f, receipts));
  const money = checkMoney(ctx, batches, calls, receipts, before, after);
  const ok = money.ok && batches.every((b) => b.status === 'completed' && b.payments.length === 1);
  return { ok, batches, calls, money };
}

function bodyOf(ctx: BatchDemoContext, plan: BatchPlan): object {
  return {
    policy: 'fail_fast',
    max_concurrency: 3,
    max_spend: String(plan.items.reduce((s, i) => s + i.budget, ctx.prices.create_batch)),
    items: plan.items.map((item) => ({
      ...('query' in item.agent ? { agent_query: { query: item.agent.query } } : { agent_id: agentIdOf(ctx, item.agent.name) }),
      description: item.description,
      budget: { amount: item.budget.toString(), currency: 'USDC', chain: 'base' },
      ...(item.dependsOn ? { depends_on: item.dependsOn } : {}),
    })),
  };
}

function agentIdOf(ctx: BatchDemoContext, name: string): string {
  const agent = ctx.agents.find((a) => a.name === name);
  if (!agent) throw new DemoError(`the demo agent ${name} is not registered`);
  return agent.id;
}

function nameOf(ctx: BatchDemoContext, agentId: string): string {
  return ctx.agents.find((a) => a.id === agentId)?.name ?? agentId;
}

async function createBatch(ctx: BatchDemoContext, plan: BatchPlan, calls: BatchDemoSummary['calls']): Promise<Followed> {
  ctx.checkDeadline('creating the batches');
  const created = await ctx.request<BatchBody>('/v1/batches', 'POST', bodyOf(ctx, plan));
  calls.create++;
  return { plan, view: created.body, createTx: created.txHash, pollTxs: [], polls: 0, payouts: new Map() };
}

/** The batch as created: its one payment, and each item's agent, task and held escrow. */
function logCreated(ctx: BatchDemoContext, f: Followed): void {
  const v = f.view;
  ctx.log(
    `  ${v.batch_id} ${f.plan.label} (${f.plan.title}): ${v.items.length} items, escrows ${usdc(BigInt(v.totals.escrow))} + fee ${usdc(BigInt(v.totals.fee))}` +
      ` = ${usdc(BigInt(v.totals.paid))} USDC in one payment, tx ${shortHex(f.createTx ?? v.fund_tx_hash)}`,
  );
  for (const item of v.items) {
    const p = f.plan.items[item.index]!;
    const how = 'query' in p.agent ? `agent_query "${p.agent.query}"` : 'agent_id';
    const after = item.depends_on.length ? `, depends_on [${item.depends_on.join(', ')}]` : '';
    ctx.log(`    #${item.index} ${p.description.padEnd(42)} ${how} → ${nameOf(ctx, item.agent_id).padEnd(12)} ${item.task_id} escrow ${usdc(BigInt(item.escrow))} ${item.escrow_status}${after}`);
  }
}

async function followBatches(ctx: BatchDemoContext, followed: Followed[], calls: BatchDemoSummary['calls']): Promise<void> {
  let round = 0;
  while (followed.some((f) => f.view.status === 'running')) {
    await sleep(ctx.pollMs, ctx.signal).catch(() => undefined);
    ctx.checkDeadline('waiting for the batches to end');
    ctx.checkAgents();
    round++;
    await Promise.all(
      followed
        .filter((f) => f.view.status === 'running')
        .map(async (f) => {
          const polled = await ctx.request<BatchBody>(`/v1/batches/${f.view.batch_id}`);
          calls.batchPolls++;
          f.polls++;
          if (polled.txHash) f.pollTxs.push(polled.txHash);
          f.view = polled.body;
        }),
    );
    const line = followed.map((f) => `${f.plan.label} ${f.view.status}: ${f.view.items.map((i) => itemState(f.plan, i)).join(', ')}`).join('  │  ');
    ctx.log(`  poll ${String(round).padStart(2)}  ${line}`);
  }
}

function itemState(plan: BatchPlan, item: BatchItemBody): string {
  const label = plan.items[item.index]?.label ?? `#${item.index}`;
  if (item.stage === 'done') return `${label} ${item.status}`;
  if (item.stage === 'running') return `${label} running ${item.progress_percent}%`;
  return `${label} ${item.stage}`;
}

function logResults(ctx: BatchDemoContext, f: Followed): void {
  ctx.log(`  ${f.view.batch_id} ${f.plan.label}: ${f.view.status}${f.view.failures.length ? `, ${f.view.failures.length} failure(s)` : ''}`);
  for (const item of f.view.items) {
    const p = f.plan.items[item.index]!;
    const head = `    #${item.index} ${p.label.padEnd(11)} ${nameOf(ctx, item.agent_id).padEnd(12)} `;
    if (!item.result) {
      ctx.log(`${head}${item.status}: ${item.failure ?? 'no result'}`);
    } else if (item.result.type === 'text' && typeof item.result.content === 'string') {
      // Text in full (the writer's use of the research is the point), wrapped under its heading.
      const [first, ...rest] = wrap(`[text] ${item.result.content}`, 100);
      ctx.log(`${head}${first}`);
      for (const line of rest) ctx.log(`${' '.repeat(head.length)}${line}`);
    } else {
      ctx.log(`${head}[${item.result.type}] ${truncate(displayContent(item.result), 100)}`);
    }
  }
  for (const failure of f.view.failures) {
    ctx.log(`    ! item ${failure.index} delivered nothing after ${failure.attempts} run(s): ${failure.reason}; refunded ${usdc(BigInt(failure.refunded))}`);
  }
}

/** Every item's payouts (release or refund) until each is confirmed on chain, with its tx hash. */
async function followPayouts(ctx: BatchDemoContext, followed: Followed[], calls: BatchDemoSummary['calls']): Promise<void> {
  const items = followed.flatMap((f) => f.view.items.map((item) => ({ f, item })));
  const settled = ({ f, item }: (typeof items)[number]) => {
    const payouts = f.payouts.get(item.task_id) ?? [];
    return payouts.length > 0 && payouts.every((p) => p.status === 'confirmed');
  };
  let round = 0;
  while (!items.every(settled)) {
    const failed = items.flatMap(({ f, item }) => f.payouts.get(item.task_id) ?? []).find((p) => p.status === 'failed');
    if (failed) throw new DemoError(`a ${failed.kind} to ${failed.to} failed on chain`);
    if (round > 0) await sleep(ctx.pollMs, ctx.signal).catch(() => undefined);
    ctx.checkDeadline('waiting for the batch payouts to confirm');
    round++;
    await Promise.all(
      items
        .filter((i) => !settled(i))
        .map(async ({ f, item }) => {
          const s = await ctx.request<StatusBody>(`/v1/tasks/${item.task_id}/status`);
          calls.statusPolls++;
          if (s.txHash) f.pollTxs.push(s.txHash);
          f.payouts.set(item.task_id, s.body.payouts);
        }),
    );
    ctx.log(`  round ${round}: ${items.filter(settled).length}/${items.length} items' payouts confirmed`);
  }
}

function summarize(ctx: BatchDemoContext, f: Followed, receipts: Receipt[]): DemoBatch {
  const v = f.view;
  const ours = new Set([v.fund_tx_hash, f.createTx].filter((h): h is string => h !== null).map((h) => h.toLowerCase()));
  const payments = receipts.filter((r) => r.endpoint === 'POST /v1/batches' && ours.has(r.tx_hash.toLowerCase()));
  return {
    label: f.plan.label,
    title: f.plan.title,
    batchId: v.batch_id,
    status: v.status,
    policy: v.policy,
    fundTxHash: v.fund_tx_hash,
    escrow: BigInt(v.totals.escrow),
    fee: BigInt(v.totals.fee),
    paid: BigInt(v.totals.paid),
    released: BigInt(v.totals.released),
    refunded: BigInt(v.totals.refunded),
    payments: payments.map((r) => ({ amount: BigInt(r.amount), txHash: r.tx_hash, kind: r.kind })),
    polls: f.polls,
    items: v.items.map((item) => ({
      index: item.index,
      label: f.plan.items[item.index]?.label ?? `#${item.index}`,
      description: f.plan.items[item.index]?.description ?? '',
      taskId: item.task_id,
      agentId: item.agent_id,
      agentName: nameOf(ctx, item.agent_id),
      status: item.status,
      dependsOn: item.depends_on,
      attempts: item.attempts,
      escrow: BigInt(item.escrow),
      released: BigInt(item.released),
      refunded: BigInt(item.refunded),
      failure: item.failure,
      resultType: item.result?.type ?? null,
      resultText: item.result ? displayContent(item.result) : null,
      resultHash: item.result_hash,
      predecessors: ctx.briefOf(item.task_id)?.predecessors ?? [],
      payouts: (f.payouts.get(item.task_id) ?? []).map((p) => ({ kind: p.kind, to: p.to, amount: BigInt(p.amount), status: p.status, txHash: p.tx_hash })),
    })),
  };
}

// ------------------------------------------------------------------------------ the money

interface Balances {
  client: bigint;
  escrow: bigint;
  fee: bigint;
  agents: Map<string, bigint>;
}

async function walletBalances(ctx: BatchDemoContext): Promise<Balances> {
  const agents = new Map<string, bigint>();
  for (const a of ctx.agents) agents.set(a.id, await ctx.balance(a.payout));
  return { client: await ctx.balance(ctx.payer.address), escrow: await ctx.balance(ctx.escrowWallet), fee: await ctx.balance(ctx.feeWallet), agents };
}

/**
 * The client paid exactly escrows + batch fees + polls (less refunds), and the chain agrees
 * everywhere: the escrow wallet kept the fees and the platform's share, the fee wallet got the
 * polls, each agent's payout wallet got its confirmed releases.
 */
function checkMoney(
  ctx: BatchDemoContext,
  batches: DemoBatch[],
  calls: BatchDemoSummary['calls'],
  receipts: Receipt[],
  before: Balances,
  after: Balances,
): BatchMoney {
  const sum = (values: bigint[]) => values.reduce((s, v) => s + v, 0n);
  const items = batches.flatMap((b) => b.items);
  const payouts = items.flatMap((i) => i.payouts);
  const escrows = sum(batches.map((b) => b.escrow));
  const batchFees = sum(batches.map((b) => b.fee));
  const polls = calls.batchPolls + calls.statusPolls;
  const pollingFees = BigInt(calls.batchPolls) * ctx.prices.batch_status + BigInt(calls.statusPolls) * ctx.prices.task_status;
  const released = sum(payouts.filter((p) => p.kind === 'release').map((p) => p.amount));
  const refunds = sum(payouts.filter((p) => p.kind === 'refund').map((p) => p.amount));
  const expected = escrows + batchFees + pollingFees - refunds;
  const actual = before.client - after.client;
  const receiptsTotal = sum(receipts.map((r) => BigInt(r.amount)));
  const batchPayments = receipts.filter((r) => r.endpoint === 'POST /v1/batches');
  const pollReceipts = receipts.filter((r) => r.kind === 'call_fee');
  const change = (label: string, address: Address, from: bigint, to: bigint): WalletChange => ({ label, address, before: from, after: to, change: to - from });

  const escrowWallet = { ...change('escrow wallet (anvil 1)', ctx.escrowWallet, before.escrow, after.escrow), expected: escrows + batchFees - released - refunds };
  const feeWallet = { ...change('fee wallet (anvil 3)', ctx.feeWallet, before.fee, after.fee), expected: pollingFees };
  const agentWallets = ctx.agents.map((a) => ({
    ...change(`${a.name} payout`, a.payout, before.agents.get(a.id)!, after.agents.get(a.id)!),
    agentName: a.name,
    expected: sum(items.filter((i) => i.agentId === a.id).flatMap((i) => i.payouts.filter((p) => p.kind === 'release').map((p) => p.amount))),
  }));
  const checks = [
    { name: 'client paid = escrows + batch fees + polls − refunds (on chain)', ok: actual === expected },
    { name: 'one payment per batch, carrying its escrows + fee', ok: batches.every((b) => b.payments.length === 1 && b.payments[0]!.amount === b.paid && b.paid === b.escrow + b.fee) },
    { name: 'receipts = escrows + batch fees + polls', ok: receiptsTotal === escrows + batchFees + pollingFees && pollReceipts.length === polls },
    { name: 'escrow wallet = payments − releases − refunds', ok: escrowWallet.change === escrowWallet.expected },
    { name: 'fee wallet = polls', ok: feeWallet.change === feeWallet.expected },
    { name: 'each agent got its confirmed releases', ok: agentWallets.every((w) => w.change === w.expected) },
    { name: 'batch totals = confirmed payouts', ok: sum(batches.map((b) => b.released)) === released && sum(batches.map((b) => b.refunded)) === refunds },
  ];
  return {
    escrows,
    batchFees,
    pollingFees,
    refunds,
    expected,
    actual,
    receipts: { count: receipts.length, total: receiptsTotal, batchPayments: batchPayments.length, polls: pollReceipts.length },
    client: change('client (anvil 4)', ctx.payer.address, before.client, after.client),
    escrowWallet,
    feeWallet,
    agentWallets,
    checks,
    ok: checks.every((c) => c.ok),
  };
}
