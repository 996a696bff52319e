import type { Address } from 'viem';
import type { PrivateKeyAccount } from 'viem/accounts';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { describeError } from './agents.js';

/** What the demo's client shares between its flows: the paid request and the receipts. */

export class DemoError extends Error {}

/** The seed's x402Request: any call, paid with x402 (stock `@x402/fetch`) when the service asks for it. */
export type X402Request = <T>(
  path: string,
  method?: 'GET' | 'POST',
  params?: Record<string, string> | object,
) => Promise<{ status: number; body: T; txHash: string | null; paymentId: string | null }>;

/** A release or refund of an escrow as GET /v1/tasks/{id}/status shows it. */
export interface DemoPayout {
  kind: 'release' | 'refund';
  to: Address;
  amount: bigint;
  status: string;
  txHash: string | null;
}

/** A wallet's USDC on chain before and after a part of the demo. */
export interface WalletChange {
  label: string;
  address: Address;
  before: bigint;
  after: bigint;
  change: bigint;
}

/** One settled x402 payment of the client (GET /v1/receipts). */
export interface Receipt {
  payment_id: string;
  amount: string;
  kind: 'call_fee' | 'escrow_funding';
  task_id: string | null;
  tx_hash: string;
  endpoint: string;
  status: 'booked' | 'refunded' | 'deferred';
}

/**
 * The wallet's receipts, once none is `deferred`: micro-fees are served before they are settled,
 * and the worker settles them in batches within a second or two (see README, *Micro-fees*).
 */
export async function listReceipts(baseUrl: string, wallet: PrivateKeyAccount, settleTimeoutMs = 30_000): Promise<Receipt[]> {
  const until = Date.now() + settleTimeoutMs;
  for (;;) {
    const receipts = await receiptsNow(baseUrl, wallet);
    if (!receipts.some((r) => r.status === 'deferred')) return receipts;
    if (Date.now() > until) throw new DemoError(`micro-fees still unsettled after ${settleTimeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

/** Every receipt of the wallet now, all pages (GET /v1/receipts is free, signed with SIWE). */
async function receiptsNow(baseUrl: string, wallet: PrivateKeyAccount): Promise<Receipt[]> {
  const receipts: Receipt[] = [];
  const host = new URL(baseUrl).host;
  let cursor: string | null = null;
  do {
    const url = new URL('/v1/receipts', baseUrl);
    url.searchParams.set('limit', '100');
    if (cursor) url.searchParams.set('cursor', cursor);
    const res = await fetch(url, { headers: { authorization: await signInHeader(wallet, { domain: host, uri: baseUrl }) } });
    const text = await res.text();
    if (!res.ok) throw new DemoError(`GET /v1/receipts answered ${res.status}: ${describeError(text)}`);
    const page = JSON.parse(text) as { receipts: Receipt[]; next_cursor: string | null };
    receipts.push(...page.receipts);
    cursor = page.next_cursor;
  } while (cursor);
  return receipts;
}
