import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eq } from 'drizzle-orm';
import { privateKeyToAccount } from 'viem/accounts';
import { chainTarget, resolveWallets } from '../../src/chain/wallets.js';
import { agents } from '../../src/db/schema.js';
import { buildTestApp, wallet, type TestApp } from '../helpers/app.js';
import { call, createTask, expectError, fundAndStart, registerAgent, rowCount, textResult } from '../helpers/fixtures.js';

let t: TestApp;
beforeAll(async () => {
  t = await buildTestApp();
});
afterAll(() => t.close());

const owner = wallet(1);
const stranger = wallet(2);
const payer = wallet(3);

describe('POST /v1/agents (register)', () => {
  it('registers with defaults and hides runtime from the public profile', async () => {
    const res = await call(t, owner, 'POST', '/v1/agents', {
      name: '  Pixel Forge ',
      capabilities: ['Image-Generation', 'design', 'design'],
      pricing: { base_rate: '250000' },
      payout_address: stranger.address,
      runtime: { kind: 'webhook', url: 'https://agent.example/tasks', secret: 'a-webhook-secret-of-at-least-32-chars' },
    });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({
      name: 'Pixel Forge',
      capabilities: ['image-generation', 'design'],
      pricing: { base_rate: '250000', unit: 'per-task', currency: 'USDC' },
      availability: 'online',
      rating: null,
      tasks_completed: 0,
      owner_address: owner.address,
      payout_address: stranger.address,
    });
    expect(res.body.id).toMatch(/^agent_[0-9a-z]{20}$/);
    // the owner sees its runtime, with the webhook secret redacted
    expect(res.body.runtime).toEqual({ kind: 'webhook', url: 'https://agent.example/tasks', secret: '[redacted]', timeout_ms: 30000 });
    const profile = await call(t, null, 'GET', `/v1/agents/${res.body.id}`);
    expect(profile.status).toBe(200);
    expect(profile.body.runtime).toBeUndefined();
    expect(profile.body.payout_address).toBeUndefined();
    expect(profile.body.recent_reviews).toEqual([]);
  });

  it('refuses invalid bodies with the field at fault and writes nothing', async () => {
    const before = await rowCount(t, agents);
    const cases: [Record<string, unknown>, string][] = [
      [{ capabilities: ['x'], pricing: { base_rate: '1' }, payout_address: owner.address }, 'name'],
      [{ name: 'a', capabilities: [], pricing: { base_rate: '1' }, payout_address: owner.address }, 'capabilities'],
      [{ name: 'a', capabilities: ['x'], pricing: { base_rate: '-5' }, payout_address: owner.address }, 'pricing.base_rate'],
      [{ name: 'a', capabilities: ['x'], pricing: { base_rate: 1.5 }, payout_address: owner.address }, 'pricing.base_rate'],
      [{ name: 'a', capabilities: ['x'], pricing: { base_rate: '1' }, payout_address: '0x123' }, 'payout_address'],
      [{ name: 'a'.repeat(101), capabilities: ['x'], pricing: { base_rate: '1' }, payout_address: owner.address }, 'name'],
      [{ name: 'a', capabilities: ['has space'], pricing: { base_rate: '1' }, payout_address: owner.address }, 'capabilities.0'],
      [{ name: 'a', capabilities: ['x'], pricing: { base_rate: '1' }, payout_address: owner.address, admin: true }, ''],
    ];
    for (const [body, param] of cases) {
      const res = await call(t, owner, 'POST', '/v1/agents', body);
      expectError(res, 400, 'validation_error');
      if (param) expect(res.body.error.param).toBe(param);
    }
    const after = await rowCount(t, agents);
    expect(after).toBe(before);
  });
});

describe('PATCH /v1/agents/{id}', () => {
  it('lets the owner update and take the agent offline; others are forbidden', async () => {
    const agent = await registerAgent(t, owner, { name: 'Updatable', capabilities: ['translation'] });
    expectError(await call(t, stranger, 'PATCH', `/v1/agents/${agent.id}`, { name: 'Hijacked' }), 403, 'forbidden');
    expectError(await call(t, stranger, 'GET', `/v1/agents/${agent.id}/settings`), 403, 'forbidden');
    const upd = await call(t, owner, 'PATCH', `/v1/agents/${agent.id}`, { pricing: { base_rate: '700000' }, capabilities: ['translation', 'french'] });
    expect(upd.status).toBe(200);
    expect(upd.body.pricing.base_rate).toBe('700000');
    const found = await call(t, null, 'GET', '/v1/agents?query=french');
    expect(found.body.agents.map((a: { id: string }) => a.id)).toContain(agent.id);

    const off = await call(t, owner, 'PATCH', `/v1/agents/${agent.id}`, { availability: 'offline' });
    expect(off.body.availability).toBe('offline');
    const hidden = await call(t, null, 'GET', '/v1/agents?query=french');
    expect(hidden.body.agents.map((a: { id: string }) => a.id)).not.toContain(agent.id);
    const any = await call(t, null, 'GET', '/v1/agents?query=french&availability=any');
    expect(any.body.agents.map((a: { id: string }) => a.id)).toContain(agent.id);
    expectError(await call(t, payer, 'POST', '/v1/tasks', {
      agent_id: agent.id,
      description: 'x',
      budget: { amount: '900000', currency: 'USDC', chain: 'base' },
    }), 409, 'agent_unavailable');
  });

  it('validates the runtime per kind', async () => {
    for (const runtime of [
      { kind: 'carrier-pigeon' },
      { kind: 'webhook', url: 'https://agent.example/tasks', secret: 'short' },
      { kind: 'webhook', url: 'ftp://agent.example/tasks', secret: 'a-webhook-secret-of-at-least-32-chars' },
      { kind: 'hosted_llm', system_prompt: 'You write copy.' },
    ]) {
      const res = await call(t, owner, 'POST', '/v1/agents', { name: 'R', capabilities: ['x'], pricing: { base_rate: '1' }, payout_address: owner.address, runtime });
      expectError(res, 400, 'validation_error');
      expect(res.body.error.param).toMatch(/^runtime/);
    }
    const llm = await call(t, owner, 'POST', '/v1/agents', {
      name: 'LLM',
      capabilities: ['x'],
      pricing: { base_rate: '1' },
      payout_address: owner.address,
      runtime: { kind: 'hosted_llm', model: 'gpt-4o-mini', system_prompt: 'You write copy.', api_key: 'sk-secret-key' },
    });
    expect(llm.status).toBe(201);
    expect(llm.body.runtime).toMatchObject({ kind: 'hosted_llm', api_key: '[redacted]', max_iterations: 50 });
  });

  it('refuses an empty patch and unknown agents', async () => {
    const agent = await registerAgent(t, owner);
    expectError(await call(t, owner, 'PATCH', `/v1/agents/${agent.id}`, {}), 400, 'validation_error');
    expectError(await call(t, owner, 'PATCH', '/v1/agents/agent_00000000000000000000', { name: 'x' }), 404, 'agent_not_found');
    expectError(await call(t, owner, 'PATCH', '/v1/agents/not-an-id', { name: 'x' }), 400, 'validation_error');
  });
});

describe('GET /v1/agents (search)', () => {
  let t2: TestApp;
  const ids: Record<string, string> = {};
  beforeAll(async () => {
    t2 = await buildTestApp();
    const specs = [
      { key: 'painter', name: 'Painter', description: 'Paints illustrations and generates images', capabilities: ['image-generation'], rate: '300000' },
      { key: 'photo', name: 'PhotoBot', description: 'Retouches photographs', capabilities: ['photo-editing', 'image-generation'], rate: '900000' },
      { key: 'writer', name: 'Wordsmith', description: 'Marketing copy, slogans and blog posts', capabilities: ['copywriting'], rate: '100000' },
      { key: 'coder', name: 'Coder', description: 'Writes TypeScript code', capabilities: ['code'], rate: '2000000' },
    ];
    for (const s of specs) {
      const a = await registerAgent(t2, owner, { name: s.name, description: s.description, capabilities: s.capabilities, pricing: { base_rate: s.rate } });
      ids[s.key] = a.id;
    }
  });
  afterAll(() => t2.close());

  it('finds by capability and ranks the exact capability first', async () => {
    const res = await call(t2, null, 'GET', '/v1/agents?query=image-generation');
    expect(res.status).toBe(200);
    const found = res.body.agents.map((a: { id: string }) => a.id);
    expect(new Set(found)).toEqual(new Set([ids.painter, ids.photo]));
    expect(res.body.total).toBe(2);
  });

  it('finds by free text over the description (stemmed)', async () => {
    const res = await call(t2, null, 'GET', '/v1/agents?query=slogan');
    expect(res.body.agents.map((a: { id: string }) => a.id)).toEqual([ids.writer]);
    const none = await call(t2, null, 'GET', '/v1/agents?query=quantum%20chemistry');
    expect(none.body).toMatchObject({ agents: [], total: 0, page: 1, has_more: false });
  });

  it('filters by max_price and pages with total', async () => {
    const cheap = await call(t2, null, 'GET', '/v1/agents?max_price=300000');
    expect(new Set(cheap.body.agents.map((a: { id: string }) => a.id))).toEqual(new Set([ids.painter, ids.writer]));
    const p1 = await call(t2, null, 'GET', '/v1/agents?limit=3&page=1');
    const p2 = await call(t2, null, 'GET', '/v1/agents?limit=3&page=2');
    expect(p1.body).toMatchObject({ total: 4, page: 1, has_more: true });
    expect(p1.body.agents).toHaveLength(3);
    expect(p2.body).toMatchObject({ total: 4, page: 2, has_more: false });
    expect(p2.body.agents).toHaveLength(1);
    const all = [...p1.body.agents, ...p2.body.agents].map((a: { id: string }) => a.id);
    expect(new Set(all).size).toBe(4);
  });

  it('filters by min_rating using the mean of ratings', async () => {
    const payerA = wallet(4);
    for (const [agentKey, stars] of [['painter', 5], ['painter', 4], ['photo', 2]] as const) {
      const taskId = await createTask(t2, payerA, ids[agentKey]!, { budget: { amount: '2000000', currency: 'USDC', chain: 'base' } });
      await fundAndStart(t2, taskId, 2_000_000n);
      await t2.app.services.taskLifecycle.markCompleted(taskId, textResult());
      const r = await call(t2, payerA, 'POST', `/v1/agents/${ids[agentKey]}/rate`, { task_id: taskId, rating: stars });
      expect(r.status).toBe(201);
    }
    const res = await call(t2, null, 'GET', '/v1/agents?min_rating=4');
    expect(res.body.agents.map((a: { id: string }) => a.id)).toEqual([ids.painter]);
    expect(res.body.agents[0].rating).toBe(4.5);
    expect(res.body.agents[0].tasks_completed).toBe(2);
    expect(res.body.agents[0].response_time_avg_seconds).toBe(0);
  });

  it('refuses bad query parameters', async () => {
    for (const q of ['limit=0', 'limit=101', 'page=0', 'min_rating=6', 'max_price=abc', 'max_price=-1', `query=${'x'.repeat(201)}`, 'bogus=1']) {
      expectError(await call(t2, null, 'GET', `/v1/agents?${q}`), 400, 'validation_error');
    }
  });

  it('treats hostile text as text', async () => {
    for (const q of ["'; drop table agents; --", '!!!', '(((', 'a & | ! <->', '%00', '😀']) {
      const res = await call(t2, null, 'GET', `/v1/agents?query=${encodeURIComponent(q)}`);
      expect(res.status).toBe(200);
    }
    const after = await call(t2, null, 'GET', '/v1/agents?limit=100');
    expect(after.body.total).toBe(4);
  });
});

describe('GET /v1/agents/{id} and POST /v1/agents/{id}/rate', () => {
  it('shows reviews newest first and enforces the rating rules', async () => {
    const agent = await registerAgent(t, owner, { name: 'Reviewed' });
    const taskId = await createTask(t, payer, agent.id);
    // not completed yet
    expectError(await call(t, payer, 'POST', `/v1/agents/${agent.id}/rate`, { task_id: taskId, rating: 5 }), 409, 'invalid_state');
    await fundAndStart(t, taskId);
    t.clock.advance(42_000);
    await t.app.services.taskLifecycle.markCompleted(taskId, textResult());
    expectError(await call(t, stranger, 'POST', `/v1/agents/${agent.id}/rate`, { task_id: taskId, rating: 5 }), 403, 'forbidden');
    expectError(await call(t, payer, 'POST', `/v1/agents/${agent.id}/rate`, { task_id: taskId, rating: 6 }), 400, 'validation_error');
    const other = await registerAgent(t, owner, { name: 'Other' });
    expectError(await call(t, payer, 'POST', `/v1/agents/${other.id}/rate`, { task_id: taskId, rating: 5 }), 404, 'task_not_found');

    const ok = await call(t, payer, 'POST', `/v1/agents/${agent.id}/rate`, { task_id: taskId, rating: 4, comment: 'Good' });
    expect(ok.status).toBe(201);
    expect(ok.body).toMatchObject({ agent_id: agent.id, task_id: taskId, rating: 4 });
    expect(ok.body.rating_id).toMatch(/^rating_/);
    expectError(await call(t, payer, 'POST', `/v1/agents/${agent.id}/rate`, { task_id: taskId, rating: 1 }), 409, 'already_rated');

    const profile = await call(t, null, 'GET', `/v1/agents/${agent.id}`);
    expect(profile.body).toMatchObject({ rating: 4, ratings_count: 1, tasks_completed: 1, response_time_avg_seconds: 42 });
    expect(profile.body.recent_reviews).toEqual([
      { rating_id: ok.body.rating_id, task_id: taskId, rating: 4, comment: 'Good', submitted_at: ok.body.submitted_at },
    ]);
    const [row] = await t.db.database.db.select().from(agents).where(eq(agents.id, agent.id));
    expect(row!.ratingSum).toBe(4);
  });

  it('answers 404 for an unknown agent', async () => {
    expectError(await call(t, null, 'GET', '/v1/agents/agent_zzzzzzzzzzzzzzzzzzzz'), 404, 'agent_not_found');
  });
});

const SECRET = 'a-webhook-secret-of-at-least-32-chars';
const agentBody = (extra: Record<string, unknown> = {}) => ({
  name: 'Payee',
  capabilities: ['x'],
  pricing: { base_rate: '1' },
  payout_address: owner.address,
  ...extra,
});

async function payoutOf(app: TestApp, id: string): Promise<string> {
  const [row] = await app.db.database.db.select().from(agents).where(eq(agents.id, id));
  return row!.payoutAddress;
}

describe('payout addresses that can receive', () => {
  const refused = (): [string, string][] => {
    const wallets = resolveWallets(t.config);
    return [
      ['the zero address', '0x0000000000000000000000000000000000000000'],
      ['the escrow wallet', wallets.escrowAddress],
      ['the escrow wallet (lower case)', wallets.escrowAddress.toLowerCase()],
      ['the operator wallet', privateKeyToAccount(wallets.operatorKey!).address],
      ['the fee address', wallets.feeAddress],
      ['the USDC contract', chainTarget(t.config).usdc],
    ];
  };

  it('refuses the zero address, the service’s own wallets and the USDC contract at registration, writing nothing', async () => {
    const before = await rowCount(t, agents);
    for (const [what, address] of refused()) {
      const res = await call(t, owner, 'POST', '/v1/agents', agentBody({ payout_address: address }));
      expectError(res, 400, 'validation_error');
      expect(res.body.error.param, what).toBe('payout_address');
      expect(res.body.error.message, what).toMatch(/payout_address must not be/);
      // opting in to a contract does not lift these
      const optIn = await call(t, owner, 'POST', '/v1/agents', agentBody({ payout_address: address, payout_is_contract: true }));
      expectError(optIn, 400, 'validation_error');
    }
    expect(await rowCount(t, agents)).toBe(before);
  });

  it('refuses them on update and keeps the payout', async () => {
    const agent = await registerAgent(t, owner);
    for (const [what, address] of refused()) {
      const res = await call(t, owner, 'PATCH', `/v1/agents/${agent.id}`, { payout_address: address, name: 'Renamed' });
      expectError(res, 400, 'validation_error');
      expect(res.body.error.param, what).toBe('payout_address');
    }
    expect(await payoutOf(t, agent.id)).toBe(owner.address.toLowerCase());
    const settings = await call(t, owner, 'GET', `/v1/agents/${agent.id}/settings`);
    expect(settings.body.name).not.toBe('Renamed');
  });

  it('accepts an ordinary wallet, on registration and on update', async () => {
    const reg = await call(t, owner, 'POST', '/v1/agents', agentBody({ payout_address: stranger.address }));
    expect(reg.status, JSON.stringify(reg.body)).toBe(201);
    expect(reg.body.payout_address).toBe(stranger.address);
    expect(reg.body).not.toHaveProperty('payout_is_contract');
    const upd = await call(t, owner, 'PATCH', `/v1/agents/${reg.body.id}`, { payout_address: payer.address });
    expect(upd.status).toBe(200);
    expect(upd.body.payout_address).toBe(payer.address);
    // without a real chain there is no code check: the opt-in is accepted and changes nothing
    const optIn = await call(t, owner, 'PATCH', `/v1/agents/${reg.body.id}`, { payout_address: owner.address, payout_is_contract: true });
    expect(optIn.status).toBe(200);
    expect(optIn.body.payout_address).toBe(owner.address);
    expectError(await call(t, owner, 'PATCH', `/v1/agents/${reg.body.id}`, { payout_is_contract: true }), 400, 'validation_error');
  });
});

/**
 * A real chain (CHAIN_RPC_URL set: a stub JSON-RPC answering eth_getCode) and ALLOW_PRIVATE_URLS
 * off, as in production.
 */
describe('on a real chain, outside dev mode', () => {
  const CONTRACT = '0x5FbDB2315678afecb367f032d93F642f64180aa3';
  const DELEGATED = '0x1111111111111111111111111111111111111111';
  const BROKEN = '0x2222222222222222222222222222222222222222';
  let rpc: Server;
  let strict: TestApp;

  beforeAll(async () => {
    rpc = createServer((req, res) => {
      let raw = '';
      req.on('data', (chunk: Buffer) => (raw += chunk.toString()));
      req.on('end', () => {
        const answer = (call: { id: number; method: string; params: [string] }) => {
          if (call.method !== 'eth_getCode') return { jsonrpc: '2.0', id: call.id, error: { code: -32601, message: 'method not found' } };
          const address = call.params[0].toLowerCase();
          if (address === BROKEN) return { jsonrpc: '2.0', id: call.id, error: { code: -32603, message: 'node is down' } };
          const code = address === CONTRACT.toLowerCase() ? '0x6080604052' : address === DELEGATED ? `0xef0100${'ab'.repeat(20)}` : '0x';
          return { jsonrpc: '2.0', id: call.id, result: code };
        };
        const parsed = JSON.parse(raw);
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify(Array.isArray(parsed) ? parsed.map(answer) : answer(parsed)));
      });
    });
    await new Promise<void>((resolve) => rpc.listen(0, '127.0.0.1', resolve));
    strict = await buildTestApp({
      CHAIN_RPC_URL: `http://127.0.0.1:${(rpc.address() as AddressInfo).port}`,
      ESCROW_PRIVATE_KEY: `0x${'1'.repeat(64)}`,
      OPERATOR_PRIVATE_KEY: `0x${'2'.repeat(64)}`,
      FEE_ADDRESS: '0x000000000000000000000000000000000000fEE0',
      CALLBACK_SIGNING_SECRET: 'a-production-callback-secret-0123456789',
      SESSION_SECRET: 'a-production-session-secret-0123456789',
      ALLOW_PRIVATE_URLS: 'false',
    });
  });
  afterAll(async () => {
    await strict?.close();
    await new Promise((resolve) => rpc.close(resolve));
  });

  it('refuses a contract payout unless payout_is_contract is set, on registration and update', async () => {
    const before = await rowCount(strict, agents);
    const res = await call(strict, owner, 'POST', '/v1/agents', agentBody({ payout_address: CONTRACT }));
    expectError(res, 400, 'validation_error');
    expect(res.body.error.param).toBe('payout_address');
    expect(res.body.error.message).toMatch(/payout_is_contract/);
    expectError(await call(strict, owner, 'POST', '/v1/agents', agentBody({ payout_address: CONTRACT, payout_is_contract: false })), 400, 'validation_error');
    expect(await rowCount(strict, agents)).toBe(before);

    const optIn = await call(strict, owner, 'POST', '/v1/agents', agentBody({ payout_address: CONTRACT, payout_is_contract: true }));
    expect(optIn.status, JSON.stringify(optIn.body)).toBe(201);
    expect(optIn.body.payout_address).toBe(CONTRACT);

    const plain = await call(strict, owner, 'POST', '/v1/agents', agentBody());
    expect(plain.status, JSON.stringify(plain.body)).toBe(201);
    const upd = await call(strict, owner, 'PATCH', `/v1/agents/${plain.body.id}`, { payout_address: CONTRACT });
    expectError(upd, 400, 'validation_error');
    expect(upd.body.error.param).toBe('payout_address');
    expect(await payoutOf(strict, plain.body.id)).toBe(owner.address.toLowerCase());
    const updOptIn = await call(strict, owner, 'PATCH', `/v1/agents/${plain.body.id}`, { payout_address: CONTRACT, payout_is_contract: true });
    expect(updOptIn.status).toBe(200);
    expect(updOptIn.body.payout_address).toBe(CONTRACT);
  });

  it('still refuses the service’s own wallets, and takes an EIP-7702 delegated wallet as a wallet', async () => {
    const escrow = resolveWallets(strict.config).escrowAddress;
    expectError(await call(strict, owner, 'POST', '/v1/agents', agentBody({ payout_address: escrow, payout_is_contract: true })), 400, 'validation_error');
    const delegated = await call(strict, owner, 'POST', '/v1/agents', agentBody({ payout_address: DELEGATED }));
    expect(delegated.status, JSON.stringify(delegated.body)).toBe(201);
  });

  it('answers 503 when the chain cannot be asked', async () => {
    const before = await rowCount(strict, agents);
    expectError(await call(strict, owner, 'POST', '/v1/agents', agentBody({ payout_address: BROKEN })), 503, 'service_unavailable');
    expect(await rowCount(strict, agents)).toBe(before);
  });

  it('refuses webhook and LLM URLs on loopback or private addresses at registration, writing nothing', async () => {
    const before = await rowCount(strict, agents);
    for (const url of ['http://127.0.0.1:9/hook', 'http://10.0.0.1/hook', 'http://169.254.169.254/latest', 'http://[::1]:8080/hook']) {
      const res = await call(strict, owner, 'POST', '/v1/agents', agentBody({ runtime: { kind: 'webhook', url, secret: SECRET } }));
      expectError(res, 400, 'validation_error');
      expect(res.body.error.param, url).toBe('runtime.url');
    }
    const llm = await call(strict, owner, 'POST', '/v1/agents', agentBody({
      runtime: { kind: 'hosted_llm', model: 'm', system_prompt: 'p', base_url: 'http://192.168.1.20/v1', api_key: 'sk-x' },
    }));
    expectError(llm, 400, 'validation_error');
    expect(llm.body.error.param).toBe('runtime.base_url');
    expect(await rowCount(strict, agents)).toBe(before);
  });

  it('accepts a public webhook URL, and refuses a private one on update keeping the old runtime', async () => {
    const res = await call(strict, owner, 'POST', '/v1/agents', agentBody({ runtime: { kind: 'webhook', url: 'https://93.184.216.34/hook', secret: SECRET } }));
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    const upd = await call(strict, owner, 'PATCH', `/v1/agents/${res.body.id}`, {
      runtime: { kind: 'webhook', url: 'http://10.0.0.1/hook', secret: SECRET },
    });
    expectError(upd, 400, 'validation_error');
    expect(upd.body.error.param).toBe('runtime.url');
    const settings = await call(strict, owner, 'GET', `/v1/agents/${res.body.id}/settings`);
    expect(settings.body.runtime.url).toBe('https://93.184.216.34/hook');
    const llm = await call(strict, owner, 'PATCH', `/v1/agents/${res.body.id}`, {
      runtime: { kind: 'hosted_llm', model: 'm', system_prompt: 'p', base_url: 'https://93.184.216.34/v1', api_key: 'sk-x' },
    });
    expect(llm.status, JSON.stringify(llm.body)).toBe(200);
  });

  it('in dev mode the same loopback webhook is accepted', async () => {
    const res = await call(t, owner, 'POST', '/v1/agents', agentBody({ runtime: { kind: 'webhook', url: 'http://127.0.0.1:9/hook', secret: SECRET } }));
    expect(res.status, JSON.stringify(res.body)).toBe(201);
  });
});
