/**
 * Acceptance: x402 `batch-settlement` channels survive kill -9 of real processes (SIGKILL at a
 * failpoint, src/failpoints.ts), on Postgres, an anvil chain with the channel contracts, and the
 * stock batch-settlement client of @x402/evm:
 *
 * 1. An API process dies right after a voucher's charge was committed on the channel and before
 *    the payment was booked (`payment:after-settle:search_agents`). A worker's recovery sweep takes
 *    the charge back (payment `refunded`, the channel's charged total back to what was booked); the
 *    same client then pays on through a fresh API process; in the end the contract pays the fee
 *    wallet exactly what was booked and the payer is charged exactly that.
 * 2. A worker dies right after each transaction its channel settler sends (`channel:after-claim`,
 *    `channel:after-settle`, `channel:after-refund`): a restarted worker refreshes the channels
 *    from the contract, settles and books each unit exactly once; the payers are charged exactly
 *    the calls served, the fee wallet holds exactly that, nothing stays owed.
 *
 * 1a. An API process dies right after a voucher was verified, its channel reserved, before its
 *    payment was recorded (`payment:after-verify:search_agents`): a worker's channel settler
 *    releases the dead reservation within seconds, not the x402 timeout (300 s), and the client pays on.
 *
 * 3. While a dead call's payment is unresolved its channel takes no other payment (409, nothing
 *    charged): a client that retries before the sweep waits, then pays on; and an API killed before
 *    its voucher's charge committed is resolved `failed`, its charge never "taken back" from a later
 *    call's (both were bugs this test found: a wedged channel; a channel a call short of the books).
 *
 * Every test runs on its own anvil chain and its own scratch database (the contract's cumulative
 * totals for the fee wallet are chain-wide, so one ledger per chain).
 */
import { x402Client } from '@x402/core/client';
import { toClientEvmSigner } from '@x402/evm';
import { BatchSettlementEvmScheme as BatchSettlementClientScheme } from '@x402/evm/batch-settlement/client';
import { wrapFetchWithPayment } from '@x402/fetch';
import { and, eq, isNotNull } from 'drizzle-orm';
import pg from 'pg';
import { createPublicClient, http, type Address, type Hex } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { describe, expect, it } from 'vitest';
import { ANVIL_ACCOUNTS, BASE_NETWORK, BASE_USDC, DEV_ROLES } from '../../src/chain/constants.js';
import { ChannelContractReader } from '../../src/chain/channels.js';
import { mintUsdc, startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { openDatabase, type Database } from '../../src/db/client.js';
import { agents, paymentChannels, payments } from '../../src/db/schema.js';
import { newId } from '../../src/ids.js';
import { RECEIVABLE_CHANNEL_FEES, TREASURY_CALL_FEES } from '../../src/ledger/accounts.js';
import { accountBalance, checkLedger, kindTotal } from '../../src/ledger/ledger.js';
import { reconcile } from '../../src/ledger/reconcile.js';
import { channelsProbe, createChannels } from '../../src/payments/channels/index.js';
import { voucherNonce } from '../../src/payments/channels/vouchers.js';
import { scratchDatabase, serviceEnv, startService, waitFor, type ScratchDatabase, type ServiceProcess } from '../helpers/service-process.js';

const FEE_WALLET = ANVIL_ACCOUNTS[DEV_ROLES.feeTreasury]!.address;
const ESCROW_WALLET = ANVIL_ACCOUNTS[DEV_ROLES.escrow]!.address;
const SEARCH_PRICE = 1000n; // search_agents
const AGENT_PRICE = 2000n; // get_agent
const START = 3_000_000n; // each payer's USDC: room for a deposit of up to $1 and the calls
/** A worker needs the API's public URL; none of these tests dispatches anything. */
const NO_API = 'http://127.0.0.1:9';

// ── one chain + one database per test ───────────────────────────────────────────────────────────

interface Rig {
  chain: DevChain;
  scratch: ScratchDatabase;
  database: Database;
  services: ServiceProcess[];
  reader: ChannelContractReader;
}

/**
 * The tests run two at a time (each on its own chain and database): most of their time is spent
 * waiting for processes to boot and leases to pass, and more at once would starve the service
 * processes of CPU on a small machine.
 */
const PARALLEL = 2;
let running = 0;
const waiting: (() => void)[] = [];
async function slot(): Promise<() => void> {
  if (running >= PARALLEL) await new Promise<void>((resolve) => waiting.push(resolve));
  else running++;
  return () => {
    const next = waiting.shift();
    if (next) next();
    else running--;
  };
}

/** Runs `body` on a fresh anvil chain and a fresh scratch database, and tears both down after. */
async function withRig(prefix: string, body: (r: Rig) => Promise<void>): Promise<void> {
  const release = await slot();
  try {
    const [chain, scratch] = await Promise.all([startDevChain({ silent: true, fundIndices: [] }), scratchDatabase(prefix)]);
    const database = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 3 });
    const r: Rig = { chain, scratch, database, services: [], reader: new ChannelContractReader(chain.rpcUrl) };
    try {
      await body(r);
    } finally {
      await Promise.allSettled(r.services.map((s) => s.kill()));
      await database.close().catch(() => undefined);
      await scratch.drop();
      await chain.stop();
    }
  } finally {
    release();
  }
}

/** A service process; a payment's lease is 2 s (what a dead request leaves behind). */
async function service(r: Rig, extra: Record<string, string>): Promise<ServiceProcess> {
  const s = await startService(serviceEnv(r.scratch.url, r.chain.rpcUrl, { MICRO_FEES_DEFERRED: 'false', PAYMENT_LEASE_MS: '2000', ...extra }));
  r.services.push(s);
  return s;
}

const worker = (r: Rig, extra: Record<string, string>) => service(r, { ROLE: 'worker', PUBLIC_BASE_URL: NO_API, ...extra });

/** Starts a worker that must kill itself at a failpoint (maybe before it says it started): its exit signal. */
async function dyingWorker(r: Rig, extra: Record<string, string>): Promise<string | null> {
  return worker(r, extra).then(
    async (dying) => {
      const exit = await Promise.race([dying.exited, new Promise<null>((resolve) => setTimeout(() => resolve(null), 30_000))]);
      if (!exit) {
        await dying.kill();
        return `still alive 30 s later:\n${dying.output.slice(-15).join('\n')}`;
      }
      return exit.signal ?? `exit code ${exit.code}`;
    },
    (err: Error) => /service exited \((SIGKILL)\)/.exec(err.message)?.[1] ?? err.message,
  );
}

// ── the stock client ────────────────────────────────────────────────────────────────────────────

interface Payer {
  address: Address;
  /** One paid call: its final status, and every HTTP status the client saw on the way (402s included). */
  call(url: string): Promise<{ status: number; trail: number[]; body: string }>;
}

async function newPayer(r: Rig): Promise<Payer> {
  const account = privateKeyToAccount(generatePrivateKey());
  await mintUsdc(r.chain, account.address, START);
  const scheme = new BatchSettlementClientScheme(toClientEvmSigner(account, createPublicClient({ transport: http(r.chain.rpcUrl), cacheTime: 0 })));
  let trail: number[] = [];
  const recording: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    trail.push(res.status);
    return res;
  };
  const pay = wrapFetchWithPayment(recording, new x402Client().register(BASE_NETWORK, scheme));
  return {
    address: account.address,
    call: async (url) => {
      trail = [];
      const res = await pay(url);
      return { status: res.status, trail: [...trail], body: await res.text() };
    },
  };
}

// ── what the books and the chain say ────────────────────────────────────────────────────────────

const balance = (r: Rig, a: Address) => usdcBalance(r.chain.rpcUrl, a);

async function storedChannel(r: Rig, payer: Address) {
  const rows = await r.database.db.select().from(paymentChannels).where(and(eq(paymentChannels.payer, payer.toLowerCase()), isNotNull(paymentChannels.channel)));
  expect(rows.length).toBeLessThanOrEqual(1); // one channel per payer for every fixed-price route
  return rows[0]?.channel ?? undefined;
}

async function storedChannels(r: Rig) {
  return (await r.database.db.select().from(paymentChannels).where(isNotNull(paymentChannels.channel))).map((row) => row.channel!);
}

const rowsOf = (r: Rig, payer: Address) => r.database.db.select().from(payments).where(eq(payments.payerAddress, payer.toLowerCase()));

const sum = (values: bigint[]) => values.reduce((a, b) => a + b, 0n);

/** Reconciliation with the escrow and fee wallets and the channels, as the operator would run it. */
async function books(r: Rig) {
  const probe = (address: Address) => ({ address, usdcBalance: () => balance(r, address) });
  const channels = createChannels({ db: r.database.db, receiver: FEE_WALLET, withdrawDelaySeconds: 86_400, depositCalls: 500, depositMax: 1_000_000n });
  return reconcile(r.database.db, { escrow: probe(ESCROW_WALLET), feeWallet: probe(FEE_WALLET), channels: channelsProbe(channels, r.reader, BASE_USDC) });
}

async function expectBooksBalance(r: Rig) {
  const rec = await books(r);
  expect(rec.ledger).toMatchObject({ ok: true, total: 0n });
  for (const w of rec.wallets) expect({ wallet: w.wallet, difference: w.difference }).toEqual({ wallet: w.wallet, difference: 0n });
  expect(rec.channels!.difference).toBe(0n);
  expect(rec.ok).toBe(true);
  return rec;
}

/** Inserts an agent to look up (GET /v1/agents/:id is a paid read of another purpose). */
async function insertAgent(r: Rig): Promise<string> {
  const id = newId('agent');
  const now = new Date();
  await r.database.db.insert(agents).values({
    id,
    ownerAddress: privateKeyToAccount(generatePrivateKey()).address.toLowerCase(),
    payoutAddress: privateKeyToAccount(generatePrivateKey()).address.toLowerCase(),
    name: 'Lookup',
    baseRate: 1000n,
    createdAt: now,
    updatedAt: now,
  });
  return id;
}

// ── 1. the API dies between a voucher's charge and its booking ─────────────────────────────────

const search = (base: string) => `${base}/v1/agents?query=x`;

describe.concurrent('kill -9 of an API process after a voucher was charged, before it was booked', () => {
  it('the sweep takes the charge back, the same client pays on, and the fee wallet gets exactly what was booked', { timeout: 300_000 }, () =>
    withRig('chkill_api', async (r) => {
      const payer = await newPayer(r);

      // An API that dies right after the settle of a search_agents payment (and only that purpose).
      const dying = await service(r, { ROLE: 'api', FAILPOINTS: 'payment:after-settle:search_agents' }); // migrates the database
      const agentId = await insertAgent(r);
      const profile = (base: string) => `${base}/v1/agents/${agentId}`;
      const receivableBefore = await accountBalance(r.database.db, RECEIVABLE_CHANNEL_FEES);

      // The deposit (on chain) with a first get_agent call, then a voucher on the same channel.
      const first = await payer.call(profile(dying.baseUrl));
      expect(first.status, first.body).toBe(200);
      const deposited = START - (await balance(r, payer.address));
      expect(deposited).toBeGreaterThanOrEqual(AGENT_PRICE);
      expect((await payer.call(profile(dying.baseUrl))).status).toBe(200);
      const channel = (await storedChannel(r, payer.address))!;
      expect(channel.chargedCumulativeAmount).toBe((2n * AGENT_PRICE).toString());
      const channelId = channel.channelId as Hex;

      // A search over the same channel (a voucher only) kills the process after the charge.
      await expect(payer.call(search(dying.baseUrl))).rejects.toThrow();
      expect((await dying.exited).signal).toBe('SIGKILL');

      // Charged on the channel, the payment stranded `settling`, nothing booked for it: the books are off by exactly that call.
      const stranded = (await rowsOf(r, payer.address)).filter((row) => row.purpose === 'search_agents');
      expect(stranded).toHaveLength(1);
      expect(stranded[0]).toMatchObject({ status: 'settling', channelId, amount: SEARCH_PRICE });
      expect((await storedChannel(r, payer.address))!.chargedCumulativeAmount).toBe((2n * AGENT_PRICE + SEARCH_PRICE).toString());
      expect((await accountBalance(r.database.db, RECEIVABLE_CHANNEL_FEES)) - receivableBefore).toBe(2n * AGENT_PRICE);
      const off = await books(r);
      expect(off.channels!.difference).toBe(SEARCH_PRICE);
      expect(off.ok).toBe(false);

      // A worker's recovery sweep takes the charge back once the dead request's lease is over.
      const sweeper = await worker(r, { PAYMENT_RECOVERY_INTERVAL_MS: '200', CHANNEL_SETTLE_INTERVAL_MS: '200' });
      const refunded = await waitFor(
        'the stranded channel payment to be refunded and its charge taken back',
        async () => {
          const [row] = await r.database.db.select().from(payments).where(eq(payments.id, stranded[0]!.id));
          const stored = await storedChannel(r, payer.address);
          return row?.status === 'refunded' && stored?.chargedCumulativeAmount === (2n * AGENT_PRICE).toString() && row;
        },
        30_000,
      );
      expect(refunded.txHash).toBeNull(); // nothing moved on chain: the charge was taken back on the channel
      // Nothing was claimed meanwhile (a channel with an unresolved payment is held; the thresholds are far anyway).
      expect((await r.reader.channels([channelId]))[0]).toEqual({ balance: deposited, totalClaimed: 0n });
      expect((await accountBalance(r.database.db, RECEIVABLE_CHANNEL_FEES)) - receivableBefore).toBe(2n * AGENT_PRICE);
      await expectBooksBalance(r);

      // The same client pays on through a fresh API process, on both routes, without a new deposit.
      const api = await service(r, { ROLE: 'api' });
      const trails: number[][] = [];
      for (const url of [search(api.baseUrl), search(api.baseUrl), profile(api.baseUrl), search(api.baseUrl)]) {
        const res = await payer.call(url);
        expect(res.status, res.body).toBe(200);
        trails.push(res.trail);
      }
      // The client never learnt of the charge taken back (its request died), so its next voucher already
      // matches the channel: a challenge and a paid answer each time, no corrective 402.
      expect(trails).toEqual(Array(4).fill([402, 200]));
      expect(START - (await balance(r, payer.address))).toBe(deposited);

      // The refunded voucher's cumulative amount was signed again and booked: a refunded row and a booked row share it.
      const rows = await rowsOf(r, payer.address);
      expect(rows.filter((row) => row.authorizationNonce === refunded.authorizationNonce).map((row) => row.status).sort()).toEqual(['booked', 'refunded']);
      expect(rows.filter((row) => row.status !== 'booked').map((row) => row.id)).toEqual([refunded.id]);
      const booked = rows.filter((row) => row.status === 'booked');
      expect(booked.map((row) => row.purpose).sort()).toEqual(['get_agent', 'get_agent', 'get_agent', 'search_agents', 'search_agents', 'search_agents']);
      const bookedTotal = sum(booked.map((row) => row.amount));
      expect(bookedTotal).toBe(3n * AGENT_PRICE + 3n * SEARCH_PRICE);

      // booked calls × price == the channel's charged total == what the ledger says the channel owes.
      expect(BigInt((await storedChannel(r, payer.address))!.chargedCumulativeAmount)).toBe(bookedTotal);
      expect((await accountBalance(r.database.db, RECEIVABLE_CHANNEL_FEES)) - receivableBefore).toBe(bookedTotal);
      const mid = await expectBooksBalance(r);
      expect(mid.channels).toMatchObject({ channels: 1, ledger: receivableBefore + bookedTotal, onChain: receivableBefore + bookedTotal, unbooked: 0n });

      // To the end: a worker claims, settles and refunds the idle channel. The fee wallet gets exactly
      // what was booked; the payer gets everything else back.
      await api.stop();
      await sweeper.stop();
      const feeBefore = await balance(r, FEE_WALLET);
      const closer = await worker(r, { CHANNEL_SETTLE_INTERVAL_MS: '200', CHANNEL_CLAIM_THRESHOLD: '1000', CHANNEL_IDLE_REFUND_SECONDS: '1' });
      await waitFor(
        'the channel to be claimed, settled, booked and refunded',
        async () => (await storedChannels(r)).length === 0 && (await accountBalance(r.database.db, RECEIVABLE_CHANNEL_FEES)) === receivableBefore,
        30_000,
      );
      await closer.stop();
      expect((await balance(r, FEE_WALLET)) - feeBefore).toBe(bookedTotal);
      expect(await balance(r, payer.address)).toBe(START - bookedTotal);
      expect((await r.reader.channels([channelId]))[0]).toEqual({ balance: bookedTotal, totalClaimed: bookedTotal });
      expect(await r.reader.receiver(FEE_WALLET, BASE_USDC)).toEqual({ totalClaimed: bookedTotal, totalSettled: bookedTotal });
      expect(await kindTotal(r.database.db, 'channel_settled', TREASURY_CALL_FEES)).toBe(bookedTotal);
      expect(await checkLedger(r.database.db)).toMatchObject({ ok: true, total: 0n });
      await expectBooksBalance(r);
    }),
  );

  /**
   * The client retries at once, before the sweep. While the dead call's payment is unresolved the
   * channel takes no other payment (409, retryable, nothing charged), so the dead call's charge is
   * the last one on the channel when the sweep takes it back; then the client pays on. (Before that
   * rule, the retry was charged on top of the dead call, the sweep took the dead charge back below
   * the retry's voucher, and the channel refused that voucher for good as replayed.)
   */
  it('a client that retries before the sweep is told to wait, then pays on: the books stay exact', { timeout: 300_000 }, () =>
    withRig('chkill_retry', async (r) => {
      const payer = await newPayer(r);
      const dying = await service(r, { ROLE: 'api', FAILPOINTS: 'payment:after-settle:search_agents' });
      const agentId = await insertAgent(r);
      const profile = (base: string) => `${base}/v1/agents/${agentId}`;

      expect((await payer.call(profile(dying.baseUrl))).status).toBe(200); // the deposit, charged 2000
      await expect(payer.call(search(dying.baseUrl))).rejects.toThrow(); // charged 3000, dies
      expect((await dying.exited).signal).toBe('SIGKILL');
      const [stranded] = (await rowsOf(r, payer.address)).filter((row) => row.status === 'settling');
      expect(stranded).toMatchObject({ purpose: 'search_agents', amount: SEARCH_PRICE });

      // Retries through another API process before any sweep: refused, nothing charged.
      const api = await service(r, { ROLE: 'api' });
      for (const url of [search(api.baseUrl), profile(api.baseUrl)]) {
        const early = await payer.call(url);
        expect(early.status, early.body).toBe(409);
        const error = (JSON.parse(early.body) as { error: { code: string; details: { payment_id: string; retry_after_seconds: number } } }).error;
        expect(error).toMatchObject({ code: 'state_conflict', details: { payment_id: stranded!.id } });
        expect(error.details.retry_after_seconds).toBeGreaterThan(0);
      }
      expect((await storedChannel(r, payer.address))!.chargedCumulativeAmount).toBe((AGENT_PRICE + SEARCH_PRICE).toString());
      expect((await rowsOf(r, payer.address)).map((row) => row.status).sort()).toEqual(['booked', 'settling']);

      // The sweep takes the dead call's charge back and frees the channel.
      const sweeper = await worker(r, { PAYMENT_RECOVERY_INTERVAL_MS: '200', CHANNEL_SETTLE_INTERVAL_MS: '200' });
      await waitFor('the stranded payment to be refunded', async () => {
        const [row] = await r.database.db.select().from(payments).where(eq(payments.id, stranded!.id));
        return row?.status === 'refunded';
      });
      expect(BigInt((await storedChannel(r, payer.address))!.chargedCumulativeAmount)).toBe(AGENT_PRICE);
      expect((await storedChannel(r, payer.address))!.pendingRequest).toBeUndefined();

      // The same client pays on, searches included (the voucher the dead call signed is signed again and taken).
      for (let i = 0; i < 3; i++) {
        const paid = await payer.call(search(api.baseUrl));
        expect(paid.status, paid.body).toBe(200);
      }
      expect((await payer.call(profile(api.baseUrl))).status).toBe(200);
      const booked = sum((await rowsOf(r, payer.address)).filter((row) => row.status === 'booked').map((row) => row.amount));
      expect(booked).toBe(2n * AGENT_PRICE + 3n * SEARCH_PRICE);
      expect(BigInt((await storedChannel(r, payer.address))!.chargedCumulativeAmount)).toBe(booked);
      // The dead call's voucher was refunded, then signed again and booked: one refunded and one booked row share its nonce.
      const nonce = voucherNonce(stranded!.channelId as Hex, AGENT_PRICE + SEARCH_PRICE);
      expect((await rowsOf(r, payer.address)).filter((row) => row.authorizationNonce === nonce).map((row) => row.status).sort()).toEqual(['booked', 'refunded']);
      await sweeper.stop();
      await expectBooksBalance(r);
    }),
  );
});

// ── 1a. the API dies after a voucher was verified (its channel reserved), before its payment was recorded ──

describe.concurrent('kill -9 of an API process after a voucher was verified, before its payment was recorded', () => {
  it('a worker releases the dead request’s reservation: the channel is not busy for the x402 timeout, nothing was charged', { timeout: 300_000 }, () =>
    withRig('chkill_reserved', async (r) => {
      const payer = await newPayer(r);
      const dying = await service(r, { ROLE: 'api', FAILPOINTS: 'payment:after-verify:search_agents' });
      const agentId = await insertAgent(r);
      const profile = (base: string) => `${base}/v1/agents/${agentId}`;
      expect((await payer.call(profile(dying.baseUrl))).status).toBe(200); // the deposit, charged 2000
      await expect(payer.call(search(dying.baseUrl))).rejects.toThrow(); // reserved, then dies
      expect((await dying.exited).signal).toBe('SIGKILL');
      // Nothing recorded, nothing charged; the channel reserved for the default x402 timeout (300 s).
      expect((await rowsOf(r, payer.address)).map((row) => row.status)).toEqual(['booked']);
      const reserved = (await storedChannel(r, payer.address))!;
      expect(reserved.chargedCumulativeAmount).toBe(AGENT_PRICE.toString());
      expect(reserved.pendingRequest!.expiresAt).toBeGreaterThan(Date.now() + 200_000);

      // Another API process answers "busy" while the reservation stands; nothing is charged.
      const api = await service(r, { ROLE: 'api' });
      const busy = await payer.call(search(api.baseUrl));
      expect(busy.status, busy.body).toBe(402);
      expect(busy.body).toContain('channel_busy');

      // A worker's channel settler finds the reservation dead (no payment recorded on the channel) and releases it.
      const sweeper = await worker(r, { CHANNEL_SETTLE_INTERVAL_MS: '200' });
      await waitFor('the dead reservation to be released', async () => (await storedChannel(r, payer.address))!.pendingRequest === undefined, 60_000);
      expect(Date.now()).toBeLessThan(reserved.pendingRequest!.expiresAt - 200_000); // long before it would have expired

      // The same client pays on; the books hold exactly the calls served.
      for (let i = 0; i < 2; i++) {
        const paid = await payer.call(search(api.baseUrl));
        expect(paid.status, paid.body).toBe(200);
      }
      const booked = sum((await rowsOf(r, payer.address)).filter((row) => row.status === 'booked').map((row) => row.amount));
      expect(booked).toBe(AGENT_PRICE + 2n * SEARCH_PRICE);
      expect(BigInt((await storedChannel(r, payer.address))!.chargedCumulativeAmount)).toBe(booked);
      await sweeper.stop();
      await expectBooksBalance(r);
    }),
  );
});

/**
 * Holds every charge on a channel: a trigger on payment_channels (created in the rig's scratch
 * database only) makes an update that raises a channel's charged total wait for an advisory lock
 * held here, inside the charging transaction (which holds the channel's row lock meanwhile).
 */
async function holdCharges(r: Rig) {
  const holder = new pg.Client({ connectionString: r.scratch.url });
  await holder.connect();
  await holder.query(`create function hold_charges() returns trigger language plpgsql as $$ begin
    if (new.channel->>'chargedCumulativeAmount')::numeric > (old.channel->>'chargedCumulativeAmount')::numeric then
      perform pg_advisory_xact_lock(727001);
    end if;
    return new;
  end $$`);
  await holder.query('create trigger hold_charges before update on payment_channels for each row when (old.channel is not null and new.channel is not null) execute function hold_charges()');
  await holder.query('select pg_advisory_lock(727001)');
  const release = () => holder.query('select pg_advisory_unlock_all()').catch(() => undefined);
  return {
    /** Until the payer's payment is settling and its charge waits for the lock. */
    waitForCharge: async (payer: Address) => {
      await waitFor('the payment to be settling', async () => (await rowsOf(r, payer)).some((row) => row.status === 'settling'));
      await waitFor('its charge to wait for the lock', async () => {
        const { rows } = await holder.query<{ n: number }>(
          "select count(*)::int as n from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and wait_event = 'advisory'",
        );
        return rows[0]!.n === 1;
      });
    },
    release,
    end: async () => {
      await release();
      await holder.query('drop trigger if exists hold_charges on payment_channels').catch(() => undefined);
      await holder.end();
    },
  };
}

// ── 1b. the API dies after its payment became `settling`, before the voucher's charge committed ──

describe.concurrent('kill -9 of an API process before a voucher was charged', () => {
  /**
   * The API dies after its payment became `settling`, before the voucher's charge committed. Once
   * the dead request's reservation of the channel expired, a call of a higher price must not be
   * charged on top while the dead payment is unresolved: if it were, the channel's charged total
   * would pass the dead voucher's amount and the sweep would take back a charge that never happened
   * (the channel a call short of the books). It is refused (409) until the sweep resolves the dead
   * payment as `failed`; then it is charged, and the charged total equals the booked total.
   *
   * No failpoint sits between `settling` and the charge, so the test holds the charge itself: a
   * trigger on payment_channels (created in this test's scratch database only) makes any update that
   * raises a channel's charged total wait for an advisory lock the test holds; the API is killed
   * while its charge waits, and its transaction dies uncommitted.
   */
  /**
   * Not a kill: a request's charge stalls past its payment's lease (held by the trigger), so the
   * recovery sweep resolves its payment while the request is still on its way. The sweep's answer
   * ("was it charged?") and its end of the channel's reservation are one step under the channel's
   * row lock: it waits for the stalled charge, sees it, and takes it back. (Reading first and
   * failing the payment left the charge, committed after, on a failed payment: the channel charged
   * a call the books never got.)
   */
  it('a charge that stalls past its payment’s lease is taken back by the sweep, never left on a failed payment', { timeout: 300_000 }, () =>
    withRig('chkill_stall', async (r) => {
      const payer = await newPayer(r);
      const api = await service(r, { ROLE: 'api' }); // payment lease 2 s
      const agentId = await insertAgent(r);
      expect((await payer.call(`${api.baseUrl}/v1/agents/${agentId}`)).status).toBe(200); // the deposit, charged 2000
      const sweeper = await worker(r, { PAYMENT_RECOVERY_INTERVAL_MS: '200', CHANNEL_SETTLE_INTERVAL_MS: '200' });
      const held = await holdCharges(r);
      let answer: { status: number; body: string } | undefined;
      try {
        const stalled = payer.call(search(api.baseUrl)).then((a) => (answer = a));
        await held.waitForCharge(payer.address);
        await new Promise((resolve) => setTimeout(resolve, 4000)); // the lease (2 s) is over; the sweep is at it
        await held.release();
        await stalled;
      } finally {
        await held.end();
      }
      const [row] = (await rowsOf(r, payer.address)).filter((p) => p.purpose === 'search_agents');
      const resolved = await waitFor('the stalled payment to be resolved', async () => {
        const [now] = await r.database.db.select().from(payments).where(eq(payments.id, row!.id));
        return now && now.status !== 'settling' && now.status !== 'verified' && now;
      });
      // Served and booked, or refunded with its charge taken back: either way the channel is charged exactly what was booked.
      expect(answer!.status === 200 ? 'booked' : 'refunded', answer!.body).toBe(resolved.status);
      const booked = sum((await rowsOf(r, payer.address)).filter((p) => p.status === 'booked').map((p) => p.amount));
      expect(BigInt((await storedChannel(r, payer.address))!.chargedCumulativeAmount)).toBe(booked);
      // The same client pays on.
      const next = await payer.call(search(api.baseUrl));
      expect(next.status, next.body).toBe(200);
      const bookedAfter = sum((await rowsOf(r, payer.address)).filter((p) => p.status === 'booked').map((p) => p.amount));
      expect(BigInt((await storedChannel(r, payer.address))!.chargedCumulativeAmount)).toBe(bookedAfter);
      await sweeper.stop();
      await expectBooksBalance(r);
    }),
  );

  it('a higher-priced call waits for the dead payment to be resolved: failed, never taken back, the books exact', { timeout: 300_000 }, () =>
    withRig('chkill_precharge', async (r) => {
      const payer = await newPayer(r);
      // A short x402 timeout: the scheme's reservation of the channel by a request lasts 10 s.
      const apiEnv = { ROLE: 'api', X402_MAX_TIMEOUT_SECONDS: '10' };
      const first = await service(r, apiEnv);
      const agentId = await insertAgent(r);
      const profile = (base: string) => `${base}/v1/agents/${agentId}`;
      expect((await payer.call(profile(first.baseUrl))).status).toBe(200); // the deposit, charged 2000

      const held = await holdCharges(r);
      try {
        const dying = payer.call(search(first.baseUrl)).then(
          () => 'answered',
          () => 'failed',
        );
        await held.waitForCharge(payer.address);
        await first.kill();
        expect(await dying).toBe('failed');
      } finally {
        await held.end();
      }
      // Never charged: the stranded payment is `settling`, the channel still at the deposit call, reserved by the dead request.
      const [stranded] = (await rowsOf(r, payer.address)).filter((row) => row.status === 'settling');
      expect(stranded).toMatchObject({ purpose: 'search_agents', amount: SEARCH_PRICE });
      const reserved = (await storedChannel(r, payer.address))!;
      expect(reserved.chargedCumulativeAmount).toBe(AGENT_PRICE.toString());
      expect(reserved.pendingRequest).toBeDefined();

      // Once the dead request's reservation expired (the channel answers "busy" until then), a get_agent call (2000) is refused while the dead payment is unresolved.
      const api = await service(r, apiEnv);
      await waitFor('the dead request’s reservation to expire', async () => ((await storedChannel(r, payer.address))!.pendingRequest?.expiresAt ?? 0) < Date.now() - 200, 20_000);
      const refused = await payer.call(profile(api.baseUrl));
      expect(refused.status, refused.body).toBe(409);
      expect((JSON.parse(refused.body) as { error: { code: string } }).error.code).toBe('state_conflict');
      expect((await storedChannel(r, payer.address))!.chargedCumulativeAmount).toBe(AGENT_PRICE.toString());

      // The sweep resolves the dead payment: never charged, so failed, and nothing taken back.
      const sweeper = await worker(r, { PAYMENT_RECOVERY_INTERVAL_MS: '200', CHANNEL_SETTLE_INTERVAL_MS: '200' });
      const resolved = await waitFor('the stranded payment to be resolved', async () => {
        const [row] = await r.database.db.select().from(payments).where(eq(payments.id, stranded!.id));
        return row && row.status !== 'settling' && row;
      });
      expect(resolved.status).toBe('failed');
      expect((await storedChannel(r, payer.address))!.chargedCumulativeAmount).toBe(AGENT_PRICE.toString());

      // Now the higher-priced call, and a search, are charged and booked.
      const paid = await payer.call(profile(api.baseUrl));
      expect(paid.status, paid.body).toBe(200);
      expect((await payer.call(search(api.baseUrl))).status).toBe(200);
      await sweeper.stop();
      const booked = sum((await rowsOf(r, payer.address)).filter((row) => row.status === 'booked').map((row) => row.amount));
      expect(booked).toBe(2n * AGENT_PRICE + SEARCH_PRICE);
      expect(BigInt((await storedChannel(r, payer.address))!.chargedCumulativeAmount)).toBe(booked);
      const rec = await books(r);
      expect(rec.channels!.difference).toBe(0n);
      expect(rec.ok).toBe(true);
    }),
  );
});

// ── 2. the worker dies after each transaction of the channel settler ───────────────────────────

type Point = 'channel:after-claim' | 'channel:after-settle' | 'channel:after-refund';

describe.concurrent('kill -9 of a worker after each transaction of the channel settler', () => {
  it.for<Point>(['channel:after-claim', 'channel:after-settle', 'channel:after-refund'])(
    '%s: a restarted worker settles and books every call once, payers charged exactly what was served',
    { timeout: 300_000 },
    (point) =>
      withRig('chkill_wrk', async (r) => {
        const refunding = point === 'channel:after-refund';
        const CALLS = 5n;
        const served = CALLS * SEARCH_PRICE;
        const payers = await Promise.all([newPayer(r), newPayer(r)]);

        const api = await service(r, { ROLE: 'api' });
        const receivableBefore = await accountBalance(r.database.db, RECEIVABLE_CHANNEL_FEES);
        const feeBefore = await balance(r, FEE_WALLET);
        await Promise.all(
          payers.map(async (payer) => {
            for (let i = 0n; i < CALLS; i++) {
              const res = await payer.call(search(api.baseUrl));
              expect(res.status, res.body).toBe(200);
            }
          }),
        );
        await api.stop();
        const deposits = new Map<Address, bigint>();
        const ids: Hex[] = [];
        for (const payer of payers) {
          deposits.set(payer.address, START - (await balance(r, payer.address)));
          const stored = (await storedChannel(r, payer.address))!;
          expect(stored.chargedCumulativeAmount).toBe(served.toString());
          ids.push(stored.channelId as Hex);
          expect((await rowsOf(r, payer.address)).map((row) => row.status)).toEqual(Array(Number(CALLS)).fill('booked'));
        }
        expect((await accountBalance(r.database.db, RECEIVABLE_CHANNEL_FEES)) - receivableBefore).toBe(2n * served);
        await expectBooksBalance(r);

        // Act at once: claim past 1000 unclaimed, every 200 ms. For the refund, claim nothing before (the
        // refund's own transaction then claims the last voucher) and refund after 1 s idle.
        const settings = {
          CHANNEL_SETTLE_INTERVAL_MS: '200',
          CHANNEL_CLAIM_THRESHOLD: refunding ? '1000000000000' : '1000',
          ...(refunding ? { CHANNEL_IDLE_REFUND_SECONDS: '1' } : {}),
        };
        if (refunding) await new Promise((resolve) => setTimeout(resolve, 1200)); // idle > 1 s
        expect(await dyingWorker(r, { ...settings, FAILPOINTS: point })).toBe('SIGKILL');

        // What the dead run left: the chain moved, the database did not follow.
        const onchain = await r.reader.channels(ids);
        const totals = await r.reader.receiver(FEE_WALLET, BASE_USDC);
        expect(await accountBalance(r.database.db, RECEIVABLE_CHANNEL_FEES)).toBe(receivableBefore + 2n * served); // nothing booked
        expect(await kindTotal(r.database.db, 'channel_settled', TREASURY_CALL_FEES)).toBe(0n);
        const stale = await storedChannels(r);
        expect(stale).toHaveLength(2);
        if (point === 'channel:after-claim') {
          // One claim transaction for both channels; the stored copies still say nothing was claimed.
          expect(onchain).toEqual(payers.map((p) => ({ balance: deposits.get(p.address)!, totalClaimed: served })));
          expect(totals).toEqual({ totalClaimed: 2n * served, totalSettled: 0n });
          expect(stale.map((c) => c.totalClaimed)).toEqual(['0', '0']);
          expect(await balance(r, FEE_WALLET)).toBe(feeBefore);
        } else if (point === 'channel:after-settle') {
          // Claimed (and stored as claimed), paid into the fee wallet, not booked: the fee wallet is ahead of its books by that much.
          expect(totals).toEqual({ totalClaimed: 2n * served, totalSettled: 2n * served });
          expect(stale.map((c) => c.totalClaimed)).toEqual([served.toString(), served.toString()]);
          expect((await balance(r, FEE_WALLET)) - feeBefore).toBe(2n * served);
          const rec = await books(r);
          expect(rec.wallets.find((w) => w.wallet === 'fee')!.difference).toBe(2n * served);
          expect(rec.channels).toMatchObject({ difference: 0n, unbooked: 2n * served });
          expect(rec.ok).toBe(false);
        } else {
          // One channel refunded (its last voucher claimed and the rest paid back, in one transaction), then death: the other untouched.
          const done = payers.filter((_, i) => onchain[i]!.totalClaimed > 0n);
          expect(done).toHaveLength(1);
          const [refundedPayer] = done;
          const other = payers.find((p) => p !== refundedPayer)!;
          expect(onchain[payers.indexOf(refundedPayer!)]).toEqual({ balance: served, totalClaimed: served });
          expect(onchain[payers.indexOf(other)]).toEqual({ balance: deposits.get(other.address)!, totalClaimed: 0n });
          expect(await balance(r, refundedPayer!.address)).toBe(START - served);
          expect(await balance(r, other.address)).toBe(START - deposits.get(other.address)!);
          expect(totals).toEqual({ totalClaimed: served, totalSettled: 0n });
          expect(stale.map((c) => c.totalClaimed)).toEqual(['0', '0']);
        }
        // Whatever the crash point, what the channels owe still reconciles (unclaimed + claimed unsettled + settled unbooked).
        expect((await books(r)).channels!.difference).toBe(0n);

        // A restarted worker, no failpoints: it refreshes from the contract, settles, books, refunds what is idle.
        const restarted = await worker(r, settings);
        await waitFor(
          'nothing to be owed by the channels',
          async () => {
            const owed = await accountBalance(r.database.db, RECEIVABLE_CHANNEL_FEES);
            const stored = await storedChannels(r);
            const { totalSettled } = await r.reader.receiver(FEE_WALLET, BASE_USDC);
            const synced = stored.every((c) => c.totalClaimed === c.chargedCumulativeAmount);
            return owed === receivableBefore && totalSettled === 2n * served && synced && (!refunding || stored.length === 0);
          },
          30_000,
        );
        // More runs must change nothing (no second booking, no second payout).
        await new Promise((resolve) => setTimeout(resolve, 800));
        await restarted.stop();

        expect(await accountBalance(r.database.db, RECEIVABLE_CHANNEL_FEES)).toBe(receivableBefore);
        expect((await balance(r, FEE_WALLET)) - feeBefore).toBe(2n * served);
        expect(await r.reader.receiver(FEE_WALLET, BASE_USDC)).toEqual({ totalClaimed: 2n * served, totalSettled: 2n * served });
        expect(await kindTotal(r.database.db, 'channel_settled', TREASURY_CALL_FEES)).toBe(2n * served);
        expect(await accountBalance(r.database.db, TREASURY_CALL_FEES)).toBe(2n * served);

        const after = await r.reader.channels(ids);
        for (const [i, payer] of payers.entries()) {
          const truth = after[i]!;
          expect(truth.totalClaimed).toBe(served);
          const stored = await storedChannel(r, payer.address);
          if (refunding) {
            // Refunded: drained on the contract, gone from storage, the rest back with the payer.
            expect(stored).toBeUndefined();
            expect(truth).toEqual({ balance: served, totalClaimed: served });
            expect(await balance(r, payer.address)).toBe(START - served);
          } else {
            // Still open: the stored copy is the contract's, and what is left in it is the payer's.
            expect(stored).toBeDefined();
            expect({ balance: stored!.balance, totalClaimed: stored!.totalClaimed, charged: stored!.chargedCumulativeAmount }).toEqual({
              balance: truth.balance.toString(),
              totalClaimed: truth.totalClaimed.toString(),
              charged: served.toString(),
            });
            expect(truth.balance).toBe(deposits.get(payer.address)!);
            expect((await balance(r, payer.address)) + (truth.balance - truth.totalClaimed)).toBe(START - served);
          }
          expect((await rowsOf(r, payer.address)).map((row) => row.status)).toEqual(Array(Number(CALLS)).fill('booked'));
        }
        expect((await r.database.db.select().from(payments)).filter((row) => row.status !== 'booked')).toEqual([]);
        expect(await checkLedger(r.database.db)).toMatchObject({ ok: true, total: 0n });
        await expectBooksBalance(r);
      }),
  );
});
