import { x402Client } from '@x402/core/client';
import { registerExactEvmScheme } from '@x402/evm/exact/client';
import { decodePaymentResponseHeader, wrapFetchWithPayment } from '@x402/fetch';
import type { Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';
import { usdcBalance } from '../../src/chain/dev/devchain.js';
import { resolveWallets } from '../../src/chain/wallets.js';
import { DemoAgent, describeError, fieldScoutWork, sleep, storySmithWork, type AgentResult, type Brief } from './agents.js';
import { printBatchReport } from './batch-report.js';
import { runBatchDemo, WRITER_NAME, type BatchDemoSummary } from './batches.js';
import { DemoError, listReceipts, type DemoPayout, type WalletChange, type X402Request } from './client.js';
import { LEAD_NAME, printDelegationReport, runDelegationDemo, type DelegationSummary } from './delegation.js';
import { delta, displayContent, shortHex, table, truncate, usdc } from './format.js';
import { LlmStandIn } from './llm-stand-in.js';
import { startEmbeddedService, type EmbeddedService } from './service.js';

export { DemoError, type DemoPayout, type WalletChange };

/**
 * The batch-delegation pattern (fan out subtasks to agents in parallel, fund every escrow, poll
 * until all complete, collect the results), played end to end against the embedded service:
 * real x402 payments with the stock `@x402/fetch` client, escrows on an anvil chain, agents run
 * by the dispatcher, payouts confirmed by the settlement worker, balances read on chain. Then the
 * same with the batch resource (batches.ts): three tasks paid with one payment, and a two-step
 * research → write dependency. Last, sub-delegation (delegation.ts): a hosted LLM agent hires two
 * children with delegate_task, paid from its own escrow.
 */

export interface DemoOptions {
  /** Where the demo's lines go (default: console.log). */
  log?: (line: string) => void;
  /** Where the hosted LLM settings are read from (default: process.env). Nothing else is read. */
  env?: Record<string, string | undefined>;
  /** Pause between poll rounds (default 500 ms). */
  pollIntervalMs?: number;
  /** The demo gives up (and cleans up) after this long (default 110 s). */
  timeoutMs?: number;
  /** Aborting stops the demo at its next step (it still cleans up). */
  signal?: AbortSignal;
}

export interface DemoTask {
  label: string;
  description: string;
  query: string;
  taskId: string;
  agentId: string;
  agentName: string;
  status: string;
  stage: string;
  progressPercent: number;
  resultType: string | null;
  /** The result's content as one line of text (not truncated). */
  resultText: string | null;
  resultHash: string | null;
  /** Escrow locked for the task. */
  escrow: bigint;
  /** x402 fees the client paid for this task: its search, creation, funding fee, polls and result. */
  fees: bigint;
  /** Escrow refunded to the client (failed or cancelled tasks). */
  refunded: bigint;
  payouts: DemoPayout[];
}

export interface DemoSummary {
  ok: boolean;
  baseUrl: string;
  tasks: DemoTask[];
  hostedAgent: { registered: boolean; message: string };
  /** Paid calls the client made, by operation. */
  calls: { search: number; create: number; fund: number; status: number; result: number };
  /** GET /status calls (the poll loop and the wait for payouts). */
  polls: number;
  totalEscrow: bigint;
  totalRefunded: bigint;
  /** Per-call fees (to the fee wallet). */
  callFees: bigint;
  /** Funding fees (to the escrow wallet with the escrow). */
  fundingFees: bigint;
  /** callFees + fundingFees, from the client's receipts. */
  totalFees: bigint;
  receipts: { count: number; total: bigint; unattributed: bigint };
  budget: {
    escrows: bigint;
    refunds: bigint;
    fixedFees: bigint;
    pollingFees: bigint;
    expected: bigint;
    actual: bigint;
    ok: boolean;
  };
  client: WalletChange;
  agentWallets: (WalletChange & { agentName: string; tasks: number })[];
  escrowWallet: WalletChange;
  feeWallet: WalletChange;
  /** The batch part: POST /v1/batches with one payment each, the task tree and its money check. */
  batches: BatchDemoSummary;
  /** The sub-delegation part: a hosted agent hiring two children with delegate_task, its tree and money check. */
  delegation: DelegationSummary;
  /** The one line saying where the delegating agent's model runs (the loopback stand-in without a real LLM). */
  delegationLlm: string;
  durationMs: number;
}

const BUDGET = '1000000';
const BASE_RATE = '500000';

interface Subtask {
  label: string;
  description: string;
  agent_query: string;
}

/** The seed's three subtasks. */
export const SEED_SUBTASKS: readonly Subtask[] = [
  { label: 'image A', description: 'Generate image A', agent_query: 'image-generation' },
  { label: 'image B', description: 'Generate image B', agent_query: 'image-generation' },
  { label: 'copy', description: 'Write copy', agent_query: 'copywriting' },
];
const HOSTED_SUBTASK: Subtask = { label: 'tagline', description: 'Write a one-line tagline for a solar lantern', agent_query: 'tagline-writing' };

// --------------------------------------------------------------------------- hosted LLM agent

type HostedSettings =
  | { enabled: true; baseUrl: string; apiKey: string | undefined; model: string; source: string }
  | { enabled: false; message: string };

/** A hosted LLM agent only when the environment names a provider (LLM_BASE_URL / LLM_API_KEY, or OPENAI_API_KEY). */
export function hostedLlmSettings(env: Record<string, string | undefined>): HostedSettings {
  const value = (name: string) => (env[name] && env[name]!.trim() !== '' ? env[name]!.trim() : undefined);
  const baseUrl = value('LLM_BASE_URL');
  const apiKey = value('LLM_API_KEY') ?? value('OPENAI_API_KEY');
  if (!baseUrl && !apiKey) {
    return {
      enabled: false,
      message: 'Hosted LLM agent skipped: neither LLM_BASE_URL/LLM_API_KEY nor OPENAI_API_KEY is set (set them to add a hosted_llm agent and a fourth subtask).',
    };
  }
  const source = value('LLM_BASE_URL') || value('LLM_API_KEY') ? 'LLM_BASE_URL/LLM_API_KEY' : 'OPENAI_API_KEY';
  return { enabled: true, baseUrl: baseUrl ?? 'https://api.openai.com/v1', apiKey, model: value('LLM_MODEL') ?? 'gpt-4o-mini', source };
}

// ------------------------------------------------------------------------------ demo agents

function svgDataUrl(text: string, hue: number): string {
  const svg =
    `<svg xmlns="http://www.w3.org/2000/svg" width="320" height="180">` +
    `<rect width="320" height="180" fill="hsl(${hue},70%,45%)"/>` +
    `<text x="160" y="96" font-family="sans-serif" font-size="20" fill="white" text-anchor="middle">${text}</text></svg>`;
  return `data:image/svg+xml;base64,${Buffer.from(svg).toString('base64')}`;
}

function pixelForgeWork(brief: Brief): AgentResult {
  const hue = [...brief.description].reduce((h, c) => (h * 31 + c.charCodeAt(0)) % 360, 7);
  return {
    type: 'image',
    content: svgDataUrl(brief.description, hue),
    metadata: { tokens_used: null, model: 'pixel-forge-xl', duration_seconds: 1.2, width: 320, height: 180, format: 'svg' },
  };
}

const COPY = 'Light up every night: the SunBeam lantern charges by day and glows for twelve hours, no cables, no fuel, no fuss.';

function copyWrightWork(): AgentResult {
  return { type: 'text', content: COPY, metadata: { tokens_used: 96, model: 'copy-wright-2', duration_seconds: 2.4 } };
}

// ---------------------------------------------------------------------------------- the run

interface StatusBody {
  status: string;
  stage: string;
  progress_percent: number;
  escrow_status: string;
  payouts: { kind: 'release' | 'refund'; to: Address; amount: string; status: string; tx_hash: string | null }[];
}

interface Tracked {
  sub: Subtask;
  agentId: string;
  agentName: string;
  taskId: string;
  status: string;
  stage: string;
  progress: number;
  escrow: bigint;
  searchTx: string | null;
  createTx: string | null;
  searchPayment: string | null;
  payouts: StatusBody['payouts'];
  result: { type: string; content: unknown; hash: string } | null;
}

/** Runs the whole demo; always shuts down what it started. Throws DemoError (or another error) on failure. */
export async function runDemo(opts: DemoOptions = {}): Promise<DemoSummary> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const env = opts.env ?? process.env;
  const pollMs = opts.pollIntervalMs ?? 500;
  const startedAt = Date.now();
  const deadline = startedAt + (opts.timeoutMs ?? 110_000);
  const checkDeadline = (what: string) => {
    if (opts.signal?.aborted) throw new DemoError(`interrupted while ${what}`);
    if (Date.now() > deadline) throw new DemoError(`timed out ${what}`);
  };

  const hosted = hostedLlmSettings(env);
  const agents: DemoAgent[] = [];
  let service: EmbeddedService | undefined;
  let standIn: LlmStandIn | null = null;
  try {
    log('task-escrow demo: batch delegation (fan out subtasks to agents in parallel, pay with x402, escrow on chain), then batches paid with one payment, then sub-delegation');
    log('');
    log('▸ Starting the service in this process');
    service = await startEmbeddedService({
      extraConfig: hosted.enabled ? { LLM_BASE_URL: hosted.baseUrl, ...(hosted.apiKey ? { LLM_API_KEY: hosted.apiKey } : {}) } : {},
    });
    const { app, chain, baseUrl, config } = service;
    const host = new URL(baseUrl).host;
    const wallets = resolveWallets(config);
    const prices = app.prices;
    const balance = (a: Address) => usdcBalance(chain.rpcUrl, a);
    log(`  database   embedded PGlite in ${service.dataDir} (fresh)`);
    log(`  chain      anvil as Base (chain id ${chain.chainId}) at ${chain.rpcUrl}, USDC ${shortHex(chain.usdc)} (fresh, no state file)`);
    log(`  service    ${baseUrl}: x402 on; dispatcher, settlement worker, callbacks and maintenance running (ready in ${((Date.now() - startedAt) / 1000).toFixed(1)} s)`);
    log(`  wallets    escrow ${shortHex(wallets.escrowAddress)} (anvil 1), facilitator anvil 2, fees ${shortHex(wallets.feeAddress)} (anvil 3)`);

    // ── agents ──────────────────────────────────────────────────────────────
    checkDeadline('starting the service');
    log('');
    log('▸ Registering agents (POST /v1/agents, signed with SIWE by each owner wallet)');
    const demoWallet = (n: number): PrivateKeyAccount => privateKeyToAccount(ANVIL_ACCOUNTS[DEV_ROLES.demo[n]!]!.privateKey);
    const agentLog = (line: string) => log(`    ↳ ${line}`);
    const pixel = await new DemoAgent({ name: 'Pixel Forge', owner: demoWallet(1), mode: 'sync', stepMs: 1200, work: pixelForgeWork, log: agentLog }).start();
    agents.push(pixel);
    const copy = await new DemoAgent({
      name: 'Copy Wright',
      owner: demoWallet(2),
      mode: 'async',
      stepMs: 700,
      work: copyWrightWork,
      progress: () => [
        { percent: 35, draft: { outline: ['hook', 'benefit', 'call to action'] } },
        { percent: 70, draft: { text: COPY.slice(0, 40) } },
      ],
      log: agentLog,
    }).start();
    agents.push(copy);
    // The batch part's two-step pipeline: research, then write from it (task.predecessors[] of the brief).
    const scout = await new DemoAgent({ name: 'Field Scout', owner: demoWallet(1), mode: 'sync', stepMs: 800, work: fieldScoutWork, log: agentLog }).start();
    agents.push(scout);
    const smith = await new DemoAgent({ name: WRITER_NAME, owner: demoWallet(2), mode: 'sync', stepMs: 800, work: storySmithWork, log: agentLog }).start();
    agents.push(smith);

    const payoutOf = new Map<string, Address>();
    const register = async (owner: PrivateKeyAccount, body: Record<string, unknown>): Promise<string> => {
      const payout = privateKeyToAccount(generatePrivateKey()).address;
      const res = await fetch(`${baseUrl}/v1/agents`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: await signInHeader(owner, { domain: host, uri: baseUrl }) },
        body: JSON.stringify({ ...body, pricing: { base_rate: BASE_RATE }, payout_address: payout }),
      });
      const text = await res.text();
      if (res.status !== 201) throw new DemoError(`registering ${String(body.name)} failed: ${res.status} ${describeError(text)}`);
      const id = (JSON.parse(text) as { id: string }).id;
      payoutOf.set(id, payout);
      return id;
    };
    const registered: { id: string; name: string; caps: string; how: string }[] = [];
    registered.push({
      id: await register(pixel.opts.owner, {
        name: pixel.name,
        description: 'Generates marketing images from a brief',
        capabilities: ['image-generation', 'design'],
        runtime: { kind: 'webhook', url: pixel.url, secret: pixel.secret, timeout_ms: 15_000 },
      }),
      name: pixel.name,
      caps: 'image-generation',
      how: `webhook ${pixel.url}, answers 200 after ~1 s`,
    });
    registered.push({
      id: await register(copy.opts.owner, {
        name: copy.name,
        description: 'Writes product copy, taglines and blurbs',
        capabilities: ['copywriting'],
        runtime: { kind: 'webhook', url: copy.url, secret: copy.secret },
      }),
      name: copy.name,
      caps: 'copywriting',
      how: `webhook ${copy.url}, answers 202, reports progress, delivers later`,
    });
    const subtasks: Subtask[] = [...SEED_SUBTASKS];
    let hostedMessage: string;
    if (hosted.enabled) {
      const name = 'Tagline Muse';
      registered.push({
        id: await register(demoWallet(3), {
          name,
          description: 'A hosted LLM copywriter for one-line taglines',
          capabilities: ['tagline-writing'],
          runtime: {
            kind: 'hosted_llm',
            model: hosted.model,
            system_prompt: 'You write one-line product taglines. Answer with the tagline only, at most 12 words.',
            max_iterations: 3,
            max_cost_usd: 0.05,
          },
        }),
        name,
        caps: 'tagline-writing',
        how: `hosted_llm ${hosted.model} at ${hosted.baseUrl}`,
      });
      subtasks.push(HOSTED_SUBTASK);
      hostedMessage = `Hosted LLM agent registered (${hosted.source}): ${hosted.model} at ${hosted.baseUrl}; it gets a fourth subtask.`;
    } else {
      hostedMessage = hosted.message;
    }
    // Hired only by the batches (not part of the seed's flow and its wallet table).
    const pipelineAgents: typeof registered = [
      {
        id: await register(scout.opts.owner, {
          name: scout.name,
          description: 'Market research notes on a product or audience',
          capabilities: ['research', 'market-research'],
          runtime: { kind: 'webhook', url: scout.url, secret: scout.secret, timeout_ms: 15_000 },
        }),
        name: scout.name,
        caps: 'research',
        how: `webhook ${scout.url}, answers 200 after ~1 s`,
      },
      {
        id: await register(smith.opts.owner, {
          name: smith.name,
          description: 'Long-form launch blurbs and articles built on research notes',
          capabilities: ['blog-writing', 'long-form'],
          runtime: { kind: 'webhook', url: smith.url, secret: smith.secret, timeout_ms: 15_000 },
        }),
        name: smith.name,
        caps: 'blog-writing',
        how: `webhook ${smith.url}, writes from task.predecessors[]`,
      },
    ];
    // Sub-delegation: a hosted LLM agent whose owner enables the `delegation` toolset. Without a
    // configured LLM its model is a loopback chat-completions stand-in (its own base_url, dev mode).
    if (!hosted.enabled) standIn = await new LlmStandIn().start();
    const leadModel = hosted.enabled ? hosted.model : 'stand-in-coordinator';
    const delegationLlm = standIn
      ? `${LEAD_NAME} (hosted LLM agent, delegation enabled) runs against a loopback chat-completions stand-in at ${standIn.baseUrl}, no real LLM is configured: it calls delegate_task as scripted.`
      : `${LEAD_NAME} (hosted LLM agent, delegation enabled) runs on the configured LLM, ${leadModel}${hosted.enabled ? ` at ${hosted.baseUrl}` : ''}: it is asked to call delegate_task with the two tasks its brief lists.`;
    const leadAgent = {
      id: await register(demoWallet(3), {
        name: LEAD_NAME,
        description: 'A hosted LLM coordinator that hires other agents for parts of its task',
        capabilities: ['coordination'],
        runtime: {
          kind: 'hosted_llm',
          model: leadModel,
          ...(standIn ? { base_url: standIn.baseUrl, api_key: 'stand-in-key' } : {}),
          system_prompt: 'You coordinate a product launch. Hire the agents the task names with delegate_task, then combine their results in order.',
          toolsets: ['delegation'],
          max_iterations: 4,
          max_cost_usd: 0.05,
        },
      }),
      name: LEAD_NAME,
      caps: 'coordination',
      how: `hosted_llm ${leadModel}, toolsets ["delegation"]`,
    };
    for (const r of [...registered, ...pipelineAgents, leadAgent]) log(`  ${r.name.padEnd(12)} ${r.id}  ${r.caps.padEnd(16)}  ${r.how}; payout ${shortHex(payoutOf.get(r.id))}`);
    log(`  ${hostedMessage}`);
    log(`  ${delegationLlm}`);
    const agentNames = new Map(registered.map((r) => [r.id, r.name]));

    // ── the client ──────────────────────────────────────────────────────────
    const payer = demoWallet(0);
    const client = new x402Client();
    registerExactEvmScheme(client, { signer: payer });
    client.setSpendControls({ maxAmountPerPayment: false }); // escrows are above the default $1 cap
    const payFetch = wrapFetchWithPayment(fetch, client);
    const calls = { search: 0, create: 0, fund: 0, status: 0, result: 0 };

    /** The seed's x402Request: any call, paid with x402 when the service asks for it. */
    const x402Request: X402Request = async <T>(
      path: string,
      method: 'GET' | 'POST' = 'GET',
      params?: Record<string, string> | object,
    ): Promise<{ status: number; body: T; txHash: string | null; paymentId: string | null }> => {
      const url = new URL(path, baseUrl);
      if (method === 'GET' && params) for (const [k, v] of Object.entries(params)) url.searchParams.set(k, String(v));
      const res = await payFetch(url, {
        method,
        ...(method === 'POST' ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(params ?? {}) } : {}),
      });
      const text = await res.text();
      if (!res.ok) throw new DemoError(`${method} ${url.pathname} answered ${res.status}: ${describeError(text)}`);
      const header = res.headers.get('payment-response');
      const txHash = header ? (decodePaymentResponseHeader(header).transaction ?? null) : null;
      // A micro-fee is served before its batch settlement (no PAYMENT-RESPONSE): its receipt is found by payment id.
      return { status: res.status, body: JSON.parse(text) as T, txHash, paymentId: res.headers.get('x-payment-id') };
    };

    const clientBefore = await balance(payer.address);
    const escrowBefore = await balance(wallets.escrowAddress);
    const feeBefore = await balance(wallets.feeAddress);
    const payoutsBefore = new Map<string, bigint>();
    for (const [id, a] of payoutOf) payoutsBefore.set(id, await balance(a));
    log('');
    log(`▸ Client: demo wallet anvil 4 ${payer.address} holding ${usdc(clientBefore)} USDC, paying with @x402/fetch`);

    // 1. Search and create all tasks
    checkDeadline('starting the next step');
    log('');
    log(`▸ 1. Search and create all ${subtasks.length} tasks in parallel (GET /v1/agents ${usdc(prices.search_agents)}, POST /v1/tasks ${usdc(prices.create_task)})`);
    const tasks: Tracked[] = await Promise.all(
      subtasks.map(async (sub) => {
        const found = await x402Request<{ agents: { id: string; name: string }[] }>('/v1/agents', 'GET', { query: sub.agent_query });
        calls.search++;
        const agent = found.body.agents[0];
        if (!agent) throw new DemoError(`no agent found for "${sub.agent_query}"`);
        const task = await x402Request<{ task_id: string; status: string }>('/v1/tasks', 'POST', {
          agent_id: agent.id,
          description: sub.description,
          budget: { amount: BUDGET, currency: 'USDC', chain: 'base' },
        });
        calls.create++;
        return {
          sub,
          agentId: agent.id,
          agentName: agent.name,
          taskId: task.body.task_id,
          status: task.body.status,
          stage: 'awaiting_funding',
          progress: 0,
          escrow: 0n,
          searchTx: found.txHash,
          createTx: task.txHash,
          searchPayment: found.paymentId,
          payouts: [],
          result: null,
        };
      }),
    );
    for (const t of tasks) log(`  ${t.sub.description.padEnd(17)} search "${t.sub.agent_query}" → ${t.agentName.padEnd(12)} → ${t.taskId} ${t.status}, budget ${usdc(BigInt(BUDGET))} USDC`);

    // 2. Fund all escrows
    checkDeadline('starting the next step');
    log('');
    log(`▸ 2. Fund all escrows in parallel (POST /v1/tasks/{id}/fund: escrow + ${usdc(prices.fund_task)} fee, paid to the escrow wallet)`);
    await Promise.all(
      tasks.map(async (t) => {
        const funded = await x402Request<{ amount: string; fee: string; tx_hash: string; status: string }>(`/v1/tasks/${t.taskId}/fund`, 'POST', { amount: BUDGET });
        calls.fund++;
        t.escrow = BigInt(funded.body.amount);
        t.status = funded.body.status;
        t.stage = 'queued';
        log(`  ${t.taskId} escrow ${usdc(t.escrow)} + fee ${usdc(BigInt(funded.body.fee))} USDC, tx ${shortHex(funded.body.tx_hash)} → ${t.status}`);
      }),
    );

    // 3. Poll until all complete
    log('');
    log(`▸ 3. Poll GET /v1/tasks/{id}/status (${usdc(prices.task_status)} each) every ${pollMs} ms while any task is in_progress`);
    const pollStatus = async (t: Tracked): Promise<StatusBody> => {
      const s = await x402Request<StatusBody>(`/v1/tasks/${t.taskId}/status`);
      calls.status++;
      t.status = s.body.status;
      t.stage = s.body.stage;
      t.progress = s.body.progress_percent;
      t.payouts = s.body.payouts;
      return s.body;
    };
    const checkAgents = () => {
      const errors = agents.flatMap((a) => a.errors);
      if (errors.length > 0) throw new DemoError(`an agent failed: ${errors[0]}`);
    };
    let round = 0;
    while (tasks.some((t) => t.status === 'in_progress')) {
      await sleep(pollMs, opts.signal).catch(() => undefined);
      checkDeadline('waiting for the tasks to complete');
      checkAgents();
      round++;
      await Promise.all(tasks.filter((t) => t.status === 'in_progress').map(pollStatus));
      log(`  poll ${String(round).padStart(2)}  ${tasks.map((t) => `${t.sub.label}: ${t.status}/${t.stage} ${t.progress}%`).join('  │  ')}`);
    }

    // 4. Collect results
    log('');
    log(`▸ 4. Collect the results of the completed tasks (GET /v1/tasks/{id}/result, ${usdc(prices.task_result)} each)`);
    await Promise.all(
      tasks
        .filter((t) => t.status === 'completed')
        .map(async (t) => {
          const r = await x402Request<{ result: { type: string; content: unknown }; result_hash: string }>(`/v1/tasks/${t.taskId}/result`);
          calls.result++;
          t.result = { type: r.body.result.type, content: r.body.result.content, hash: r.body.result_hash };
        }),
    );
    for (const t of tasks) {
      if (t.result) log(`  ${t.sub.description.padEnd(17)} ${t.agentName.padEnd(12)} [${t.result.type}] ${truncate(displayContent(t.result), 70)}  sha256 ${t.result.hash.slice(0, 12)}…`);
      else log(`  ${t.sub.description.padEnd(17)} ${t.agentName.padEnd(12)} ${t.status}: no result`);
    }

    // Payouts: the settlement worker sends them on chain
    log('');
    log(`▸ Waiting for the settlement worker to confirm the payouts on chain (status polls, ${usdc(prices.task_status)} each)`);
    const settled = (t: Tracked) => t.payouts.length > 0 && t.payouts.every((p) => p.status === 'confirmed');
    let settleRounds = 0;
    while (!tasks.every(settled)) {
      const failedPayout = tasks.flatMap((t) => t.payouts).find((p) => p.status === 'failed');
      if (failedPayout) throw new DemoError(`a ${failedPayout.kind} to ${failedPayout.to} failed on chain`);
      if (settleRounds > 0) await sleep(pollMs, opts.signal).catch(() => undefined);
      checkDeadline('waiting for the payouts to confirm');
      settleRounds++;
      await Promise.all(tasks.filter((t) => !settled(t)).map(pollStatus));
      const confirmed = tasks.flatMap((t) => t.payouts).filter((p) => p.status === 'confirmed').length;
      log(`  round ${settleRounds}: ${confirmed}/${tasks.length} payouts confirmed`);
    }
    for (const t of tasks) {
      for (const p of t.payouts) {
        log(`  ${t.taskId} ${p.kind} ${usdc(BigInt(p.amount))} USDC → ${shortHex(p.to)} (${agentNames.get(t.agentId) ?? 'client'}) ${p.status}, tx ${shortHex(p.tx_hash)}`);
      }
    }

    // Receipts and balances
    const receipts = await listReceipts(baseUrl, payer);
    const clientAfter = await balance(payer.address);
    const escrowAfter = await balance(wallets.escrowAddress);
    const feeAfter = await balance(wallets.feeAddress);

    const byId = new Map(tasks.map((t) => [t.taskId, t]));
    const byTx = new Map<string, Tracked>();
    const byPayment = new Map<string, Tracked>();
    for (const t of tasks) {
      if (t.searchPayment) byPayment.set(t.searchPayment, t);
      if (t.searchTx) byTx.set(t.searchTx.toLowerCase(), t);
      if (t.createTx) byTx.set(t.createTx.toLowerCase(), t);
    }
    const feesOf = new Map<string, bigint>(tasks.map((t) => [t.taskId, 0n]));
    let callFees = 0n;
    let fundingFees = 0n;
    let receiptsTotal = 0n;
    let unattributed = 0n;
    for (const r of receipts) {
      const amount = BigInt(r.amount);
      receiptsTotal += amount;
      const task = (r.task_id ? byId.get(r.task_id) : undefined) ?? byPayment.get(r.payment_id) ?? byTx.get(r.tx_hash.toLowerCase());
      const fee = r.kind === 'escrow_funding' ? amount - (task?.escrow ?? 0n) : amount;
      if (r.kind === 'escrow_funding') fundingFees += fee;
      else callFees += fee;
      if (task) feesOf.set(task.taskId, feesOf.get(task.taskId)! + fee);
      else unattributed += fee;
    }

    const summaryTasks: DemoTask[] = tasks.map((t) => ({
      label: t.sub.label,
      description: t.sub.description,
      query: t.sub.agent_query,
      taskId: t.taskId,
      agentId: t.agentId,
      agentName: t.agentName,
      status: t.status,
      stage: t.stage,
      progressPercent: t.progress,
      resultType: t.result?.type ?? null,
      resultText: t.result ? displayContent(t.result) : null,
      resultHash: t.result?.hash ?? null,
      escrow: t.escrow,
      fees: feesOf.get(t.taskId)!,
      refunded: t.payouts.filter((p) => p.kind === 'refund').reduce((s, p) => s + BigInt(p.amount), 0n),
      payouts: t.payouts.map((p) => ({ kind: p.kind, to: p.to, amount: BigInt(p.amount), status: p.status, txHash: p.tx_hash })),
    }));
    const totalEscrow = summaryTasks.reduce((s, t) => s + t.escrow, 0n);
    const totalRefunded = summaryTasks.reduce((s, t) => s + t.refunded, 0n);
    const polls = calls.status;
    const fixedFees =
      BigInt(calls.search) * prices.search_agents +
      BigInt(calls.create) * prices.create_task +
      BigInt(calls.fund) * prices.fund_task +
      BigInt(calls.result) * prices.task_result;
    const pollingFees = BigInt(polls) * prices.task_status;
    const expected = totalEscrow - totalRefunded + fixedFees + pollingFees;
    const actual = clientBefore - clientAfter;
    const change = (label: string, address: Address, before: bigint, after: bigint): WalletChange => ({ label, address, before, after, change: after - before });
    const agentWallets: DemoSummary['agentWallets'] = [];
    for (const r of registered) {
      const address = payoutOf.get(r.id)!;
      agentWallets.push({
        ...change(`${r.name} payout`, address, payoutsBefore.get(r.id)!, await balance(address)),
        agentName: r.name,
        tasks: tasks.filter((t) => t.agentId === r.id && t.status === 'completed').length,
      });
    }
    const seedTasksDone = summaryTasks.filter((t) => SEED_SUBTASKS.some((s) => s.description === t.description)).every((t) => t.status === 'completed');
    const budgetOk = expected === actual && receiptsTotal === actual + totalRefunded;
    const seed: Omit<DemoSummary, 'batches' | 'delegation' | 'delegationLlm'> = {
      ok: budgetOk && seedTasksDone && unattributed === 0n,
      baseUrl,
      tasks: summaryTasks,
      hostedAgent: { registered: hosted.enabled, message: hostedMessage },
      calls,
      polls,
      totalEscrow,
      totalRefunded,
      callFees,
      fundingFees,
      totalFees: callFees + fundingFees,
      receipts: { count: receipts.length, total: receiptsTotal, unattributed },
      budget: { escrows: totalEscrow, refunds: totalRefunded, fixedFees, pollingFees, expected, actual, ok: budgetOk },
      client: change('client (anvil 4)', payer.address, clientBefore, clientAfter),
      agentWallets,
      escrowWallet: change('escrow wallet (anvil 1)', wallets.escrowAddress as Address, escrowBefore, escrowAfter),
      feeWallet: change('fee wallet (anvil 3)', wallets.feeAddress as Address, feeBefore, feeAfter),
      durationMs: 0,
    };
    printSummary(seed, prices.task_status, log);

    // 5-8. The same client hires with the batch resource: one payment per batch, dependencies.
    checkDeadline('starting the batches');
    const batches = await runBatchDemo({
      baseUrl,
      payer,
      request: x402Request,
      prices,
      balance,
      escrowWallet: wallets.escrowAddress as Address,
      feeWallet: wallets.feeAddress as Address,
      agents: [...registered, ...pipelineAgents].map((r) => ({ id: r.id, name: r.name, payout: payoutOf.get(r.id)! })),
      briefOf: (taskId) => agents.map((a) => a.briefs.get(taskId)).find((b) => b !== undefined),
      pollMs,
      signal: opts.signal,
      checkDeadline,
      checkAgents,
      log,
    });
    printBatchReport(batches, prices.batch_status, log);

    // 9-12. Sub-delegation: one hosted agent, two children paid from its escrow.
    checkDeadline('starting the sub-delegation');
    const delegation = await runDelegationDemo({
      baseUrl,
      payer,
      request: x402Request,
      prices,
      db: app.db,
      balance,
      escrowWallet: wallets.escrowAddress as Address,
      feeWallet: wallets.feeAddress as Address,
      lead: { id: leadAgent.id, name: LEAD_NAME, payout: payoutOf.get(leadAgent.id)! },
      agents: [...registered, ...pipelineAgents].map((r) => ({ id: r.id, name: r.name, payout: payoutOf.get(r.id)! })),
      standIn,
      ran: (taskId) => agents.some((a) => a.briefs.has(taskId)),
      pollMs,
      signal: opts.signal,
      checkDeadline,
      checkAgents,
      log,
    });
    printDelegationReport(delegation, log);
    const summary: DemoSummary = { ...seed, ok: seed.ok && batches.ok && delegation.ok, batches, delegation, delegationLlm };

    log('');
    log('▸ Shutting down: dispatcher, settlement worker, API, database, anvil, temp directory');
    for (const a of agents) a.abortWork();
    await service.stop();
    service = undefined;
    await Promise.all(agents.map((a) => a.stop()));
    await standIn?.stop();
    standIn = null;
    summary.durationMs = Date.now() - startedAt;
    log(`  done in ${(summary.durationMs / 1000).toFixed(1)} s`);
    return summary;
  } finally {
    for (const a of agents) a.abortWork();
    await service?.stop();
    await Promise.all(agents.map((a) => a.stop()));
    await standIn?.stop();
  }
}

function printSummary(s: Omit<DemoSummary, 'batches' | 'delegation' | 'delegationLlm'>, statusPrice: bigint, log: (line: string) => void): void {
  log('');
  log('▸ Summary');
  const rows = s.tasks.map((t) => [
    t.description,
    t.agentName,
    t.status,
    t.resultText ? truncate(`[${t.resultType}] ${t.resultText}`, 46) : '—',
    usdc(t.fees),
    usdc(t.escrow),
  ]);
  for (const line of table(['task', 'agent', 'status', 'result', 'fees', 'escrow'], rows, {
    align: ['left', 'left', 'left', 'left', 'right', 'right'],
    footer: [`${s.tasks.length} tasks, ${s.polls} polls`, '', '', '', usdc(s.totalFees), usdc(s.totalEscrow)],
  })) {
    log(line);
  }
  log(`  fees: ${usdc(s.callFees)} per-call (fee wallet) + ${usdc(s.fundingFees)} funding (escrow wallet) = ${usdc(s.totalFees)} USDC, from ${s.receipts.count} receipts (GET /v1/receipts)`);
  if (s.receipts.unattributed !== 0n) log(`  ! ${usdc(s.receipts.unattributed)} USDC of fees could not be matched to a task`);

  log('');
  log('  Balances on chain (USDC)');
  const wallets = [s.client, ...s.agentWallets.map((a) => ({ ...a, label: `${a.label} (${a.tasks} task${a.tasks === 1 ? '' : 's'})` })), s.escrowWallet, s.feeWallet];
  for (const line of table(
    ['wallet', 'address', 'before', 'after', 'change'],
    wallets.map((w) => [w.label, shortHex(w.address), usdc(w.before), usdc(w.after), delta(w.change)]),
    { align: ['left', 'left', 'right', 'right', 'right'], indent: '    ' },
  )) {
    log(line);
  }

  const b = s.budget;
  log('');
  log('  Budget (seed: total cost = escrows + fees + ~0.001 USDC × polls)');
  log(`    escrows            ${usdc(b.escrows).padStart(10)}  (${s.tasks.length} × ${usdc(s.tasks[0]?.escrow ?? 0n)})`);
  if (b.refunds > 0n) log(`    refunded           ${usdc(-b.refunds).padStart(10)}`);
  log(`    fees               ${usdc(b.fixedFees).padStart(10)}  (${s.calls.search} searches, ${s.calls.create} creates, ${s.calls.fund} fundings, ${s.calls.result} results)`);
  log(`    polls              ${usdc(b.pollingFees).padStart(10)}  (${s.polls} × ${usdc(statusPrice)})`);
  log(`    expected total     ${usdc(b.expected).padStart(10)}`);
  log(`    client paid        ${usdc(b.actual).padStart(10)}  (balance change on chain) ${b.ok ? '✓ matches' : '✗ DOES NOT MATCH'}`);
  log(`  ${s.hostedAgent.message}`);
}
