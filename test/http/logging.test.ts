import { describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { loadConfig } from '../../src/config.js';
import { createTestDatabase } from '../helpers/db.js';
import { TEST_DOMAIN, wallet } from '../helpers/app.js';

describe('request logs', () => {
  it('write one line per request with the caller, and never a signature or payment header', async () => {
    const db = await createTestDatabase();
    const lines: string[] = [];
    const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'info', AUTH_DOMAIN: TEST_DOMAIN, MAX_EVENT_LOOP_DELAY_MS: '0', X402_ENABLED: 'false' });
    const app = await buildApp({ config, database: db.database, logStream: { write: (l) => lines.push(l) } });
    try {
      const owner = wallet(1);
      const authorization = await signInHeader(owner, { domain: TEST_DOMAIN, uri: `https://${TEST_DOMAIN}` });
      const paymentSignature = Buffer.from(JSON.stringify({ x402Version: 2, payload: { signature: '0xdeadbeefcafe' } })).toString('base64');
      const res = await app.inject({
        method: 'POST',
        url: '/v1/agents',
        headers: { authorization, 'payment-signature': paymentSignature, 'idempotency-key': 'log-key' },
        payload: { name: 'Logged', capabilities: ['x'], pricing: { base_rate: '1' }, payout_address: owner.address },
      });
      expect(res.statusCode).toBe(201);
      await app.inject({ method: 'POST', url: '/v1/agents', headers: { authorization: 'SIWE bogus.0x1234' }, payload: {} });
      const requestLines = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request');
      expect(requestLines).toHaveLength(2);
      expect(requestLines[0]).toMatchObject({ method: 'POST', url: '/v1/agents', status: 201, caller: owner.address });
      expect(requestLines[0].reqId).toMatch(/^req_/);
      const all = lines.join('\n');
      expect(all).not.toContain(authorization.split('.')[1]!.slice(0, 40));
      expect(all).not.toContain(authorization.slice(5, 45));
      expect(all).not.toContain(paymentSignature.slice(0, 40));
      expect(all).not.toContain('deadbeefcafe');
    } finally {
      await app.close();
      await db.destroy();
    }
  });
});
