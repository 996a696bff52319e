/**
 * The soak's checks, run after every iteration once its wreckage is resolved (quiesced): the
 * money invariants (the ledger, the escrow and fee wallets, every payer's and every agent's
 * wallet against what the service recorded, every task's escrow account), nothing left in an
 * intermediate state, and every effect with exactly its payment. "Atomic units lost" is the sum
 * of the absolute differences of the money checks: it must be 0.
 */
import { sql } from 'drizzle-orm';
import { createPublicClient, erc20Abi, http, type Address, type Hex } from 'viem';
import { ANVIL_ACCOUNTS, BASE_USDC, DEV_ROLES } from '../../src/chain/constants.js';
import { usdcBalance } from '../../src/chain/dev/devchain.js';
import { rowsOf, type Db } from '../../src/db/client.js';
import { checkLedger, walletBalance } from '../../src/ledger/ledger.js';
import type { SoakAgent } from './agents.js';
import type { Payer } from './wallets.js';

export const ESCROW_WALLET = ANVIL_ACCOUNTS[DEV_ROLES.escrow]!.address;
export const FEE_WALLET = ANVIL_ACCOUNTS[DEV_ROLES.feeTreasury]!.address;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const abs = (n: bigint) => (n < 0n ? -n : n);

async function query<T>(db: Db, q: ReturnType<typeof sql>): Promise<T[]> {
  return rowsOf<T>(await db.execute(q));
}

// ── in flight ────────────────────────────────────────────────────────────────

export interface InFlight {
  /** Payments `verified` or `settling`, and micro-fees `deferred` (served, not yet settled). */
  payments: number;
  /** Chain transfers `pending`, `signed` or `sent`. */
  transfers: number;
  /** Tasks `funded` or `in_progress` (not parked as stuck). */
  tasks: number;
}

export async function inFlight(db: Db): Promise<InFlight> {
  const [row] = await query<{ p: string; x: string; t: string }>(
    db,
    sql`select
      (select count(*) from payments where status in ('verified', 'settling', 'deferred'))::text as p,
      (select count(*) from chain_transfers where status in ('pending', 'signed', 'sent'))::text as x,
      (select count(*) from tasks t where status in ('funded', 'in_progress')
         and not exists (select 1 from dispatch_jobs j where j.task_id = t.id and j.state = 'stuck'))::text as t`,
  );
  return { payments: Number(row!.p), transfers: Number(row!.x), tasks: Number(row!.t) };
}

const isQuiet = (f: InFlight) => f.payments === 0 && f.transfers === 0 && f.tasks === 0;

export interface Quiesce {
  quiet: boolean;
  ms: number;
  /** The rows still in flight when it gave up (one JSON line each). */
  remaining: string[];
}

/** Waits until nothing is in flight, or `timeoutMs`; then lists what stayed. */
export async function quiesce(db: Db, timeoutMs: number): Promise<Quiesce> {
  const started = Date.now();
  for (;;) {
    const f = await inFlight(db);
    if (isQuiet(f)) return { quiet: true, ms: Date.now() - started, remaining: [] };
    if (Date.now() - started > timeoutMs) return { quiet: false, ms: Date.now() - started, remaining: await describeInFlight(db) };
    await sleep(200);
  }
}

export async function describeInFlight(db: Db): Promise<string[]> {
  const rows = [
    ...(await query<object>(
      db,
      sql`select 'payment' as row, id, status, purpose, task_id, amount::text, lease_owner, lease_expires_at, created_at, failure_reason
          from payments where status in ('verified', 'settling', 'deferred') order by created_at limit 20`,
    )),
    ...(await query<object>(
      db,
      sql`select 'transfer' as row, id, status, kind, cause, amount::text, attempts, last_error, lease_owner, lease_expires_at, next_attempt_at, tx_hash
          from chain_transfers where status in ('pending', 'signed', 'sent') order by created_at limit 20`,
    )),
    ...(await query<object>(
      db,
      sql`select 'task' as row, t.id, t.status, t.escrow_status, j.state, j.attempts, j.lost_runs, j.lease_owner, j.lease_expires_at, t.deadline_at,
                 j.next_at, j.last_error
          from tasks t left join dispatch_jobs j on j.task_id = t.id
          where t.status in ('funded', 'in_progress') order by t.created_at limit 20`,
    )),
  ];
  return rows.map((r) => JSON.stringify(r));
}

// ── invariants ───────────────────────────────────────────────────────────────

export interface InvariantReport {
  ok: boolean;
  /** Σ |difference| of every money check, in atomic USDC. */
  lost: bigint;
  /** Owed by the service and given up (chain transfers `failed`): the books agree, the creditor is short. */
  unpaid: bigint;
  /** What failed, one line each (with the rows that show it). */
  problems: string[];
}

export interface Parties {
  rpcUrl: string;
  payers: readonly Payer[];
  agents: readonly SoakAgent[];
}

export async function checkInvariants(db: Db, parties: Parties): Promise<InvariantReport> {
  const problems: string[] = [];
  let lost = 0n;
  const balance = (a: Address) => usdcBalance(parties.rpcUrl, a);

  // 1. the ledger sums to zero, movement by movement
  const ledger = await checkLedger(db);
  if (!ledger.ok) {
    lost += abs(ledger.total);
    problems.push(`ledger: total ${ledger.total}, unbalanced movements ${JSON.stringify(ledger.unbalancedMovements.slice(0, 10))}`);
  }

  // 2. the escrow and fee wallets hold on chain what their ledger accounts say
  for (const [wallet, address] of [
    ['escrow', ESCROW_WALLET],
    ['fee', FEE_WALLET],
  ] as const) {
    const onChain = await balance(address);
    const books = await walletBalance(db, wallet);
    if (onChain !== books) {
      lost += abs(onChain - books);
      problems.push(`reconciliation: the ${wallet} wallet holds ${onChain} on chain, its ledger accounts ${books} (difference ${onChain - books})`);
    }
  }

  // 2b. each wallet can pay the payouts it owes: its on-chain USDC covers its pending payouts
  for (const [account, address] of [
    ['payout_pending', ESCROW_WALLET],
    ['payout_pending:fee', FEE_WALLET],
  ] as const) {
    const [owed] = await query<{ total: string }>(db, sql`select coalesce(sum(amount), 0)::text as total from ledger_entries where account = ${account}`);
    const onChain = await balance(address);
    if (onChain < BigInt(owed!.total)) {
      problems.push(`wallet ${address} insolvent: it owes ${owed!.total} of pending payouts and holds ${onChain}`);
    }
  }

  // 3. every payer's on-chain change is what the service says it charged and paid back
  const charged = new Map(
    (
      await query<{ payer: string; total: string }>(
        db,
        sql`select payer_address as payer, sum(amount)::text as total from payments where status in ('booked', 'refunded') group by payer_address`,
      )
    ).map((r) => [r.payer, BigInt(r.total)]),
  );
  const received = new Map(
    (
      await query<{ to: string; total: string }>(
        db,
        sql`select to_address as to, sum(amount)::text as total from chain_transfers where status = 'confirmed' group by to_address`,
      )
    ).map((r) => [r.to, BigInt(r.total)]),
  );
  for (const payer of parties.payers) {
    const key = payer.address.toLowerCase();
    const spentOnChain = payer.start - (await balance(payer.address));
    const says = (charged.get(key) ?? 0n) - (received.get(key) ?? 0n);
    if (spentOnChain !== says) {
      lost += abs(spentOnChain - says);
      problems.push(
        `payer ${payer.address}: spent ${spentOnChain} on chain, the service says ${says} ` +
          `(payments booked/refunded ${charged.get(key) ?? 0n} − confirmed transfers to it ${received.get(key) ?? 0n}); difference ${spentOnChain - says}`,
      );
    }
  }

  // 4. every agent's payout wallet holds exactly the confirmed transfers to it
  for (const agent of parties.agents) {
    const onChain = await balance(agent.payout);
    const says = received.get(agent.payout.toLowerCase()) ?? 0n;
    if (onChain !== says) {
      lost += abs(onChain - says);
      problems.push(`agent ${agent.kind} payout ${agent.payout}: holds ${onChain} on chain, confirmed transfers to it ${says}; difference ${onChain - says}`);
    }
  }

  // 5. every task's escrow account holds what its escrow state says (0 once decided, the escrow while held or frozen)
  const escrows = await query<{ id: string; status: string; escrow_status: string; funded: string | null; held: string }>(
    db,
    sql`select t.id, t.status, t.escrow_status, t.funded_amount::text as funded,
               coalesce((select sum(e.amount) from ledger_entries e where e.account = 'escrow:' || t.id), 0)::text as held
        from tasks t`,
  );
  for (const t of escrows) {
    const expected = t.escrow_status === 'held' || t.escrow_status === 'frozen' ? BigInt(t.funded ?? '0') : 0n;
    const held = BigInt(t.held);
    if (held !== expected) {
      lost += abs(held - expected);
      problems.push(`task ${t.id} (${t.status}, escrow ${t.escrow_status}): its escrow account holds ${held}, expected ${expected}`);
    }
  }

  // 6. nothing left in an intermediate state; no micro-fee defaulted or written off (every payer can pay, every batch in time)
  const stranded = await query<object>(
    db,
    sql`select 'payment' as row, id, status, purpose, task_id, amount::text, lease_owner, lease_expires_at, failure_reason
          from payments where status in ('verified', 'settling', 'deferred', 'defaulted')
             or (status = 'failed' and failure_reason like '%expired before the service settled it%')
        union all
        select 'transfer', id, status, kind, cause, amount::text, lease_owner, lease_expires_at, last_error
          from chain_transfers where status in ('pending', 'signed', 'sent', 'failed')
        union all
        select 'task', t.id, t.status, t.escrow_status, j.state, coalesce(t.funded_amount, 0)::text, j.lease_owner, j.lease_expires_at, j.last_error
          from tasks t left join dispatch_jobs j on j.task_id = t.id
          where t.status in ('funded', 'in_progress') or j.state = 'stuck'`,
  );
  for (const r of stranded.slice(0, 30)) problems.push(`left intermediate (or failed/stuck): ${JSON.stringify(r)}`);
  if (stranded.length > 30) problems.push(`… and ${stranded.length - 30} more rows left intermediate`);
  const failed = await query<{ id: string; cause: string; from: string; amount: string; tx_hash: string | null; last_error: string | null }>(
    db,
    sql`select id, cause, from_address as from, amount::text, tx_hash, last_error from chain_transfers where status = 'failed' order by created_at`,
  );
  const unpaid = failed.reduce((sum, f) => sum + BigInt(f.amount), 0n);
  for (const f of failed.slice(0, 30)) problems.push(`failed transfer ${f.id} (${f.cause}, ${f.amount}): ${await whyFailed(parties.rpcUrl, f)}`);

  // 7. every effect has exactly its booked payment, and every booked payment its effect
  const mismatches = await query<object>(
    db,
    sql`select 'task without exactly one booked create_task payment' as problem, t.id, t.status, count(p.id)::int as n
          from tasks t left join payments p on p.task_id = t.id and p.purpose = 'create_task' and p.status = 'booked'
          where t.batch_id is null
          group by t.id, t.status having count(p.id) <> 1
        union all
        select 'batch without its one booked create_batch payment', b.id, coalesce(p.status, 'none'), 0
          from batches b left join payments p on p.id = b.payment_id
          where p.id is null or p.status <> 'booked' or p.purpose <> 'create_batch'
        union all
        select 'booked create_batch payment without its batch', p.id, p.status, 0
          from payments p where p.purpose = 'create_batch' and p.status = 'booked' and not exists (select 1 from batches b where b.payment_id = p.id)
        union all
        select 'booked batch payment differs from its items'' escrows + fee', b.id, p.id, 0
          from batches b join payments p on p.id = b.payment_id
          where p.amount <> b.fee + coalesce((select sum(e.amount) from ledger_entries e join tasks t on e.account = 'escrow:' || t.id
                                               where t.batch_id = b.id and e.kind = 'escrow_in'), 0)
        union all
        select 'batch item not funded', t.id, t.escrow_status, 0
          from tasks t where t.batch_id is not null and t.escrow_status = 'none'
        union all
        select 'batch item cancelled by no one: not on its own (a booked cancel_task), nor by its batch, nor by fail_fast', t.id, t.status, 0
          from tasks t join batches b on b.id = t.batch_id
          where t.status = 'cancelled' and b.cancelled_at is null
            and not exists (select 1 from payments p where p.task_id = t.id and p.purpose = 'cancel_task' and p.status = 'booked')
            and not (b.policy = 'fail_fast' and t.cancel_reason like 'Not run (policy fail_fast)%')
        union all
        select 'cancelled batches and booked cancel_batch payments differ in number', 'all', 'cancelled', 0
          where (select count(*) from batches where cancelled_at is not null)
             <> (select count(*) from payments where purpose = 'cancel_batch' and status = 'booked')
        union all
        select 'booked create_task payment without its task', p.id, p.status, 0
          from payments p where p.purpose = 'create_task' and p.status = 'booked' and not exists (select 1 from tasks t where t.id = p.task_id)
        union all
        select 'escrow state and booked fundings disagree', t.id, t.escrow_status, count(p.id)::int
          from tasks t left join payments p on p.task_id = t.id and p.purpose = 'fund_task' and p.status = 'booked'
          where t.batch_id is null
          group by t.id, t.escrow_status having count(p.id) <> case when t.escrow_status = 'none' then 0 else 1 end
        union all
        select 'cancellation and booked cancel payments disagree', t.id, t.status, count(p.id)::int
          from tasks t left join payments p on p.task_id = t.id and p.purpose = 'cancel_task' and p.status = 'booked'
          group by t.id, t.status, t.batch_id
          having count(p.id) > case when t.status = 'cancelled' then 1 else 0 end
              or (t.batch_id is null and count(p.id) <> case when t.status = 'cancelled' then 1 else 0 end)
        union all
        select 'dispute and booked dispute payments disagree', t.id, t.status, count(p.id)::int
          from tasks t left join payments p on p.task_id = t.id and p.purpose = 'dispute_task' and p.status = 'booked'
          group by t.id, t.status
          having count(p.id) <> case when t.status = 'disputed' then 1 else 0 end
              or (t.status = 'disputed') <> exists (select 1 from disputes d where d.task_id = t.id)
        union all
        select 'refunded payment without its confirmed refund of the same amount', p.id, p.status, 0
          from payments p left join chain_transfers x on x.cause = 'payment:' || p.id || ':refund'
          where p.status = 'refunded' and (x.id is null or x.amount <> p.amount or x.status <> 'confirmed' or x.to_address <> p.payer_address)
        union all
        select 'booked funding amount differs from the escrow funded + fee', p.id, t.id, 0
          from payments p join tasks t on t.id = p.task_id
          where p.purpose = 'fund_task' and p.status = 'booked'
            and p.amount <> coalesce((select sum(e.amount) from ledger_entries e where e.kind = 'escrow_in' and e.account = 'escrow:' || t.id), 0)`,
  );
  for (const m of mismatches.slice(0, 30)) problems.push(`effect/payment: ${JSON.stringify(m)}`);
  if (mismatches.length > 30) problems.push(`… and ${mismatches.length - 30} more effect/payment mismatches`);

  return { ok: problems.length === 0, lost, unpaid, problems };
}

/** For a transfer that reverted: the sender's USDC just before its block, and what else that block held. */
async function whyFailed(rpcUrl: string, f: { from: string; amount: string; tx_hash: string | null; last_error: string | null }): Promise<string> {
  if (!f.tx_hash) return `never sent (${f.last_error ?? 'no error recorded'})`;
  try {
    const client = createPublicClient({ transport: http(rpcUrl) });
    const receipt = await client.getTransactionReceipt({ hash: f.tx_hash as Hex });
    const before = await client.readContract({
      address: BASE_USDC,
      abi: erc20Abi,
      functionName: 'balanceOf',
      args: [f.from as Address],
      blockNumber: receipt.blockNumber - 1n,
    });
    return (
      `tx ${f.tx_hash} ${receipt.status} in block ${receipt.blockNumber}; the sender ${f.from} held ${before} atomic USDC ` +
      `before that block, the transfer needed ${f.amount} (${f.last_error ?? ''})`
    );
  } catch (err) {
    return `${f.last_error ?? ''} (no receipt: ${(err as Error).message.split('\n')[0]})`;
  }
}

// ── figures ──────────────────────────────────────────────────────────────────

export interface BookFigures {
  payments: Record<string, { n: number; amount: bigint }>;
  /** Payments refunded by the recovery sweep (their failure reason says so). */
  sweepRefunds: number;
  /** Micro-fees served before settlement and collected by a batch, and the batch transactions that did it. */
  deferredCollected: number;
  feeBatches: number;
  tasks: Record<string, number>;
  transfers: Record<string, number>;
}

export async function bookFigures(db: Db): Promise<BookFigures> {
  const payments = Object.fromEntries(
    (await query<{ status: string; n: string; amount: string }>(db, sql`select status, count(*)::text as n, coalesce(sum(amount), 0)::text as amount from payments group by status`)).map(
      (r) => [r.status, { n: Number(r.n), amount: BigInt(r.amount) }],
    ),
  );
  const [sweep] = await query<{ n: string }>(db, sql`select count(*)::text as n from payments where status = 'refunded' and failure_reason like '%recovery sweep%'`);
  const tasksBy = Object.fromEntries(
    (await query<{ status: string; n: string }>(db, sql`select status || '/' || escrow_status as status, count(*)::text as n from tasks group by 1 order by 1`)).map((r) => [r.status, Number(r.n)]),
  );
  const transfers = Object.fromEntries(
    (await query<{ k: string; n: string }>(db, sql`select kind || ' ' || status as k, count(*)::text as n from chain_transfers group by 1 order by 1`)).map((r) => [r.k, Number(r.n)]),
  );
  const [micro] = await query<{ n: string; batches: string }>(
    db,
    sql`select count(*)::text as n, count(distinct p.tx_hash)::text as batches
        from ledger_entries e join payments p on p.id = e.payment_id where e.kind = 'fee_collected' and e.amount > 0`,
  );
  return { payments, sweepRefunds: Number(sweep?.n ?? 0), deferredCollected: Number(micro?.n ?? 0), feeBatches: Number(micro?.batches ?? 0), tasks: tasksBy, transfers };
}
