import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { SiweVerifier, siweDomain } from '../../src/auth/siwe.js';
import { loadConfig } from '../../src/config.js';
import { buildTestApp, TEST_DOMAIN, wallet, type TestApp } from '../helpers/app.js';
import { call, expectError, registerAgent } from '../helpers/fixtures.js';

let t: TestApp;
beforeAll(async () => {
  t = await buildTestApp();
});
afterAll(() => t.close());

const owner = wallet(1);
const body = { name: 'A', capabilities: ['x'], pricing: { base_rate: '1' }, payout_address: owner.address };

async function registerWith(authorization: string | undefined) {
  const res = await t.app.inject({
    method: 'POST',
    url: '/v1/agents',
    headers: authorization ? { authorization } : {},
    payload: body,
  });
  return { status: res.statusCode, body: res.json() };
}

describe('wallet sign-in (SIWE)', () => {
  it('accepts a valid signature and makes the signer the owner', async () => {
    const agent = await registerAgent(t, owner);
    const res = await call(t, owner, 'GET', `/v1/agents/${agent.id}/settings`);
    expect(res.status).toBe(200);
    expect(res.body.owner_address).toBe(owner.address);
  });

  it('refuses a request without a signature', async () => {
    expectError(await registerWith(undefined), 401, 'authentication_required');
  });

  it('refuses a replayed message (nonce used once)', async () => {
    const header = await signInHeader(owner, { domain: TEST_DOMAIN, uri: `https://${TEST_DOMAIN}`, now: t.clock.now() });
    expect((await registerWith(header)).status).toBe(201);
    expectError(await registerWith(header), 401, 'signature_replayed');
  });

  it('refuses an expired message', async () => {
    const header = await signInHeader(owner, {
      domain: TEST_DOMAIN,
      uri: `https://${TEST_DOMAIN}`,
      now: new Date(t.clock.now().getTime() - 10 * 60_000),
      ttlSeconds: 60,
    });
    expectError(await registerWith(header), 401, 'signature_expired');
  });

  it('refuses a message for another domain', async () => {
    const header = await signInHeader(owner, { domain: 'evil.example', uri: 'https://evil.example', now: t.clock.now() });
    expectError(await registerWith(header), 401, 'invalid_signature');
  });

  it('refuses a message valid for longer than AUTH_MAX_AGE_SECONDS', async () => {
    const header = await signInHeader(owner, {
      domain: TEST_DOMAIN,
      uri: `https://${TEST_DOMAIN}`,
      now: t.clock.now(),
      ttlSeconds: t.config.AUTH_MAX_AGE_SECONDS + 60,
    });
    expectError(await registerWith(header), 401, 'invalid_signature');
  });

  it('refuses a signature made by another key', async () => {
    const header = await signInHeader(owner, { domain: TEST_DOMAIN, uri: `https://${TEST_DOMAIN}`, now: t.clock.now() });
    const other = await signInHeader(wallet(2), { domain: TEST_DOMAIN, uri: `https://${TEST_DOMAIN}`, now: t.clock.now() });
    const forged = `${header.split('.')[0]}.${other.split('.')[1]}`;
    expectError(await registerWith(forged), 401, 'invalid_signature');
  });

  it('refuses malformed headers without a 500', async () => {
    for (const h of ['SIWE', 'SIWE abc', 'SIWE abc.0xzz', `SIWE ${Buffer.from('hello').toString('base64url')}.0x1234`]) {
      const res = await registerWith(h);
      expect(res.status).toBe(401);
      expect(res.body.error.type).toBe('authentication_error');
    }
  });
});

describe('the sign-in domain comes from configuration, never from the request', () => {
  // AUTH_DOMAIN and PUBLIC_BASE_URL unset, dev mode: the domain is the listening origin
  // (http://127.0.0.1:3000). TRUST_PROXY on, so X-Forwarded-* would be believed if anything read them.
  let open: TestApp;
  beforeAll(async () => {
    open = await buildTestApp({ AUTH_DOMAIN: '', TRUST_PROXY: 'true' });
  });
  afterAll(() => open.close());

  const attacker = wallet(4);

  async function patchPayout(authorization: string, agentId: string, headers: Record<string, string> = {}) {
    const res = await open.app.inject({
      method: 'PATCH',
      url: `/v1/agents/${agentId}`,
      headers: { authorization, ...headers },
      payload: { payout_address: attacker.address },
    });
    return { status: res.statusCode, body: res.json() };
  }

  async function payoutOf(agentId: string): Promise<string> {
    const res = await call(open, owner, 'GET', `/v1/agents/${agentId}/settings`);
    expect(res.status).toBe(200);
    return res.body.payout_address;
  }

  it('defaults to the listening origin in dev mode', () => {
    expect(open.domain).toBe('127.0.0.1:3000');
  });

  it('refuses a message the owner signed for another site, replayed with a matching Host; the payout is unchanged', async () => {
    const agent = await registerAgent(open, owner);
    const foreign = await signInHeader(owner, { domain: 'evil.example', uri: 'https://evil.example', now: open.clock.now() });
    const res = await patchPayout(foreign, agent.id, { host: 'evil.example' });
    expectError(res, 401, 'invalid_signature');
    expect(await payoutOf(agent.id)).toBe(owner.address);
  });

  it('refuses it with X-Forwarded-Host (and proto) spoofed too', async () => {
    const agent = await registerAgent(open, owner);
    const spoofs: Record<string, string>[] = [
      { 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https' },
      { host: 'evil.example', 'x-forwarded-host': 'evil.example', 'x-forwarded-for': '203.0.113.7' },
    ];
    for (const headers of spoofs) {
      const foreign = await signInHeader(owner, { domain: 'evil.example', uri: 'https://evil.example', now: open.clock.now() });
      expectError(await patchPayout(foreign, agent.id, headers), 401, 'invalid_signature');
    }
    expect(await payoutOf(agent.id)).toBe(owner.address);
  });

  it('accepts a message for the configured domain, whatever Host says', async () => {
    const agent = await registerAgent(open, owner);
    const header = await signInHeader(owner, { domain: open.domain, uri: `http://${open.domain}`, now: open.clock.now() });
    const res = await patchPayout(header, agent.id, { host: 'evil.example', 'x-forwarded-host': 'evil.example' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(await payoutOf(agent.id)).toBe(attacker.address);
  });

  it('refuses a message for another chain', async () => {
    const agent = await registerAgent(open, owner);
    for (const chainId of [1, 84532]) {
      const header = await signInHeader(owner, { domain: open.domain, uri: `http://${open.domain}`, chainId, now: open.clock.now() });
      expectError(await patchPayout(header, agent.id), 401, 'invalid_signature');
    }
    expect(await payoutOf(agent.id)).toBe(owner.address);
  });

  it('refuses a message whose uri is on another host', async () => {
    const agent = await registerAgent(open, owner);
    for (const uri of ['https://evil.example', 'http://127.0.0.1:3001', 'ftp://127.0.0.1:3000/']) {
      const header = await signInHeader(owner, { domain: open.domain, uri, now: open.clock.now() });
      expectError(await patchPayout(header, agent.id), 401, 'invalid_signature');
    }
    expect(await payoutOf(agent.id)).toBe(owner.address);
  });
});

describe('where the sign-in domain comes from', () => {
  it('AUTH_DOMAIN, else the host of PUBLIC_BASE_URL, else (dev mode) http://HOST:PORT, else none', () => {
    expect(siweDomain(loadConfig({ AUTH_DOMAIN: 'API.example', PUBLIC_BASE_URL: 'https://other.example' }))).toEqual({
      domain: 'api.example',
      source: 'AUTH_DOMAIN',
    });
    expect(siweDomain(loadConfig({ PUBLIC_BASE_URL: 'https://escrow.example:8443/base' }))).toEqual({
      domain: 'escrow.example:8443',
      source: 'PUBLIC_BASE_URL',
    });
    expect(siweDomain(loadConfig({ HOST: '0.0.0.0', PORT: '8080' }))).toEqual({ domain: '127.0.0.1:8080', source: 'listener' });
    const realChain = {
      CHAIN_RPC_URL: 'https://rpc.example',
      X402_ENABLED: 'false',
      ESCROW_PRIVATE_KEY: `0x${'1'.repeat(64)}`,
      OPERATOR_PRIVATE_KEY: `0x${'2'.repeat(64)}`,
      FEE_ADDRESS: '0x000000000000000000000000000000000000fEE0',
      CALLBACK_SIGNING_SECRET: 'a-production-callback-secret-0123456789',
      SESSION_SECRET: 'a-production-session-secret-0123456789',
    };
    expect(siweDomain(loadConfig(realChain))).toEqual({ domain: undefined, source: 'none' });
    expect(siweDomain(loadConfig({ ...realChain, PUBLIC_BASE_URL: 'https://escrow.example' })).domain).toBe('escrow.example');
  });

  it('refuses every sign-in when no domain is configured, and checks the configured chain', async () => {
    const verifier = (domain: string | undefined, chainId: number) =>
      new SiweVerifier({ db: t.app.db, clock: t.clock, domain, chainId, maxAgeSeconds: 600 });
    const sign = (chainId?: number) =>
      signInHeader(owner, { domain: TEST_DOMAIN, uri: `https://${TEST_DOMAIN}`, now: t.clock.now(), ...(chainId ? { chainId } : {}) });
    await expect(verifier(undefined, 8453).verify(await sign())).rejects.toMatchObject({ code: 'invalid_signature' });
    // base-sepolia: 84532 only
    await expect(verifier(TEST_DOMAIN, 84532).verify(await sign())).rejects.toMatchObject({ code: 'invalid_signature' });
    await expect(verifier(TEST_DOMAIN, 84532).verify(await sign(84532))).resolves.toMatchObject({ address: owner.address });
  });

  it('with PORT=0, learns the real port when the server listens (dev mode only)', async () => {
    const listening = await buildTestApp({ AUTH_DOMAIN: '', PORT: '0' });
    try {
      const baseUrl = await listening.app.listen({ host: '127.0.0.1', port: 0 });
      const host = new URL(baseUrl).host;
      expect(listening.app.services.siwe.expectedDomain).toBe(host);
      const register = async (domain: string) =>
        fetch(`${baseUrl}/v1/agents`, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            authorization: await signInHeader(owner, { domain, uri: `http://${domain}`, now: listening.clock.now() }),
          },
          body: JSON.stringify(body),
        });
      const before = await register('127.0.0.1:0');
      expect(before.status).toBe(401);
      expect(((await before.json()) as { error: { code: string } }).error.code).toBe('invalid_signature');
      const ok = await register(host);
      expect(ok.status, await ok.clone().text()).toBe(201);
    } finally {
      await listening.close();
    }
  });
});
