import { and, eq, inArray } from 'drizzle-orm';
import type { Address } from 'viem';
import type { PrivateKeyAccount } from 'viem/accounts';
import type { Db } from '../../src/db/client.js';
import { ledgerEntries } from '../../src/db/schema.js';
import { escrowAccount } from '../../src/ledger/accounts.js';
import { accountBalance } from '../../src/ledger/ledger.js';
import type { PriceBook } from '../../src/payments/prices.js';
import { sleep } from './agents.js';
import { DemoError, listReceipts, type DemoPayout, type WalletChange, type X402Request } from './client.js';
import type { DelegateTaskItem, DelegateToolAnswer, LlmStandIn } from './llm-stand-in.js';
import { displayContent, shortHex, truncate, usdc, wrap } from './format.js';

/**
 * The sub-delegation part of the demo: the client hires ONE hosted LLM agent whose owner enabled
 * the `delegation` toolset (POST /v1/tasks, then /fund, paid with @x402/fetch). Its model calls
 * `delegate_task` to hire two children through the service, each child's escrow carved from the
 * parent's (a ledger movement, nothing on chain); it gets their results in input order and
 * answers. The client follows the parent's status (its `delegation` lists the children), waits
 * for every payout on chain and checks the tree's money against the ledger, the status views and
 * the chain, to the atomic unit.
 */

export const LEAD_NAME = 'Launch Lead';
export const PARENT_BUDGET = 2_000_000n;

/** The two children the coordinator hires (agents named; their ids are filled in at run time). */
export const CHILD_PLAN: readonly { agentName: string; description: string; budget: bigint }[] = [
  { agentName: 'Field Scout', description: 'Research who buys solar lanterns and what they care about', budget: 600_000n },
  { agentName: 'Copy Wright', description: 'Write the launch copy for the SunBeam solar lantern', budget: 500_000n },
];

export const PARENT_DESCRIPTION =
  'Plan the SunBeam solar lantern launch. Call delegate_task once with exactly the two tasks listed below ' +
  '(research, then copy), then answer with a short launch brief combining their results in that order.';

interface PayoutBody {
  kind: 'release' | 'refund';
  to: Address;
  amount: string;
  status: string;
  tx_hash: string | null;
}

interface ChildView {
  task_id: string;
  agent_id: string;
  batch_id: string;
  index: number;
  status: string;
  escrow_status: string;
  escrow: string;
  released: string;
  refunded: string;
  failure: string | null;
}

interface StatusBody {
  task_id: string;
  status: string;
  stage: string;
  escrow_status: string;
  payouts: PayoutBody[];
  parent_task_id?: string;
  delegation?: {
    children: ChildView[];
    totals: { children: number; running: number; escrow: string; released: string; refunded: string; spent: string; usage: Record<string, unknown> };
  };
}

export interface DelegationNode {
  taskId: string;
  agentId: string;
  agentName: string;
  description: string;
  status: string;
  escrowStatus: string;
  escrow: bigint;
  /** Released to its agent (status view). */
  released: bigint;
  /** Refunded (a child: returned to the parent's escrow, `carve_return`). */
  refunded: bigint;
  payouts: DemoPayout[];
  /** Whether the child's agent received its brief (it ran). */
  ran: boolean;
}

export interface DelegationMoney {
  parentEscrow: bigint;
  /** Σ children's escrows, as each view reads it: ledger `carve` movements, the parent's status totals, the tool's answer. */
  carved: { ledger: bigint; status: bigint; children: bigint; tool: bigint | null };
  /** Back in the parent's escrow from children that did not spend it: ledger `carve_return`, status totals. */
  returned: { ledger: bigint; status: bigint };
  /** What the parent's escrow paid out itself: parentEscrow − carved + returned. */
  parentOwn: bigint;
  parentReleased: bigint;
  parentRefunded: bigint;
  /** parentOwn − parentReleased − parentRefunded: the platform fee of the parent's release, kept in the escrow wallet. */
  parentPlatformFee: bigint;
  /** Ledger balances of escrow:<task> at the end (parent, then children): all zero. */
  escrowBalances: bigint[];
  fees: { create: bigint; fund: bigint; polls: bigint; result: bigint; total: bigint };
  polls: number;
  expected: bigint;
  actual: bigint;
  receipts: { count: number; total: bigint };
  client: WalletChange;
  escrowWallet: WalletChange & { expected: bigint };
  feeWallet: WalletChange & { expected: bigint };
  agentWallets: (WalletChange & { agentName: string; expected: bigint })[];
  checks: { name: string; ok: boolean }[];
  ok: boolean;
}

export interface DelegationSummary {
  ok: boolean;
  /** Where the coordinator's model runs: the loopback stand-in, or the configured LLM. */
  llm: 'stand-in' | 'configured';
  parent: DelegationNode & { fundTxHash: string | null; resultText: string | null };
  children: DelegationNode[];
  /** The delegate_task answers the model was handed (the stand-in sees them; empty with a real LLM). */
  toolAnswers: DelegateToolAnswer[];
  money: DelegationMoney;
}

export interface DelegationDemoContext {
  baseUrl: string;
  payer: PrivateKeyAccount;
  request: X402Request;
  prices: PriceBook;
  db: Db;
  balance(address: Address): Promise<bigint>;
  escrowWallet: Address;
  feeWallet: Address;
  /** The coordinator (hosted, delegation enabled) and the agents it may hire, with their payout wallets. */
  lead: { id: string; name: string; payout: Address };
  agents: { id: string; name: string; payout: Address }[];
  standIn: LlmStandIn | null;
  /** Whether a demo agent received the brief of this task. */
  ran(taskId: string): boolean;
  pollMs: number;
  signal?: AbortSignal;
  checkDeadline(what: string): void;
  checkAgents(): void;
  log(line: string): void;
}

const ACTIVE = ['created', 'funded', 'in_progress'];

export function childTasks(agents: DelegationDemoContext['agents']): DelegateTaskItem[] {
  return CHILD_PLAN.map((c) => {
    const agent = agents.find((a) => a.name === c.agentName);
    if (!agent) throw new DemoError(`the demo agent ${c.agentName} is not registered`);
    return { agent_id: agent.id, description: c.description, budget: c.budget.toString() };
  });
}

export async function runDelegationDemo(ctx: DelegationDemoContext): Promise<DelegationSummary> {
  const { log, prices } = ctx;
  const tasks = childTasks(ctx.agents);
  if (ctx.standIn) ctx.standIn.children = tasks;
  const knownReceipts = new Set((await listReceipts(ctx.baseUrl, ctx.payer)).map((r) => r.payment_id));
  const wallets = [ctx.lead, ...ctx.agents];
  const before = await balances(ctx, wallets);
  let polls = 0;
  const nameOf = (id: string) => wallets.find((a) => a.id === id)?.name ?? id;

  log('');
  log(`▸ 9. Sub-delegation: ${LEAD_NAME} (hosted LLM, toolsets ["delegation"]) gets one task and hires two children with delegate_task, paid from its escrow`);
  ctx.checkDeadline('starting the sub-delegation');
  const created = await ctx.request<{ task_id: string; status: string }>('/v1/tasks', 'POST', {
    agent_id: ctx.lead.id,
    description: PARENT_DESCRIPTION,
    requirements: { delegate_task: { tasks } },
    budget: { amount: PARENT_BUDGET.toString(), currency: 'USDC', chain: 'base' },
  });
  const parentId = created.body.task_id;
  const funded = await ctx.request<{ amount: string; fee: string; tx_hash: string; status: string }>(`/v1/tasks/${parentId}/fund`, 'POST', { amount: PARENT_BUDGET.toString() });
  log(`  ${parentId} → ${LEAD_NAME}, escrow ${usdc(BigInt(funded.body.amount))} + fee ${usdc(BigInt(funded.body.fee))} USDC, tx ${shortHex(funded.body.tx_hash)} → ${funded.body.status}`);
  for (const [i, t] of tasks.entries()) log(`    its model is to hire #${i} ${nameOf(t.agent_id)} for "${t.description}", budget ${usdc(BigInt(t.budget))}`);

  const status = async (id: string): Promise<StatusBody> => {
    const s = await ctx.request<StatusBody>(`/v1/tasks/${id}/status`);
    polls++;
    return s.body;
  };

  log('');
  log(`▸ 10. Follow the parent (GET /v1/tasks/{id}/status, ${usdc(prices.task_status)} each): its \`delegation\` lists the children`);
  let parent = await status(parentId);
  let round = 1;
  const describe = (s: StatusBody) =>
    `parent ${s.status}/${s.stage}` +
    (s.delegation ? `  │  ${s.delegation.children.map((c) => `#${c.index} ${nameOf(c.agent_id)} ${c.status}`).join('  │  ')}` : '  │  no children yet');
  log(`  poll ${String(round).padStart(2)}  ${describe(parent)}`);
  while (ACTIVE.includes(parent.status)) {
    await sleep(ctx.pollMs, ctx.signal).catch(() => undefined);
    ctx.checkDeadline('waiting for the delegating parent to end');
    ctx.checkAgents();
    parent = await status(parentId);
    round++;
    log(`  poll ${String(round).padStart(2)}  ${describe(parent)}`);
  }

  let resultText: string | null = null;
  let resultCalls = 0;
  if (parent.status === 'completed') {
    const r = await ctx.request<{ result: { type: string; content: unknown } }>(`/v1/tasks/${parentId}/result`);
    resultCalls++;
    resultText = displayContent(r.body.result);
    log('');
    log(`▸ 11. The parent's answer (GET /v1/tasks/{id}/result, ${usdc(prices.task_result)}), written from its children's results in input order`);
    for (const line of wrap(resultText, 110)) log(`    ${line}`);
  }

  // Every release or refund on chain: the parent's and each child's (a child's refund goes back to the parent's escrow: no transaction).
  log('');
  log(`▸ 12. Wait for the tree's releases and refunds on chain (GET /v1/tasks/{id}/status, ${usdc(prices.task_status)} each)`);
  const childIds = (parent.delegation?.children ?? []).map((c) => c.task_id);
  const views = new Map<string, StatusBody>();
  const settled = (s: StatusBody | undefined) => s !== undefined && !ACTIVE.includes(s.status) && s.payouts.every((p) => p.status === 'confirmed') && (s.escrow_status !== 'released' || s.payouts.length > 0);
  let settleRounds = 0;
  while (![parentId, ...childIds].every((id) => settled(views.get(id)))) {
    if (settleRounds > 0) await sleep(ctx.pollMs, ctx.signal).catch(() => undefined);
    ctx.checkDeadline('waiting for the tree’s payouts to confirm');
    settleRounds++;
    await Promise.all([parentId, ...childIds].filter((id) => !settled(views.get(id))).map(async (id) => views.set(id, await status(id))));
    const failed = [...views.values()].flatMap((v) => v.payouts).find((p) => p.status === 'failed');
    if (failed) throw new DemoError(`a ${failed.kind} to ${failed.to} failed on chain`);
    const all = [...views.values()].flatMap((v) => v.payouts);
    log(`  round ${settleRounds}: ${all.filter((p) => p.status === 'confirmed').length}/${all.length} payouts confirmed`);
  }
  parent = views.get(parentId)!;

  // The ledger's view of the carves: escrow:<parent> → escrow:<child>, and back.
  const movements = childIds.length
    ? await ctx.db
        .select()
        .from(ledgerEntries)
        .where(and(inArray(ledgerEntries.kind, ['carve', 'carve_return']), inArray(ledgerEntries.taskId, childIds), eq(ledgerEntries.account, escrowAccount(parentId))))
    : [];
  const ledgerCarved = -movements.filter((m) => m.kind === 'carve').reduce((s, m) => s + m.amount, 0n);
  const ledgerReturned = movements.filter((m) => m.kind === 'carve_return').reduce((s, m) => s + m.amount, 0n);
  const escrowBalances = await Promise.all([parentId, ...childIds].map((id) => accountBalance(ctx.db, escrowAccount(id))));

  const receipts = (await listReceipts(ctx.baseUrl, ctx.payer)).filter((r) => !knownReceipts.has(r.payment_id));
  const after = await balances(ctx, wallets);

  const payoutsOf = (s: StatusBody): DemoPayout[] => s.payouts.map((p) => ({ kind: p.kind, to: p.to, amount: BigInt(p.amount), status: p.status, txHash: p.tx_hash }));
  const sumKind = (ps: DemoPayout[], kind: 'release' | 'refund') => ps.filter((p) => p.kind === kind).reduce((s, p) => s + p.amount, 0n);
  const children: DelegationNode[] = (parent.delegation?.children ?? []).map((c) => ({
    taskId: c.task_id,
    agentId: c.agent_id,
    agentName: nameOf(c.agent_id),
    description: CHILD_PLAN[c.index]?.description ?? `child #${c.index}`,
    status: c.status,
    escrowStatus: c.escrow_status,
    escrow: BigInt(c.escrow),
    released: BigInt(c.released),
    refunded: BigInt(c.refunded),
    payouts: payoutsOf(views.get(c.task_id)!),
    ran: ctx.ran(c.task_id),
  }));
  const parentPayouts = payoutsOf(parent);
  const parentNode = {
    taskId: parentId,
    agentId: ctx.lead.id,
    agentName: ctx.lead.name,
    description: 'Plan the SunBeam solar lantern launch (delegates research and copy)',
    status: parent.status,
    escrowStatus: parent.escrow_status,
    escrow: BigInt(funded.body.amount),
    released: sumKind(parentPayouts, 'release'),
    refunded: sumKind(parentPayouts, 'refund'),
    payouts: parentPayouts,
    ran: true,
    fundTxHash: funded.body.tx_hash,
    resultText,
  };

  const sum = (values: bigint[]) => values.reduce((s, v) => s + v, 0n);
  const toolAnswers = ctx.standIn?.toolAnswers ?? [];
  const carved = {
    ledger: ledgerCarved,
    status: BigInt(parent.delegation?.totals.escrow ?? '0'),
    children: sum(children.map((c) => c.escrow)),
    tool: toolAnswers.length ? sum(toolAnswers.map((a) => BigInt(a.escrow.carved))) : null,
  };
  const returned = { ledger: ledgerReturned, status: BigInt(parent.delegation?.totals.refunded ?? '0') };
  const parentOwn = parentNode.escrow - carved.ledger + returned.ledger;
  const fees = {
    create: prices.create_task,
    fund: BigInt(funded.body.fee),
    polls: BigInt(polls) * prices.task_status,
    result: BigInt(resultCalls) * prices.task_result,
    total: 0n,
  };
  fees.total = fees.create + fees.fund + fees.polls + fees.result;
  const allPayouts = [...parentPayouts, ...children.flatMap((c) => c.payouts)];
  const clientRefunds = sumKind(allPayouts, 'refund');
  const releases = sumKind(allPayouts, 'release');
  const expected = parentNode.escrow + fees.total - clientRefunds;
  const actual = before.client - after.client;
  const receiptsTotal = sum(receipts.map((r) => BigInt(r.amount)));
  const change = (label: string, address: Address, from: bigint, to: bigint): WalletChange => ({ label, address, before: from, after: to, change: to - from });
  const escrowWallet = { ...change('escrow wallet (anvil 1)', ctx.escrowWallet, before.escrow, after.escrow), expected: parentNode.escrow + fees.fund - releases - clientRefunds };
  const feeWallet = { ...change('fee wallet (anvil 3)', ctx.feeWallet, before.fee, after.fee), expected: fees.create + fees.polls + fees.result };
  const agentWallets = wallets.map((a) => ({
    ...change(`${a.name} payout`, a.payout, before.agents.get(a.id)!, after.agents.get(a.id)!),
    agentName: a.name,
    expected: a.id === ctx.lead.id ? parentNode.released : sum(children.filter((c) => c.agentId === a.id).map((c) => sumKind(c.payouts, 'release'))),
  }));
  const parentPlatformFee = parentOwn - parentNode.released - parentNode.refunded;
  const checks = [
    { name: 'two children hired, in the order asked, and both ran', ok: children.length === CHILD_PLAN.length && children.every((c, i) => c.agentId === tasks[i]!.agent_id && c.ran) },
    { name: 'carved = children’s escrows (ledger carve = status totals = tool answer)', ok: carved.ledger === carved.children && carved.status === carved.children && (carved.tool === null || carved.tool === carved.children) },
    { name: 'returned to the parent = children’s refunds (ledger carve_return = status totals)', ok: returned.ledger === sum(children.map((c) => c.refunded)) && returned.status === returned.ledger },
    { name: 'parent escrow = carved − returned + its own release, platform fee and refund', ok: parentNode.escrow === carved.ledger - returned.ledger + parentNode.released + parentNode.refunded + parentPlatformFee && parentPlatformFee >= 0n && parentPlatformFee <= parentOwn / 10n },
    { name: 'each child: escrow = released + platform fee, or returned whole', ok: children.every((c) => (c.refunded === c.escrow && c.released === 0n) || (c.refunded === 0n && c.released === sumKind(c.payouts, 'release') && c.released <= c.escrow)) },
    { name: 'every escrow of the tree ends at zero in the ledger', ok: escrowBalances.every((b) => b === 0n) },
    { name: 'client paid = escrow + fees + polls − refunds (on chain)', ok: actual === expected },
    { name: 'receipts = escrow + fees + polls (one escrow payment: the children moved no new money)', ok: receiptsTotal === parentNode.escrow + fees.total && receipts.filter((r) => r.kind === 'escrow_funding').length === 1 },
    { name: 'escrow wallet = payment − releases − refunds', ok: escrowWallet.change === escrowWallet.expected },
    { name: 'fee wallet = call fees', ok: feeWallet.change === feeWallet.expected },
    { name: 'each agent got its confirmed releases', ok: agentWallets.every((w) => w.change === w.expected) },
  ];
  const money: DelegationMoney = {
    parentEscrow: parentNode.escrow,
    carved,
    returned,
    parentOwn,
    parentReleased: parentNode.released,
    parentRefunded: parentNode.refunded,
    parentPlatformFee,
    escrowBalances,
    fees,
    polls,
    expected,
    actual,
    receipts: { count: receipts.length, total: receiptsTotal },
    client: change('client (anvil 4)', ctx.payer.address, before.client, after.client),
    escrowWallet,
    feeWallet,
    agentWallets,
    checks,
    ok: checks.every((c) => c.ok),
  };
  const ok = money.ok && parentNode.status === 'completed' && children.every((c) => c.status === 'completed');
  return { ok, llm: ctx.standIn ? 'stand-in' : 'configured', parent: parentNode, children, toolAnswers, money };
}

interface Balances {
  client: bigint;
  escrow: bigint;
  fee: bigint;
  agents: Map<string, bigint>;
}

async function balances(ctx: DelegationDemoContext, agents: { id: string; payout: Address }[]): Promise<Balances> {
  const map = new Map<string, bigint>();
  for (const a of agents) map.set(a.id, await ctx.balance(a.payout));
  return { client: await ctx.balance(ctx.payer.address), escrow: await ctx.balance(ctx.escrowWallet), fee: await ctx.balance(ctx.feeWallet), agents: map };
}

// ------------------------------------------------------------------------------ the printout

/** The tree: the parent, its two children, each with status, escrow carved, released/returned and on-chain movements. */
export function printDelegationReport(s: DelegationSummary, log: (line: string) => void): void {
  const m = s.money;
  const mark = (ok: boolean) => (ok ? '✓' : '✗');
  const p = s.parent;
  log('');
  log('▸ Task tree of the sub-delegation: status, escrow carved, released/returned and on-chain movements');
  log(`  ${p.taskId} ${p.description}: ${p.agentName}, ${p.status}, escrow ${usdc(p.escrow)}, carved ${usdc(m.carved.ledger)} for ${s.children.length} children, ${usdc(m.returned.ledger)} returned`);
  log(`  │   escrow    ${usdc(p.escrow).padStart(8)}  client → escrow wallet, tx ${shortHex(p.fundTxHash)}`);
  s.children.forEach((c, i) => {
    const [branch, stem] = i === s.children.length - 1 ? ['└─', '   '] : ['├─', '│  '];
    log(`  ├─${branch} #${i} ${c.taskId} ${c.description}: ${c.agentName}, ${c.status}, cost ${usdc(c.escrow - c.refunded)}`);
    log(`  │ ${stem}   carve     ${usdc(c.escrow).padStart(8)}  escrow:${shortHex(p.taskId)} → escrow:${shortHex(c.taskId)} (ledger only, nothing moves on chain)`);
    for (const pay of c.payouts) {
      const keeps = pay.kind === 'release' && c.escrow > pay.amount ? ` (platform fee ${usdc(c.escrow - pay.amount)} stays in escrow)` : '';
      log(`  │ ${stem}   ${pay.kind.padEnd(9)} ${usdc(pay.amount).padStart(8)}  → ${pay.kind === 'release' ? `${c.agentName} payout` : 'client'} ${shortHex(pay.to)} ${pay.status}, tx ${shortHex(pay.txHash)}${keeps}`);
    }
    if (c.refunded > 0n && c.payouts.every((x) => x.kind !== 'refund')) log(`  │ ${stem}   returned  ${usdc(c.refunded).padStart(8)}  → escrow:${shortHex(p.taskId)} (carve_return, nothing on chain)`);
  });
  log(`  └─ own share ${usdc(m.parentOwn).padStart(8)}  what the children did not take (escrow − carved + returned)`);
  for (const pay of p.payouts) {
    const keeps = pay.kind === 'release' && m.parentPlatformFee > 0n ? ` (platform fee ${usdc(m.parentPlatformFee)} stays in escrow)` : '';
    log(`      ${pay.kind.padEnd(9)} ${usdc(pay.amount).padStart(8)}  → ${pay.kind === 'release' ? `${p.agentName} payout` : 'client'} ${shortHex(pay.to)} ${pay.status}, tx ${shortHex(pay.txHash)}${keeps}`);
  }
  if (p.payouts.length === 0) log('      (no release or refund)');
  if (s.toolAnswers.length > 0) {
    const a = s.toolAnswers[0]!;
    log(`  delegate_task answered the model: ${a.children.map((c) => `#${c.index} ${c.status} (${truncate(c.result ? displayContent(c.result) : (c.failure ?? '—'), 28)})`).join(', ')}; escrow carved ${usdc(BigInt(a.escrow.carved))}, remaining ${usdc(BigInt(a.escrow.remaining))}`);
  }

  log('');
  log('  Money of the sub-delegation (the children were paid from the parent’s escrow: no new payment)');
  log(`    parent escrow      ${usdc(m.parentEscrow).padStart(10)}  = carved ${usdc(m.carved.ledger)} − returned ${usdc(m.returned.ledger)} + own release ${usdc(m.parentReleased)} + platform fee ${usdc(m.parentPlatformFee)} + refund ${usdc(m.parentRefunded)}`);
  log(`    carved             ${usdc(m.carved.ledger).padStart(10)}  ledger carve; status delegation.totals.escrow ${usdc(m.carved.status)}${m.carved.tool !== null ? `; tool answer ${usdc(m.carved.tool)}` : ''}`);
  log(`    fees               ${usdc(m.fees.create + m.fees.fund + m.fees.result).padStart(10)}  (create, funding, result)`);
  log(`    polls              ${usdc(m.fees.polls).padStart(10)}  (${m.polls} status polls)`);
  log(`    expected total     ${usdc(m.expected).padStart(10)}`);
  log(`    client paid        ${usdc(m.actual).padStart(10)}  (balance change on chain) ${m.actual === m.expected ? '✓ matches' : '✗ DOES NOT MATCH'}`);
  log(`    receipts           ${usdc(m.receipts.total).padStart(10)}  (${m.receipts.count} receipts, GET /v1/receipts)`);
  for (const c of m.checks) log(`    ${mark(c.ok)} ${c.name}`);
}
