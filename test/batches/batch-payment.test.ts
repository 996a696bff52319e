import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eq } from 'drizzle-orm';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import type { Address } from 'viem';
import { payments } from '../../src/db/schema.js';
import { createDispatcher } from '../../src/dispatcher/index.js';
import type { Dispatcher } from '../../src/dispatcher/dispatcher.js';
import { checkLedger } from '../../src/ledger/ledger.js';
import { AgentServer } from '../helpers/agent-server.js';
import { startPaidApp, type PaidApp } from '../helpers/paid.js';

const SECRET = 'batch-payment-webhook-secret-0123456789';
const ADMIN_KEY = 'batch-payment-admin-key-0123456789abcdef';
let p: PaidApp;
let agentServer: AgentServer;
let dispatcher: Dispatcher;
let agentId: string;
let payout: Address;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const json = async (res: Response): Promise<any> => res.json();

beforeAll(async () => {
  agentServer = await new AgentServer(SECRET, (r) => {
    const name = String((r.body.task as { description?: string }).description);
    if (name === 'breaks') return { status: 400, body: { error: 'cannot do that' } };
    return { status: 200, body: { result: { type: 'text', content: `${name} done`, metadata: { tokens_used: 3, model: 'm', duration_seconds: 0 } } } };
  }).start();
  p = await startPaidApp({ DISPATCH_BACKOFF_MS: '20', DISPATCH_HEARTBEAT_MS: '200', ADMIN_API_KEY: ADMIN_KEY });
  payout = privateKeyToAccount(generatePrivateKey()).address;
  const res = await fetch(`${p.baseUrl}/v1/agents`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: await p.signIn(p.demo(5)) },
    body: JSON.stringify({ name: 'Batcher', capabilities: ['batching'], pricing: { base_rate: '100000' }, payout_address: payout, runtime: { kind: 'webhook', url: agentServer.url, secret: SECRET } }),
  });
  expect(res.status).toBe(201);
  agentId = (await json(res)).id;
  dispatcher = createDispatcher(p.app);
}, 60_000);
afterAll(async () => {
  await dispatcher?.stop(0);
  await p?.close();
  await agentServer?.stop();
});

const item = (description: string, amount: string, extra: Record<string, unknown> = {}) => ({
  agent_id: agentId,
  description,
  budget: { amount, currency: 'USDC', chain: 'base' },
  ...extra,
});
const post = (fetcher: typeof fetch, body: unknown) =>
  fetcher(`${p.baseUrl}/v1/batches`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

describe('a batch paid with one x402 payment by the stock client', () => {
  it('asks for the escrows plus one fee, and one settlement funds every item', async () => {
    const client = p.demo(0);
    const body = { items: [item('one', '200000'), item('two', '300000'), item('breaks', '150000'), item('four', '100000', { depends_on: [0, 1] })], policy: 'continue' };
    const challenge = await post(fetch, body);
    expect(challenge.status).toBe(402);
    const required = JSON.parse(Buffer.from(challenge.headers.get('payment-required')!, 'base64').toString('utf8'));
    expect(required.accepts[0].amount).toBe(String(750_000n + p.config.PRICE_BATCH_FEE));
    expect(required.accepts[0].payTo.toLowerCase()).toBe(p.wallets.escrowAddress.toLowerCase());

    const before = await p.balance(client.address);
    const escrowBefore = await p.balance(p.wallets.escrowAddress);
    const res = await post(p.payFetch(client), body);
    expect(res.status, JSON.stringify(await res.clone().json())).toBe(201);
    const created = await json(res);
    const paid = 750_000n + p.config.PRICE_BATCH_FEE;
    expect(await p.balance(client.address)).toBe(before - paid);
    expect(await p.balance(p.wallets.escrowAddress)).toBe(escrowBefore + paid);
    expect(created.items.map((i: { escrow_status: string }) => i.escrow_status)).toEqual(['held', 'held', 'held', 'held']);
    expect(created.totals).toMatchObject({ escrow: '750000', fee: String(p.config.PRICE_BATCH_FEE), paid: String(paid) });
    const rows = await p.app.db.select().from(payments).where(eq(payments.purpose, 'create_batch'));
    expect(rows.map((r) => [r.status, r.amount])).toEqual([['booked', paid]]);

    // Run it: three deliver, one fails and is refunded; releases and refunds land on chain.
    const view = await runToEnd(created.batch_id);
    expect(view.status).toBe('partially_failed');
    expect(view.items.map((i: { status: string }) => i.status)).toEqual(['completed', 'completed', 'failed', 'completed']);
    await p.settleAll();
    // The failed item's escrow came back; each poll of the batch cost one status price.
    expect(await p.balance(client.address)).toBe(before - paid + 150_000n - BigInt(polls) * p.config.PRICE_TASK_STATUS);
    // The agent is paid its three escrows minus the platform fee (2.5 %).
    expect(await p.balance(payout)).toBe(((200_000n + 300_000n + 100_000n) * 975n) / 1000n);
    const final = await json(await p.payFetch(client)(`${p.baseUrl}/v1/batches/${created.batch_id}`));
    expect(final.totals).toMatchObject({ released: '585000', refunded: '150000', completed: 3, failed: 1 });
    expect(final.failures).toEqual([expect.objectContaining({ index: 2, refunded: '150000' })]);
    // Each item's payouts carry their confirmed transactions: one poll of the batch shows every movement.
    expect(final.items.map((i: { payouts: { kind: string; status: string; tx_hash: string }[] }) => i.payouts.map((x) => `${x.kind}:${x.status}`))).toEqual([
      ['release:confirmed'],
      ['release:confirmed'],
      ['refund:confirmed'],
      ['release:confirmed'],
    ]);
    for (const i of final.items) expect(i.payouts[0].tx_hash).toMatch(/^0x[0-9a-f]{64}$/);
  });

  it('refuses over max_spend before any money moves', async () => {
    const client = p.demo(1);
    const before = await p.balance(client.address);
    const res = await post(p.payFetch(client), { items: [item('a', '200000'), item('b', '200000')], max_spend: '400000' });
    expect(res.status).toBe(422);
    expect((await json(res)).error.code).toBe('spend_limit_exceeded');
    expect(await p.balance(client.address)).toBe(before);
  });

  it('keeps the books: the ledger balances and both wallets reconcile with the chain', async () => {
    expect(await checkLedger(p.app.db)).toMatchObject({ ok: true, total: 0n, unbalancedMovements: [] });
    const r = await json(await fetch(`${p.baseUrl}/v1/admin/reconciliation`, { headers: { 'x-admin-key': ADMIN_KEY } }));
    expect(r.ok).toBe(true);
    expect(r.wallets.map((w: { wallet: string; difference: string }) => `${w.wallet}:${w.difference}`)).toEqual(['escrow:0', 'fee:0']);
  });
});

let polls = 0;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function runToEnd(batchId: string): Promise<any> {
  const client = p.demo(0);
  const end = Date.now() + 30_000;
  for (;;) {
    await dispatcher.runOnce();
    await dispatcher.drain();
    const view = await json(await p.payFetch(client)(`${p.baseUrl}/v1/batches/${batchId}`));
    polls++;
    if (view.status !== 'running') return view;
    if (Date.now() > end) throw new Error('batch did not end');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('the batch view’s results', () => {
  it('read back in canonical key order, so each hashes to its result_hash', async () => {
    const { createHash } = await import('node:crypto');
    const client = p.demo(2);
    const res = await post(p.payFetch(client), { items: [item('canonical', '100000')] });
    expect(res.status).toBe(201);
    const batchId = ((await json(res)) as { batch_id: string }).batch_id;
    const end = Date.now() + 30_000;
    for (;;) {
      await dispatcher.runOnce();
      await dispatcher.drain();
      const text = await (await p.payFetch(client)(`${p.baseUrl}/v1/batches/${batchId}`)).text();
      const view = JSON.parse(text) as { status: string; items: { result: unknown; result_hash: string }[] };
      if (view.status !== 'running') {
        const item = view.items[0]!;
        // JSON.stringify keeps the order the server wrote: canonical, so the hash matches.
        expect(createHash('sha256').update(JSON.stringify(item.result)).digest('hex')).toBe(item.result_hash);
        break;
      }
      if (Date.now() > end) throw new Error('batch did not end');
      await new Promise((r) => setTimeout(r, 50));
    }
  });
});
