/**
 * Agents to hire on the first run: `npm start` in dev mode (no CHAIN_RPC_URL, no DATABASE_URL)
 * registers the built-in demo agents, once however often it starts on the same DATA_DIR, and the
 * seed's batch-delegation client (search → create → fund → poll → results, paid with the stock
 * x402 client) completes tasks on them with their deterministic results and released escrows.
 * With a real chain configured they are never registered.
 *
 * Real processes (src/server.ts under tsx): the dev-mode ones on embedded PGlite and anvil in a
 * temp DATA_DIR; the real-chain one on a scratch Postgres database and a separate anvil.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { wrapFetchWithPayment } from '@x402/fetch';
import pg from 'pg';
import { privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUILTIN_OWNER, BUILTIN_STEP_MS } from '../../src/agents/builtin/index.js';
import { BUILTIN_AGENTS } from '../../src/agents/builtin/catalog.js';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';
import { startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { resultHash } from '../../src/tasks/result-hash.js';
import { LlmServer } from '../helpers/llm-server.js';
import { TaskEscrowClient, usdc } from '../../sdk/src/index.js';
import { x402ClientFor } from '../helpers/paid.js';
import { scratchDatabase, serviceEnv, startService, type ScratchDatabase, type ServiceProcess } from '../helpers/service-process.js';

const BUDGET = '1000000';
const RELEASE = 975_000n; // 1 USDC escrow minus the 2.5 % platform fee
const BUILTIN_NAMES = BUILTIN_AGENTS.map((a) => a.name);

/** `npm start` with nothing configured but a data directory and a free port. */
function devEnv(dataDir: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    NODE_ENV: 'development',
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    DATA_DIR: dataDir,
    RATE_LIMIT_MAX: '1000000',
    MAX_EVENT_LOOP_DELAY_MS: '0',
    SHUTDOWN_GRACE_MS: '3000',
    DISPATCH_INTERVAL_MS: '100',
    SETTLEMENT_INTERVAL_MS: '200',
  };
}

/** The banner's built-in agent lines: name → agent id. */
function bannerAgents(output: string[]): Map<string, string> {
  const found = new Map<string, string>();
  for (const line of output) {
    const m = /^ {2}(.+?)\s+(agent_[0-9a-z]{20})\s/.exec(line);
    if (m) found.set(m[1]!, m[2]!);
  }
  return found;
}

function chainRpcOf(output: string[]): string {
  const line = output.find((l) => l.startsWith('Embedded dev chain'));
  const url = line && /(http:\/\/127\.0\.0\.1:\d+)\s*$/.exec(line)?.[1];
  if (!url) throw new Error(`no dev chain in the banner:\n${output.join('\n')}`);
  return url;
}

interface AgentItem {
  id: string;
  name: string;
  capabilities: string[];
  pricing: { base_rate: string };
}

interface Status {
  status: string;
  stage: string;
  progress_percent: number;
  escrow_status: string;
  payouts: { kind: string; amount: string; status: string; tx_hash: string | null }[];
}

/** The seed's client: every call paid by the stock @x402/fetch client from a demo wallet. */
function seedClient(baseUrl: string, demoIndex: number) {
  const pay = wrapFetchWithPayment(fetch, x402ClientFor(privateKeyToAccount(ANVIL_ACCOUNTS[DEV_ROLES.demo[demoIndex]!]!.privateKey)));
  async function call<T>(method: 'GET' | 'POST', url: string, body?: unknown): Promise<T> {
    const res = await pay(`${baseUrl}${url}`, {
      method,
      ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${url} answered ${res.status}: ${text}`);
    return JSON.parse(text) as T;
  }
  return {
    search: (query: string, extra = '') => call<{ agents: AgentItem[]; total: number }>('GET', `/v1/agents?query=${encodeURIComponent(query)}${extra}`),
    searchAll: () => call<{ agents: AgentItem[]; total: number }>('GET', '/v1/agents?availability=any&limit=100'),
    /** Search → create → fund → poll until the escrow is released → result. */
    async hire(query: string, description: string, requirements?: unknown) {
      const found = await this.search(query);
      const agent = found.agents[0]!;
      const task = await call<{ task_id: string; status: string }>('POST', '/v1/tasks', {
        agent_id: agent.id,
        description,
        ...(requirements === undefined ? {} : { requirements }),
        budget: { amount: BUDGET, currency: 'USDC', chain: 'base' },
      });
      await call('POST', `/v1/tasks/${task.task_id}/fund`, { amount: BUDGET });
      const seen: Status[] = [];
      const deadline = Date.now() + 45_000;
      for (;;) {
        const status = await call<Status>('GET', `/v1/tasks/${task.task_id}/status`);
        seen.push(status);
        const released = status.payouts.some((p) => p.kind === 'release' && p.status === 'confirmed');
        if (status.status !== 'in_progress' && (status.status !== 'completed' || released)) break;
        if (Date.now() > deadline) throw new Error(`task ${task.task_id} still ${status.status}/${status.escrow_status}`);
        await new Promise((r) => setTimeout(r, 150));
      }
      const final = seen.at(-1)!;
      const result = final.status === 'completed' ? await call<{ result: unknown; result_hash: string }>('GET', `/v1/tasks/${task.task_id}/result`) : null;
      return { agent, taskId: task.task_id, final, seen, result };
    },
  };
}

/** What a built-in agent delivers for a brief: its work, with the simulated duration the server stamps. */
function expectedResult(slug: string, description: string, requirements: unknown = null): unknown {
  const agent = BUILTIN_AGENTS.find((a) => a.slug === slug)!;
  const result = agent.work({ description, requirements });
  return { ...result, metadata: { ...result.metadata, duration_seconds: ((agent.steps.length + 1) * BUILTIN_STEP_MS) / 1000 } };
}

describe('built-in agents on a fresh `npm start` (dev mode)', () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'task-escrow-builtin-'));
  let first: ServiceProcess | undefined;
  let second: ServiceProcess | undefined;
  let firstIds: Map<string, string>;

  beforeAll(async () => {
    first = await startService(devEnv(dataDir), 90_000);
    firstIds = bannerAgents(first.output);
  }, 120_000);
  afterAll(async () => {
    await first?.stop();
    await second?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('lists them in the start-up banner with id, price and capabilities', () => {
    const text = first!.output.join('\n');
    expect(text).toContain('Built-in agents to hire');
    expect([...firstIds.keys()]).toEqual(BUILTIN_NAMES);
    expect(text).toMatch(/Pixel Studio\s+agent_[0-9a-z]{20}\s+0\.2 USDC\s+image-generation, svg, design/);
    expect(text).toMatch(/Hosted LLM agent: not registered/);
  });

  it('finds each one by capability', async () => {
    const client = seedClient(first!.baseUrl, 0);
    for (const [query, name] of [
      ['image-generation', 'Pixel Studio'],
      ['copywriting', 'Copy Desk'],
      ['summarization', 'Summarizer'],
      ['research', 'Research Scout'],
    ] as const) {
      const found = await client.search(query);
      expect(found.agents[0], query).toMatchObject({ name, id: firstIds.get(name) });
    }
  });

  it('completes the seed’s batch (two images and copy) with the deterministic results, escrows released to the owner', { timeout: 90_000 }, async () => {
    const client = seedClient(first!.baseUrl, 1);
    const rpcUrl = chainRpcOf(first!.output);
    const ownerBefore = await usdcBalance(rpcUrl, BUILTIN_OWNER.address);
    const subtasks = [
      { query: 'image-generation', description: 'Generate image A', slug: 'image' },
      { query: 'image-generation', description: 'Generate image B', slug: 'image' },
      { query: 'copywriting', description: 'Write copy', slug: 'copywriting', requirements: { product: 'SunBeam solar lantern' } },
    ];
    const hired = await Promise.all(subtasks.map((s) => client.hire(s.query, s.description, s.requirements)));
    hired.forEach((h, i) => {
      const sub = subtasks[i]!;
      expect(h.final, sub.description).toMatchObject({ status: 'completed', escrow_status: 'released' });
      expect(h.final.payouts).toEqual([expect.objectContaining({ kind: 'release', amount: RELEASE.toString(), status: 'confirmed' })]);
      const expected = expectedResult(sub.slug, sub.description, sub.requirements ?? null);
      expect(h.result!.result).toEqual(expected);
      expect(h.result!.result_hash).toBe(resultHash(expected));
    });
    expect(hired[0]!.result!.result_hash).not.toBe(hired[1]!.result!.result_hash);
    // progress was reported (signed, through the API) while the agents worked
    expect(hired.some((h) => h.seen.some((s) => s.status === 'in_progress' && s.progress_percent > 0 && s.progress_percent < 100))).toBe(true);
    expect(await usdcBalance(rpcUrl, BUILTIN_OWNER.address)).toBe(ownerBefore + 3n * RELEASE);
  });

  it('the SDK’s hireAndWait and batch complete on it, every payment made by the SDK (micro-fees deferred, the default)', { timeout: 90_000 }, async () => {
    const account = privateKeyToAccount(ANVIL_ACCOUNTS[DEV_ROLES.demo[3]!]!.privateKey);
    const sdk = new TaskEscrowClient({ baseUrl: first!.baseUrl, account, spend: { maxPerCall: usdc('2'), maxPerSession: usdc('5') }, pollIntervalMs: 200 });
    const [copy] = (await sdk.searchAgents('copywriting')).agents;
    const [image] = (await sdk.searchAgents('image-generation')).agents;
    expect([copy?.name, image?.name]).toEqual(['Copy Desk', 'Pixel Studio']);

    const done = await sdk.hireAndWait({ agent_id: copy!.id, description: 'Write copy', requirements: { product: 'SunBeam solar lantern' }, budget: usdc('0.1') });
    expect(done.status.status).toBe('completed');
    expect(done.result?.result).toEqual(expectedResult('copywriting', 'Write copy', { product: 'SunBeam solar lantern' }));

    const out = await sdk.batch(
      [
        { agent_id: image!.id, description: 'A logo for a solar lantern', budget: usdc('0.2') },
        { agent_id: copy!.id, description: 'A tagline for a solar lantern', budget: usdc('0.1') },
      ],
      { policy: 'continue' },
    );
    expect(out.results.map((r) => [r.index, r.status])).toEqual([
      [0, 'completed'],
      [1, 'completed'],
    ]);
    expect(out.results[0]!.result).toEqual(expectedResult('image', 'A logo for a solar lantern'));
    expect(out.failures).toEqual([]);
    // The session meter counted what was paid: at least the escrows and their fees, within the cap.
    const { spent } = sdk.spending();
    expect(spent).toBeGreaterThanOrEqual(BigInt(usdc('0.4')));
    expect(spent).toBeLessThanOrEqual(BigInt(usdc('5')));
  });

  it('a second start on the same data directory registers none again, and its agents still work', { timeout: 120_000 }, async () => {
    await first!.stop();
    second = await startService(devEnv(dataDir), 90_000);
    expect(bannerAgents(second.output)).toEqual(firstIds);
    const client = seedClient(second.baseUrl, 2);
    const all = await client.searchAll();
    for (const name of BUILTIN_NAMES) expect(all.agents.filter((a) => a.name === name), name).toHaveLength(1);
    expect(all.total).toBe(BUILTIN_NAMES.length);
    // the restart moved the webhooks (new port, new secrets): the registry followed
    const text = 'Solar lanterns charge by day. They glow all night. Campers love lanterns that need no fuel. It rained.';
    const hired = await client.hire('summarization', 'Summarize the review', { text });
    expect(hired.final).toMatchObject({ status: 'completed', escrow_status: 'released' });
    expect(hired.result!.result).toEqual(expectedResult('summarizing', 'Summarize the review', { text }));
  });
});

describe('the hosted LLM agent, with an LLM endpoint configured (a fake one on loopback)', () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'task-escrow-builtin-llm-'));
  let llm: LlmServer;
  let service: ServiceProcess | undefined;

  beforeAll(async () => {
    llm = await new LlmServer(() => 'Sunlight by day, glow all night.').start();
  });
  afterAll(async () => {
    await service?.stop();
    await llm.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('is registered beside the others and completes a task on the operator’s endpoint', { timeout: 120_000 }, async () => {
    service = await startService({ ...devEnv(dataDir), LLM_BASE_URL: llm.baseUrl, LLM_API_KEY: 'sk-builtin-test-key', LLM_MODEL: 'builtin-test-model' }, 90_000);
    expect([...bannerAgents(service.output).keys()]).toEqual([...BUILTIN_NAMES, 'LLM Assistant']);
    const hired = await seedClient(service.baseUrl, 3).hire('llm', 'Write a one-line tagline for a solar lantern');
    expect(hired.agent.name).toBe('LLM Assistant');
    expect(hired.final).toMatchObject({ status: 'completed', escrow_status: 'released' });
    expect(hired.result!.result).toMatchObject({ type: 'text', content: 'Sunlight by day, glow all night.', metadata: { model: 'builtin-test-model' } });
    expect(llm.requests).toEqual([expect.objectContaining({ model: 'builtin-test-model', authorization: 'Bearer sk-builtin-test-key' })]);
  });

  it('goes offline when a later start has no LLM endpoint', { timeout: 120_000 }, async () => {
    await service!.stop();
    service = await startService(devEnv(dataDir), 90_000);
    expect([...bannerAgents(service.output).keys()]).toEqual(BUILTIN_NAMES);
    const client = seedClient(service.baseUrl, 3);
    expect((await client.search('llm')).agents.map((a) => a.name)).not.toContain('LLM Assistant');
    const all = await client.searchAll();
    expect(all.agents.filter((a) => a.name === 'LLM Assistant')).toEqual([expect.objectContaining({ availability: 'offline' })]);
  });
});

describe('with a real chain configured (CHAIN_RPC_URL)', () => {
  let chain: DevChain;
  let scratch: ScratchDatabase;
  let service: ServiceProcess | undefined;

  beforeAll(async () => {
    [chain, scratch] = await Promise.all([startDevChain({ silent: true, fundIndices: [] }), scratchDatabase('builtin')]);
    // ALLOW_PRIVATE_URLS=true too: loopback agents would be reachable, yet none is registered
    service = await startService(serviceEnv(scratch.url, chain.rpcUrl), 90_000);
  }, 120_000);
  afterAll(async () => {
    await service?.stop();
    await scratch?.drop();
    await chain?.stop();
  });

  it('registers no built-in agent and prints none', async () => {
    expect(service!.output.join('\n')).not.toContain('Built-in agents');
    const client = new pg.Client({ connectionString: scratch.url });
    await client.connect();
    try {
      const { rows } = await client.query<{ n: string }>('select count(*)::text as n from agents');
      expect(rows[0]!.n).toBe('0');
    } finally {
      await client.end();
    }
  });
});
