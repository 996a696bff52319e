import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodePaymentRequiredHeader, decodePaymentSignatureHeader } from '@x402/core/http';
import type { PaymentRequired } from '@x402/core/types';
import { and, eq } from 'drizzle-orm';
import type { Address } from 'viem';
import { buildApp } from '../../src/app.js';
import { ANVIL_ACCOUNTS, BASE_USDC, DEV_ROLES } from '../../src/chain/constants.js';
import { mintUsdc } from '../../src/chain/dev/devchain.js';
import { loadConfig } from '../../src/config.js';
import { payments } from '../../src/db/schema.js';
import { buildDocumentApp } from '../../src/http/openapi-document.js';
import { startDevPaidApp, type DevPaidApp } from '../helpers/dev-paid.js';

/** POST /dev/x402/sign and GET /dev/x402/wallets: the demo-wallet signer Swagger UI pays with in dev mode. */

let p: DevPaidApp;
let agentId: string;
beforeAll(async () => {
  // Every payment settles before it is served (no deferred micro-fees): the test sees the money move.
  p = await startDevPaidApp({ env: { MICRO_FEES_DEFERRED: 'false' } });
  const owner = p.account(DEV_ROLES.demo[1]);
  const res = await fetch(`${p.baseUrl}/v1/agents`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: await p.signIn(owner) },
    body: JSON.stringify({ name: 'Sign Writer', capabilities: ['copywriting'], pricing: { base_rate: '100000' }, payout_address: owner.address }),
  });
  expect(res.status, await res.clone().text()).toBe(201);
  agentId = ((await res.json()) as { id: string }).id;
});
afterAll(() => p?.close());

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = any;

async function challenge(path: string, init?: RequestInit): Promise<PaymentRequired> {
  const res = await fetch(`${p.baseUrl}${path}`, init);
  expect(res.status).toBe(402);
  return decodePaymentRequiredHeader(res.headers.get('payment-required')!);
}

async function sign(body: Record<string, unknown>): Promise<{ status: number; json: Json }> {
  const res = await fetch(`${p.baseUrl}/dev/x402/sign`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

const paymentRows = async () => p.db.database.db.select().from(payments);

describe('GET /dev/x402/wallets (dev chain)', () => {
  it('lists the funded demo wallets, never the service’s own', async () => {
    const res = await fetch(`${p.baseUrl}/dev/x402/wallets`);
    expect(res.status).toBe(200);
    const { wallets } = (await res.json()) as { wallets: { index: number; address: string; usdc_balance: string | null }[] };
    expect(wallets.map((w) => w.index)).toEqual([...DEV_ROLES.demo]);
    for (const w of wallets) {
      expect(w.address).toBe(ANVIL_ACCOUNTS[w.index]!.address);
      expect(BigInt(w.usdc_balance!)).toBe(await p.balance(w.address as Address));
      expect(BigInt(w.usdc_balance!)).toBeGreaterThan(0n);
    }
    const own = [p.wallets.escrowAddress, p.wallets.feeAddress, ANVIL_ACCOUNTS[DEV_ROLES.operator]!.address, ANVIL_ACCOUNTS[DEV_ROLES.minter]!.address];
    for (const address of own) expect(wallets.map((w) => w.address)).not.toContain(address);
  });
});

describe('POST /dev/x402/sign (dev chain)', () => {
  it('returns a PAYMENT-SIGNATURE that a priced route accepts: 200, paid from the demo wallet, receipt booked', async () => {
    const index = DEV_ROLES.demo[2];
    const payer = p.account(index);
    const path = '/v1/agents?query=copywriting';
    const required = await challenge(path);
    const [payerBefore, feeBefore] = await Promise.all([p.balance(payer.address), p.balance(p.wallets.feeAddress)]);

    const signed = await sign({ wallet: index, accepted: required.accepts[0], resource: required.resource });
    expect(signed.status, JSON.stringify(signed.json)).toBe(200);
    expect(signed.json.payer).toBe(payer.address);
    // The x402 v2 payment payload of the stock exact client: the challenge's entry unchanged, an EIP-3009 authorization.
    const payload = decodePaymentSignatureHeader(signed.json.payment_signature);
    expect(payload.x402Version).toBe(2);
    expect(payload.accepted).toEqual(required.accepts[0]);
    expect(payload.resource).toEqual(required.resource);
    expect(payload.payload).toMatchObject({
      authorization: { from: payer.address, to: p.wallets.feeAddress, value: '1000', validAfter: '0', validBefore: signed.json.valid_before },
      signature: expect.stringMatching(/^0x[0-9a-f]{130}$/),
    });

    const res = await fetch(`${p.baseUrl}${path}`, { headers: { 'payment-signature': signed.json.payment_signature } });
    expect(res.status, await res.clone().text()).toBe(200);
    expect(((await res.json()) as Json).agents.map((a: { id: string }) => a.id)).toEqual([agentId]);
    expect(res.headers.get('payment-response')).toBeTruthy();
    expect(await p.balance(payer.address)).toBe(payerBefore - 1000n);
    expect(await p.balance(p.wallets.feeAddress)).toBe(feeBefore + 1000n);

    const booked = await p.db.database.db
      .select()
      .from(payments)
      .where(and(eq(payments.payerAddress, payer.address.toLowerCase()), eq(payments.status, 'booked')));
    expect(booked).toHaveLength(1);
    expect(booked[0]).toMatchObject({ endpoint: 'GET /v1/agents', kind: 'call_fee', payTo: p.wallets.feeAddress.toLowerCase() });
    expect(BigInt(booked[0]!.amount)).toBe(1000n);
    const receipts = (await (await fetch(`${p.baseUrl}/v1/receipts`, { headers: { authorization: await p.signIn(payer) } })).json()) as Json;
    expect(receipts.receipts).toHaveLength(1);
    expect(receipts.receipts[0]).toMatchObject({ payer: payer.address, endpoint: 'GET /v1/agents', amount: '1000', tx_hash: booked[0]!.txHash });
  });

  it('pays more than $1 to the escrow wallet: funding a 1.5 USDC escrow from a demo wallet', async () => {
    const index = DEV_ROLES.demo[3];
    const payer = p.account(index);
    const create = { agent_id: agentId, description: 'A tagline', budget: { amount: '1500000', currency: 'USDC', chain: 'base' } };
    const createInit = { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(create) };
    const createRequired = await challenge('/v1/tasks', createInit);
    const createSigned = await sign({ wallet: index, accepted: createRequired.accepts[0], resource: createRequired.resource });
    expect(createSigned.status).toBe(200);
    const created = await fetch(`${p.baseUrl}/v1/tasks`, {
      ...createInit,
      headers: { ...createInit.headers, 'payment-signature': createSigned.json.payment_signature },
    });
    expect(created.status, await created.clone().text()).toBe(201);
    const taskId = ((await created.json()) as Json).task_id as string;

    const fundInit = { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ amount: '1500000' }) };
    const fundRequired = await challenge(`/v1/tasks/${taskId}/fund`, fundInit);
    expect(fundRequired.accepts[0]).toMatchObject({ amount: '1505000', payTo: p.wallets.escrowAddress });
    const before = await p.balance(payer.address);
    const fundSigned = await sign({ wallet: index, accepted: fundRequired.accepts[0], resource: fundRequired.resource });
    expect(fundSigned.status, JSON.stringify(fundSigned.json)).toBe(200);
    const funded = await fetch(`${p.baseUrl}/v1/tasks/${taskId}/fund`, {
      ...fundInit,
      headers: { ...fundInit.headers, 'payment-signature': fundSigned.json.payment_signature },
    });
    expect(funded.status, await funded.clone().text()).toBe(200);
    expect(await p.balance(payer.address)).toBe(before - 1_505_000n);
  });

  it('refuses the service’s own wallets (403) and indices that are no demo wallet (400), in the error shape, signing nothing', async () => {
    const required = await challenge('/v1/agents?query=x');
    const rowsBefore = (await paymentRows()).length;
    for (const index of [DEV_ROLES.minter, DEV_ROLES.escrow, DEV_ROLES.operator, DEV_ROLES.feeTreasury]) {
      const res = await sign({ wallet: index, accepted: required.accepts[0], resource: required.resource });
      expect(res.status, `anvil account ${index}`).toBe(403);
      expect(res.json.error).toMatchObject({ type: 'permission_error', code: 'forbidden', param: 'wallet', retryable: false });
      expect(res.json.error.request_id).toMatch(/^req_/);
      expect(res.json.payment_signature).toBeUndefined();
    }
    for (const wallet of [10, 11, -1, 1000]) {
      const res = await sign({ wallet, accepted: required.accepts[0], resource: required.resource });
      expect(res.status, `wallet ${wallet}`).toBe(400);
      expect(res.json.error).toMatchObject({ type: 'invalid_request_error', code: 'validation_error', param: 'wallet' });
    }
    for (const wallet of [4.5, '4', null]) {
      const res = await sign({ wallet, accepted: required.accepts[0], resource: required.resource });
      expect(res.status, `wallet ${JSON.stringify(wallet)}`).toBe(400);
      expect(res.json.error.code).toBe('validation_error');
    }
    expect((await paymentRows()).length).toBe(rowsBefore);
  });

  it('signs payments to this service only: another payTo, asset, network or scheme is refused with 400', async () => {
    const required = await challenge('/v1/agents?query=x');
    const accepted = required.accepts[0]!;
    const wallet = DEV_ROLES.demo[0];
    const cases: [string, Record<string, unknown>][] = [
      ['accepted.payTo', { ...accepted, payTo: ANVIL_ACCOUNTS[DEV_ROLES.demo[5]]!.address }],
      ['accepted.asset', { ...accepted, asset: '0x036CbD53842c5426634e7929541eC2318f3dCF7e' }],
      ['accepted.network', { ...accepted, network: 'eip155:84532' }],
      ['accepted.scheme', { ...accepted, scheme: 'upto' }],
      ['accepted.amount', { ...accepted, amount: '0' }],
    ];
    for (const [param, tampered] of cases) {
      const res = await sign({ wallet, accepted: tampered, resource: required.resource });
      expect(res.status, param).toBe(400);
      expect(res.json.error).toMatchObject({ code: 'validation_error', param });
    }
    const noAccepted = await sign({ wallet, resource: required.resource });
    expect(noAccepted.status).toBe(400);
    const extraField = await sign({ wallet, accepted, resource: required.resource, private_key: '0x00' });
    expect(extraField.status).toBe(400);
    expect(accepted.asset).toBe(BASE_USDC);
  });
});

describe('the dev signer outside dev mode', () => {
  it('does not exist on a build without the dev chain’s routes (as with CHAIN_RPC_URL): 404', async () => {
    const real = await startDevPaidApp({ devRoutes: false });
    try {
      const wallets = await fetch(`${real.baseUrl}/dev/x402/wallets`);
      expect(wallets.status).toBe(404);
      const required = decodePaymentRequiredHeader((await fetch(`${real.baseUrl}/v1/agents`)).headers.get('payment-required')!);
      const res = await fetch(`${real.baseUrl}/dev/x402/sign`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ wallet: DEV_ROLES.demo[0], accepted: required.accepts[0], resource: required.resource }),
      });
      expect(res.status).toBe(404);
      expect(((await res.json()) as Json).error).toMatchObject({ code: 'not_found', type: 'not_found_error' });
    } finally {
      await real.close();
    }
  });

  it('does not exist in the production build the OpenAPI document describes, nor in the document', async () => {
    const doc = await buildDocumentApp();
    try {
      expect(doc.app.config.NODE_ENV).toBe('production');
      for (const [method, url] of [
        ['GET', '/dev/x402/wallets'],
        ['POST', '/dev/x402/sign'],
      ] as const) {
        const res = await doc.app.inject({ method, url, ...(method === 'POST' ? { payload: { wallet: DEV_ROLES.demo[0] } } : {}) });
        expect(res.statusCode, `${method} ${url}`).toBe(404);
      }
    } finally {
      await doc.close();
    }
    expect(readFileSync('openapi/openapi.json', 'utf8')).not.toContain('/dev/x402');
  });

  it('does not exist with x402 off, even beside the faucet', async () => {
    const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', X402_ENABLED: 'false', MAX_EVENT_LOOP_DELAY_MS: '0' });
    const app = await buildApp({
      config,
      database: p.db.database,
      logger: false,
      chainRpcUrl: p.chain.rpcUrl,
      devFaucet: { mint: (to: Address, amount: bigint) => mintUsdc(p.chain, to, amount) },
    });
    try {
      expect((await app.inject({ method: 'GET', url: '/dev/x402/wallets' })).statusCode).toBe(404);
      expect((await app.inject({ method: 'POST', url: '/dev/faucet', payload: { address: '0x000000000000000000000000000000000000dEaD', amount: '1' } })).statusCode).toBe(200);
    } finally {
      await app.close();
    }
  });
});
