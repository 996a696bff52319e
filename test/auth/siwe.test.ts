import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signInHeader } from '../../src/auth/siwe-client.js';
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
