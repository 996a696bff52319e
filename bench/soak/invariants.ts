/**
 * The soak's checks, run after every iteration once its wreckage is resolved (quiesced): the
 * money invariants (the ledger, the escrow and fee wallets, every payer's and every agent's
 * wallet against what the service recorded, every task's escrow account), nothing left in an
 * intermediate state, and every effect with exactly its payment. "Atomic units lost" is the sum
 * of the absolute differences of the money checks: it must be 0.
 */
import { sql } from 'drizzle-orm';
import { createPublicClient, erc20Abi, http, type Address, type Hex } from 'viem';
import { ANVIL_ACCOUNTS, BASE_USDC, BATCH_SETTLEMENT_ADDRESS, DEV_ROLES } from '../../src/chain/constants.js';
import { ChannelContractReader, channelContractAbi } from '../../src/chain/channels.js';
import { usdcBalance } from '../../src/chain/dev/devchain.js';
import { rowsOf, type Db } from '../../src/db/client.js';
import { RECEIVABLE_CHANNEL_FEES, TREASURY_CALL_FEES } from '../../src/ledger/accounts.js';
import { accountBalance, checkLedger, kindTotal, walletBalance } from '../../src/ledger/ledger.js';
import { reconcile } from '../../src/ledger/reconcile.js';
import { batchSettlementAbi } from '../../src/chain/dev/contracts.js';
import { channelsProbe, createChannels } from '../../src/payments/channels/index.js';
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
  /**
   * Atomic USDC the channel settler has yet to act on (`channelsInFlight`): claimed and not
   * settled, settled and not booked, and what a stored channel not reserved by a request holds
   * beyond what was claimed from it (to claim, or to refund once idle).
   */
  channels: number;
}

/** The fee wallet's cumulative totals on the channel contract, and what the ledger booked of them. */
export async function channelTotals(db: Db, rpcUrl: string): Promise<{ claimed: bigint; settled: bigint; booked: bigint }> {
  const totals = await new ChannelContractReader(rpcUrl).receiver(FEE_WALLET, BASE_USDC);
  const booked = await kindTotal(db, 'channel_settled', TREASURY_CALL_FEES);
  return { claimed: totals.totalClaimed, settled: totals.totalSettled, booked };
}

/**
 * What the channel settler still has to do, in atomic USDC: what the contract moved and the books
 * do not follow yet (claimed and not settled, settled and not booked), plus what the stored
 * channels hold on the contract beyond what was claimed from them (charges it will claim, the
 * payer's remainder it will refund once the channel is idle). A channel reserved by a request
 * (a dead one's reservation lasts X402_MAX_TIMEOUT_SECONDS) is left out: nothing acts on it
 * meanwhile. With channels this quick (service.ts), nothing else moves after a kill is resolved,
 * so the checks that follow read still books.
 */
async function channelsInFlight(db: Db, rpcUrl: string | undefined): Promise<number> {
  if (!rpcUrl) return 0;
  const t = await channelTotals(db, rpcUrl);
  let units = t.claimed - t.settled + (t.settled > t.booked ? t.settled - t.booked : 0n);
  const stored = await query<{ id: string; pending: string | null }>(
    db,
    sql`select channel_id as id, channel->'pendingRequest'->>'expiresAt' as pending from payment_channels where channel is not null`,
  );
  const free = stored.filter((c) => c.pending === null || Number(c.pending) <= Date.now());
  if (free.length > 0) {
    for (const c of await new ChannelContractReader(rpcUrl).channels(free.map((c) => c.id as Hex))) units += c.balance - c.totalClaimed;
  }
  return Number(units);
}

export async function inFlight(db: Db, rpcUrl?: string): Promise<InFlight> {
  const [row] = await query<{ p: string; x: string; t: string }>(
    db,
    sql`select
      (select count(*) from payments where status in ('verified', 'settling', 'deferred'))::text as p,
      (select count(*) from chain_transfers where status in ('pending', 'signed', 'sent'))::text as x,
      (select count(*) from tasks t where status in ('funded', 'in_progress')
         and not exists (select 1 from dispatch_jobs j where j.task_id = t.id and j.state = 'stuck'))::text as t`,
  );
  return { payments: Number(row!.p), transfers: Number(row!.x), tasks: Number(row!.t), channels: await channelsInFlight(db, rpcUrl) };
}

const isQuiet = (f: InFlight) => f.payments === 0 && f.transfers === 0 && f.tasks === 0 && f.channels === 0;

export interface Quiesce {
  quiet: boolean;
  ms: number;
  /** The rows still in flight when it gave up (one JSON line each). */
  remaining: string[];
}

/** Waits until nothing is in flight, or `timeoutMs`; then lists what stayed. With `rpcUrl`, the channel contract's moves too. */
export async function quiesce(db: Db, timeoutMs: number, rpcUrl?: string): Promise<Quiesce> {
  const started = Date.now();
  for (;;) {
    const f = await inFlight(db, rpcUrl);
    if (isQuiet(f)) return { quiet: true, ms: Date.now() - started, remaining: [] };
    if (Date.now() - started > timeoutMs) return { quiet: false, ms: Date.now() - started, remaining: await describeInFlight(db, rpcUrl) };
    await sleep(200);
  }
}

export async function describeInFlight(db: Db, rpcUrl?: string): Promise<string[]> {
  const channels = rpcUrl ? await channelTotals(db, rpcUrl).catch(() => undefined) : undefined;
  const channelRow = channels
    ? [
        { row: 'channel totals (fee wallet)', claimed: channels.claimed.toString(), settled: channels.settled.toString(), booked: channels.booked.toString() },
        ...(await query<object>(
          db,
          sql`select 'channel' as row, channel_id, channel->>'chargedCumulativeAmount' as charged, channel->>'totalClaimed' as claimed,
                     channel->>'balance' as balance, channel->'pendingRequest'->>'expiresAt' as pending_until, channel->>'lastRequestTimestamp' as last_request
              from payment_channels where channel is not null limit 10`,
        )),
      ]
    : [];
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
    ...channelRow,
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

export async function checkInvariants(db: Db, parties: Parties, options: { final?: boolean } = {}): Promise<InvariantReport> {
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

  // 3. every payer's on-chain change is what the service says it charged and paid back: its exact
  //    payments booked or refunded, less the confirmed transfers to it, plus what it holds in its
  //    channel on the contract (deposits less the contract's refunds: a channel pays the service
  //    from there, never from the payer's wallet)
  const charged = new Map(
    (
      await query<{ payer: string; total: string }>(
        db,
        sql`select payer_address as payer, sum(amount)::text as total from payments
            where status in ('booked', 'refunded') and channel_id is null group by payer_address`,
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
  // with channels, every payer's wallet is read at the block its channel was read at (a live refund moves both)
  const { views, blockNumber } = await channelPayerViews(db, parties.rpcUrl, parties.payers);
  const channelViews = new Map(views.map((v) => [v.address, v]));
  for (const payer of parties.payers) {
    const key = payer.address.toLowerCase();
    const spentOnChain = payer.start - (await usdcAt(parties.rpcUrl, payer.address, blockNumber));
    const channel = channelViews.get(key);
    const inChannel = channel?.balance ?? 0n;
    const says = (charged.get(key) ?? 0n) - (received.get(key) ?? 0n) + inChannel;
    if (spentOnChain !== says) {
      lost += abs(spentOnChain - says);
      problems.push(
        `payer ${payer.address}: spent ${spentOnChain} on chain, the service says ${says} ` +
          `(exact payments booked/refunded ${charged.get(key) ?? 0n} − confirmed transfers to it ${received.get(key) ?? 0n}` +
          (channel ? ` + its channel's balance on the contract ${inChannel}` : '') +
          `); difference ${spentOnChain - says}`,
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
          where p.status = 'refunded' and p.channel_id is null
            and (x.id is null or x.amount <> p.amount or x.status <> 'confirmed' or x.to_address <> p.payer_address)
        union all
        select 'refunded channel payment with a chain transfer (its charge is taken back on the channel; nothing is sent)', p.id, x.status, 0
          from payments p join chain_transfers x on x.cause = 'payment:' || p.id || ':refund'
          where p.status = 'refunded' and p.channel_id is not null
        union all
        select 'booked funding amount differs from the escrow funded + fee', p.id, t.id, 0
          from payments p join tasks t on t.id = p.task_id
          where p.purpose = 'fund_task' and p.status = 'booked'
            and p.amount <> coalesce((select sum(e.amount) from ledger_entries e where e.kind = 'escrow_in' and e.account = 'escrow:' || t.id), 0)`,
  );
  for (const m of mismatches.slice(0, 30)) problems.push(`effect/payment: ${JSON.stringify(m)}`);
  if (mismatches.length > 30) problems.push(`… and ${mismatches.length - 30} more effect/payment mismatches`);

  // 8. the channels: what each channel was charged, claimed and settled against what was booked
  if ([...channelViews.values()].length > 0 || options.final) {
    const ch = await checkChannels(db, parties, [...channelViews.values()], options.final ?? false);
    lost += ch.lost;
    problems.push(...ch.problems);
  }

  return { ok: problems.length === 0, lost, unpaid, problems };
}

// ── channels ─────────────────────────────────────────────────────────────────

/** One channel payer's channel, as the books, the stored channel and the contract say. */
export interface ChannelPayerView {
  /** The payer, lowercase. */
  address: string;
  channelIds: string[];
  /** Its channel payments booked: the calls served over the channel, and their total. */
  bookedCalls: number;
  booked: bigint;
  /** Taken back by the recovery sweep (charged, not served), and failed (never charged). */
  refundedCalls: number;
  failedCalls: number;
  /** Deposit payloads among its booked and refunded channel payments (each moved USDC into the channel). */
  deposits: number;
  /** The service's stored channel: its charged total (undefined once the channel left the table, refunded and drained). */
  stored: bigint | undefined;
  /** On the contract: the channel's balance (deposits less refunds) and what was claimed from it. */
  balance: bigint;
  claimed: bigint;
}

/**
 * Every channel payer's channel. The database is read first, then the contract at one block
 * (returned): a channel the live settler refunds meanwhile is then either still stored or already
 * claimed in full at that block, never half seen.
 */
export async function channelPayerViews(
  db: Db,
  rpcUrl: string,
  payers: readonly Payer[],
): Promise<{ views: ChannelPayerView[]; blockNumber: bigint | undefined }> {
  const channelPayers = payers.filter((p) => p.channel);
  if (channelPayers.length === 0) return { views: [], blockNumber: undefined };
  const fromDb: Omit<ChannelPayerView, 'balance' | 'claimed'>[] = [];
  for (const payer of channelPayers) {
    const address = payer.address.toLowerCase();
    const [row] = await query<{ booked_n: string; booked: string; refunded_n: string; failed_n: string; deposits: string }>(
      db,
      sql`select count(*) filter (where status = 'booked')::text as booked_n,
                 coalesce(sum(amount) filter (where status = 'booked'), 0)::text as booked,
                 count(*) filter (where status = 'refunded')::text as refunded_n,
                 count(*) filter (where status = 'failed')::text as failed_n,
                 count(*) filter (where status in ('booked', 'refunded') and payload->'payload'->'payload'->>'type' = 'deposit')::text as deposits
          from payments where payer_address = ${address} and channel_id is not null`,
    );
    const stored = await query<{ id: string; charged: string | null }>(
      db,
      sql`select channel_id as id, channel->>'chargedCumulativeAmount' as charged from payment_channels where payer = ${address} and channel is not null`,
    );
    const ids = (
      await query<{ id: string }>(db, sql`select distinct channel_id as id from payments where payer_address = ${address} and channel_id is not null`)
    ).map((r) => r.id);
    for (const s of stored) if (!ids.includes(s.id)) ids.push(s.id);
    fromDb.push({
      address,
      channelIds: ids,
      bookedCalls: Number(row!.booked_n),
      booked: BigInt(row!.booked),
      refundedCalls: Number(row!.refunded_n),
      failedCalls: Number(row!.failed_n),
      deposits: Number(row!.deposits),
      stored: stored.length === 0 ? undefined : stored.reduce((sum, r) => sum + BigInt(r.charged ?? '0'), 0n),
    });
  }
  const client = chainClient(rpcUrl);
  const blockNumber = await client.getBlockNumber({ cacheTime: 0 });
  const views: ChannelPayerView[] = [];
  for (const v of fromDb) {
    let balance = 0n;
    let claimed = 0n;
    for (const id of v.channelIds) {
      const [b, c] = await client.readContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: channelContractAbi, functionName: 'channels', args: [id as Hex], blockNumber });
      balance += b;
      claimed += c;
    }
    views.push({ ...v, balance, claimed });
  }
  return { views, blockNumber };
}

const chainClient = (rpcUrl: string) => createPublicClient({ transport: http(rpcUrl), cacheTime: 0 });

/** A wallet's USDC at `blockNumber` (the latest block when undefined). */
async function usdcAt(rpcUrl: string, address: Address, blockNumber: bigint | undefined): Promise<bigint> {
  if (blockNumber === undefined) return usdcBalance(rpcUrl, address);
  return chainClient(rpcUrl).readContract({ address: BASE_USDC, abi: erc20Abi, functionName: 'balanceOf', args: [address], blockNumber });
}

/**
 * The channels' invariants, after every iteration (quiesced):
 * - each channel payer's booked channel payments (its calls served × their prices) == what its
 *   channel was charged: the stored channel's charged total, or, once the channel left the table
 *   (refunded, drained), what the contract claimed from it; never more claimed than booked, never
 *   more booked than the channel holds;
 * - the ledger booked each booked channel payment once (`channel_fee` into receivable:channel_fees);
 * - the contract's totals for the fee wallet: claimed == settled == booked (`channel_settled`),
 *   and claimed == Σ claimed over the payers' channels (nothing else pays the fee wallet there);
 * - reconciliation's channels difference is 0 (src/ledger/reconcile.ts with channelsProbe).
 * After the final drain (`final`), also: receivable:channel_fees is 0, every channel was claimed
 * in full (claimed == booked) and refunded (its balance on the contract is what was claimed:
 * nothing of the payer's is left in it; the stored copy of a channel drained that way may stay),
 * and the contract paid the fee wallet exactly Σ booked.
 */
async function checkChannels(db: Db, parties: Parties, views: ChannelPayerView[], final: boolean): Promise<{ lost: bigint; problems: string[] }> {
  const problems: string[] = [];
  let lost = 0n;
  for (const v of views) {
    const charged = v.stored ?? v.claimed;
    if (charged !== v.booked) {
      lost += abs(charged - v.booked);
      problems.push(
        `channel payer ${v.address}: its channel was charged ${charged} (${v.stored === undefined ? 'claimed on the contract; the channel left the table' : 'the stored channel'}) ` +
          `but its booked channel payments total ${v.booked} (${v.bookedCalls} calls); difference ${charged - v.booked}`,
      );
    }
    if (v.claimed > v.booked) problems.push(`channel payer ${v.address}: the contract claimed ${v.claimed} from its channel, more than the ${v.booked} booked`);
    if (v.booked > v.balance) problems.push(`channel payer ${v.address}: ${v.booked} booked over its channel, which holds only ${v.balance} on the contract`);
    if (v.channelIds.length > 1) problems.push(`channel payer ${v.address}: ${v.channelIds.length} channels (${v.channelIds.join(', ')}), expected one`);
    if (final) {
      if (v.claimed !== v.booked) problems.push(`channel payer ${v.address}: claimed ${v.claimed} of the ${v.booked} booked`);
      if (v.balance !== v.claimed) {
        problems.push(`channel payer ${v.address}: its channel holds ${v.balance - v.claimed} beyond what was claimed from it (balance ${v.balance}, claimed ${v.claimed}): not drained`);
      }
    }
  }

  const bookedAll = views.reduce((sum, v) => sum + v.booked, 0n);
  const ledgerFees = await kindTotal(db, 'channel_fee', RECEIVABLE_CHANNEL_FEES);
  if (ledgerFees !== bookedAll) {
    lost += abs(ledgerFees - bookedAll);
    problems.push(`channels: the ledger booked ${ledgerFees} of channel fees (channel_fee), the booked channel payments total ${bookedAll}`);
  }
  const totals = await channelTotals(db, parties.rpcUrl);
  if (totals.claimed !== totals.settled || totals.settled !== totals.booked) {
    lost += abs(totals.settled - totals.booked);
    problems.push(`channels: the contract claimed ${totals.claimed} and settled ${totals.settled} for the fee wallet; the ledger booked ${totals.booked} (channel_settled)`);
  }
  const claimedAll = views.reduce((sum, v) => sum + v.claimed, 0n);
  if (claimedAll !== totals.claimed) {
    problems.push(`channels: the payers' channels had ${claimedAll} claimed, the contract's total for the fee wallet is ${totals.claimed}`);
  }
  const receivable = await accountBalance(db, RECEIVABLE_CHANNEL_FEES);
  const probe = (address: Address) => ({ address, usdcBalance: () => usdcBalance(parties.rpcUrl, address) });
  const channels = createChannels({ db, receiver: FEE_WALLET, withdrawDelaySeconds: 86_400, depositCalls: 1, depositMax: 1n });
  const rec = await reconcile(db, {
    escrow: probe(ESCROW_WALLET),
    feeWallet: probe(FEE_WALLET),
    channels: channelsProbe(channels, new ChannelContractReader(parties.rpcUrl), BASE_USDC),
  });
  if (rec.channels!.difference !== 0n) {
    lost += abs(rec.channels!.difference);
    problems.push(`reconciliation (channels): ${jsonOf(rec.channels)}`);
  }
  if (final) {
    if (receivable !== 0n) problems.push(`receivable:channel_fees is ${receivable}, not 0`);
    if (totals.settled !== bookedAll) problems.push(`the contract paid the fee wallet ${totals.settled}, the booked channel payments total ${bookedAll}`);
  }
  return { lost, problems };
}

const jsonOf = (o: unknown) => JSON.stringify(o, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));

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
  /** The channels, when the soak had channel payers. */
  channels?: ChannelFigures;
}

export interface ChannelFigures {
  payers: ChannelPayerView[];
  /** The contract's cumulative totals for the fee wallet, and the ledger's `channel_settled`. */
  claimed: bigint;
  settled: bigint;
  booked: bigint;
  /** receivable:channel_fees: charged and not yet paid into the fee wallet. */
  receivable: bigint;
  /** Channel payments by purpose and status: `purpose status` → count. */
  byPurpose: Record<string, number>;
  /** What the channel contract logged for the payers' channels (and the fee wallet's settlements): events, transactions, atomic USDC. */
  events: Record<'deposits' | 'claims' | 'refunds' | 'settles', { events: number; txs: number; amount: bigint }>;
}

/** The channel contract's Deposited / Claimed / Refunded events of `channelIds`, and its Settled events for the fee wallet. */
async function contractEvents(rpcUrl: string, channelIds: string[]): Promise<ChannelFigures['events']> {
  const client = chainClient(rpcUrl);
  const ids = new Set(channelIds.map((id) => id.toLowerCase()));
  const tally = async (eventName: 'Deposited' | 'Claimed' | 'Refunded' | 'Settled') => {
    const logs = await client.getContractEvents({ address: BATCH_SETTLEMENT_ADDRESS, abi: batchSettlementAbi, eventName, fromBlock: 0n, toBlock: 'latest' });
    const mine = logs.filter((l) => {
      const args = l.args as { channelId?: string; receiver?: string };
      return eventName === 'Settled' ? args.receiver?.toLowerCase() === FEE_WALLET.toLowerCase() : ids.has(String(args.channelId).toLowerCase());
    });
    const amountOf = (l: (typeof mine)[number]) => {
      const a = l.args as { amount?: bigint; claimAmount?: bigint };
      return a.amount ?? a.claimAmount ?? 0n;
    };
    return { events: mine.length, txs: new Set(mine.map((l) => l.transactionHash)).size, amount: mine.reduce((sum, l) => sum + amountOf(l), 0n) };
  };
  return { deposits: await tally('Deposited'), claims: await tally('Claimed'), refunds: await tally('Refunded'), settles: await tally('Settled') };
}

export async function bookFigures(db: Db, channels?: { rpcUrl: string; payers: readonly Payer[] }): Promise<BookFigures> {
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
  const figures: BookFigures = { payments, sweepRefunds: Number(sweep?.n ?? 0), deferredCollected: Number(micro?.n ?? 0), feeBatches: Number(micro?.batches ?? 0), tasks: tasksBy, transfers };
  if (channels && channels.payers.some((p) => p.channel)) {
    const totals = await channelTotals(db, channels.rpcUrl);
    const byPurpose = Object.fromEntries(
      (
        await query<{ k: string; n: string }>(
          db,
          sql`select purpose || ' ' || status as k, count(*)::text as n from payments where channel_id is not null group by 1 order by 1`,
        )
      ).map((r) => [r.k, Number(r.n)]),
    );
    const { views } = await channelPayerViews(db, channels.rpcUrl, channels.payers);
    figures.channels = {
      payers: views,
      events: await contractEvents(channels.rpcUrl, views.flatMap((v) => v.channelIds)),
      claimed: totals.claimed,
      settled: totals.settled,
      booked: totals.booked,
      receivable: await accountBalance(db, RECEIVABLE_CHANNEL_FEES),
      byPurpose,
    };
  }
  return figures;
}
