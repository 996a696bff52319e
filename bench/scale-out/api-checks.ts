/**
 * The checks made through the service's own API once everything has quiesced: the operator's
 * reconciliation and attention list (`/v1/admin/*`, x-admin-key) and each payer's receipts
 * (`GET /v1/receipts`, SIWE-signed, every page) against its on-chain USDC.
 */
import type { Db } from '../../src/db/client.js';
import { rowsOf } from '../../src/db/client.js';
import { sql } from 'drizzle-orm';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { usdcBalance } from '../../src/chain/dev/devchain.js';
import type { Payer } from '../soak/wallets.js';

export interface Check {
  name: string;
  ok: boolean;
  /** One line: the figures the check compared. */
  detail: string;
  /** What failed (rows, differences), one line each. */
  problems: string[];
}

async function getJson(url: string, headers: Record<string, string>): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url, { headers, signal: AbortSignal.timeout(30_000) });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON: kept as text */
  }
  return { status: res.status, body };
}

interface Reconciliation {
  ok: boolean;
  ledger: { ok: boolean; total: string; unbalanced_movements: string[] };
  wallets: { wallet: string; on_chain: string; ledger: string; difference: string; in_flight: string }[];
}

/** GET /v1/admin/reconciliation: the ledger sums to 0 and each wallet's difference is 0. */
export async function reconciliationCheck(baseUrl: string, adminKey: string): Promise<Check[]> {
  const { status, body } = await getJson(`${baseUrl}/v1/admin/reconciliation`, { 'x-admin-key': adminKey });
  if (status !== 200) {
    const problem = `GET /v1/admin/reconciliation answered ${status}: ${JSON.stringify(body).slice(0, 300)}`;
    return [
      { name: 'reconciliation differences 0 (admin API)', ok: false, detail: 'no answer', problems: [problem] },
      { name: 'ledger sums to 0 (admin API)', ok: false, detail: 'no answer', problems: [problem] },
    ];
  }
  const r = body as Reconciliation;
  const diffs = r.wallets.map((w) => `${w.wallet} ${w.difference} (on chain ${w.on_chain}, ledger ${w.ledger}, in flight ${w.in_flight})`);
  return [
    {
      name: 'reconciliation differences 0 (admin API)',
      ok: r.wallets.every((w) => w.difference === '0'),
      detail: diffs.join('; '),
      problems: r.wallets.filter((w) => w.difference !== '0').map((w) => `wallet ${w.wallet}: difference ${w.difference}`),
    },
    {
      name: 'ledger sums to 0 (admin API)',
      ok: r.ledger.ok && r.ledger.total === '0',
      detail: `total ${r.ledger.total}, ${r.ledger.unbalanced_movements.length} unbalanced movements`,
      problems: r.ledger.ok ? [] : [`ledger total ${r.ledger.total}; unbalanced ${r.ledger.unbalanced_movements.slice(0, 10).join(', ')}`],
    },
  ];
}

/** GET /v1/admin/attention: no stuck task, no stalled or failed payout, no unresolved payment. */
export async function attentionCheck(baseUrl: string, adminKey: string): Promise<Check> {
  const { status, body } = await getJson(`${baseUrl}/v1/admin/attention`, { 'x-admin-key': adminKey });
  const name = 'nothing for an operator (admin attention)';
  if (status !== 200) return { name, ok: false, detail: 'no answer', problems: [`GET /v1/admin/attention answered ${status}`] };
  const lists = body as Record<string, unknown[]>;
  const counts = Object.entries(lists).map(([k, v]) => `${k} ${v.length}`);
  const problems = Object.entries(lists).flatMap(([k, v]) => v.slice(0, 10).map((row) => `${k}: ${JSON.stringify(row)}`));
  return { name, ok: problems.length === 0, detail: counts.join(', '), problems };
}

interface ReceiptPage {
  receipts: { amount: string; status: string }[];
  next_cursor: string | null;
}

/**
 * Each payer's on-chain spend = Σ its receipts (every settled payment, served or refunded, as the
 * API lists them) − Σ confirmed transfers to it (refunds of failed tasks and of refunded payments).
 */
export async function receiptsCheck(db: Db, baseUrl: string, domain: string, rpcUrl: string, payers: readonly Payer[]): Promise<Check> {
  const problems: string[] = [];
  const details: string[] = [];
  const back = new Map(
    rowsOf<{ to: string; total: string }>(
      await db.execute(sql`select to_address as to, sum(amount)::text as total from chain_transfers where status = 'confirmed' group by to_address`),
    ).map((r) => [r.to.toLowerCase(), BigInt(r.total)]),
  );
  for (const payer of payers) {
    let paid = 0n;
    let count = 0;
    let cursor: string | null = null;
    do {
      const authorization = await signInHeader(payer.account, { domain, uri: baseUrl });
      const url: string = `${baseUrl}/v1/receipts?limit=100${cursor ? `&cursor=${cursor}` : ''}`;
      const { status, body } = await getJson(url, { authorization });
      if (status !== 200) {
        problems.push(`GET /v1/receipts for ${payer.address} answered ${status}: ${JSON.stringify(body).slice(0, 300)}`);
        break;
      }
      const page = body as ReceiptPage;
      for (const r of page.receipts) paid += BigInt(r.amount);
      count += page.receipts.length;
      cursor = page.next_cursor;
    } while (cursor);
    const refunded = back.get(payer.address.toLowerCase()) ?? 0n;
    const spent = payer.start - (await usdcBalance(rpcUrl, payer.address));
    details.push(`${payer.address.slice(0, 8)}… ${count} receipts`);
    if (spent !== paid - refunded) {
      problems.push(`payer ${payer.address}: spent ${spent} on chain; receipts ${paid} − refunds ${refunded} = ${paid - refunded} (difference ${spent - (paid - refunded)})`);
    }
  }
  return { name: "payers' on-chain spend = receipts − refunds (receipts API)", ok: problems.length === 0, detail: details.join(', '), problems };
}
