/**
 * The send level: the operator's sends alone, without HTTP, x402 or the payment rows, so that the
 * three ways of choosing a nonce are compared like for like. Every option sends USDC `transfer`s
 * (send i: i + 1 atomic units, so no two transactions are alike, to one fresh address) from fresh
 * keys (ETH by anvil_setBalance, test USDC minted), round-robin over two "processes" (two viem
 * clients in this process, each with its own HTTP transport and, for the lane, its own Postgres
 * pool), `concurrency` in flight in all:
 *
 * - counters: one key, each process with its own viem nonce manager (`createNonceManager({source:
 *   jsonRpc()})`) and `writeContract`, as the facilitator sent before the lane;
 * - lane ×1 / lane: one key, one or two `SendLane`s (src/chain/nonces.ts) on one or two `openDatabase`
 *   pools, the facilitator's split: pending count and `prepareTransactionRequest` (fees, gas) before
 *   the turn, sign + `eth_sendRawTransaction` in it;
 * - key pool: two keys, one per process, each with its own nonce manager;
 * - key pool + lane: two keys, each process a lane of its own (what API processes with different
 *   OPERATOR_PRIVATE_KEYs do: each wallet's row, no waiting on the other).
 *
 * A send succeeds when the node took it and it was then mined without revert. The lane's turns are
 * timed from outside: the Db handed to a SendLane is wrapped so that the moment its transaction
 * calls `update` (right after `select … for update` returned: the row lock is held from there) and
 * the moment the transaction resolves (COMMIT done: the lock is released) are recorded, and the
 * send callback records its own start and end (sign + broadcast).
 */
import {
  createNonceManager,
  createWalletClient,
  encodeFunctionData,
  http,
  publicActions,
  type Hash,
  type Hex,
} from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { base } from 'viem/chains';
import { jsonRpc } from 'viem/nonce';
import { BASE_USDC } from '../../src/chain/constants.js';
import { mintUsdc, type DevChain } from '../../src/chain/dev/devchain.js';
import type { DevClient } from '../../src/chain/dev/client.js';
import { SendLane } from '../../src/chain/nonces.js';
import { usdcAbi } from '../../src/chain/usdc.js';
import { openDatabase, type Database, type Db } from '../../src/db/client.js';
import { freshAddress } from '../lib.js';
import type { LockFigures, LockSampler } from './lock-sampler.js';
import { CALL_TIMEOUT_MS, SENDER_ETH_WEI, SENDER_USDC, WARMUP_SENDS } from './settings.js';
import { errorKey, inFlight, percentile, tally, unionMs, type RunFigures } from './stats.js';

export const SEND_OPTIONS = ['counters', 'lane ×1', 'lane', 'key pool', 'key pool + lane'] as const;
export type SendOption = (typeof SEND_OPTIONS)[number];

export const SEND_OPTION_TEXT: Record<SendOption, string> = {
  counters: '(a) one key, 2 processes, a viem nonce manager each',
  'lane ×1': '(b) one key, 1 process, SendLane',
  lane: '(b) one key, 2 processes, a SendLane each on its own pool',
  'key pool': '(c) 2 keys, one per process, a viem nonce manager each',
  'key pool + lane': '(c) 2 keys, one per process, a SendLane each',
};

/** One turn of a lane, in performance.now() ms. */
export interface Turn {
  wallet: string;
  /** lane.send called (the send is queued in memory, then waits for the row). */
  queued: number;
  /** The transaction's `update` call: `select … for update` returned, the row lock is held. */
  locked: number;
  cbStart: number;
  cbEnd: number;
  /** The transaction resolved: COMMIT done, the lock released. */
  committed: number;
}

export interface SendRun {
  option: SendOption;
  figures: RunFigures;
  turns: Turn[];
  /** Window start and end (performance.now() ms), for the lock's busy share. */
  window: [number, number];
  /** The same window seen by the pg_stat_activity sampler (lane options), to check it against the turns. */
  lock?: LockFigures;
}

export interface SendEnv {
  chain: DevChain;
  dev: DevClient;
  databaseUrl: string;
  sends: number;
  /** No send starts after this many seconds of the measured window. */
  maxSeconds: number;
  concurrency: number;
  lockSampler?: LockSampler;
}

/** Sends transfer number i. */
type Sender = (i: number) => Promise<Hash>;

/** A "process": sends one transaction, and closes what it opened. */
interface Proc {
  send: Sender;
  close(): Promise<void>;
}

const recipient = freshAddress();
/**
 * Send i transfers i + 1 atomic units: every transaction differs, as every settlement does (two
 * identical ones on one nonce would be one transaction, "already imported", not a collision).
 */
const amountOf = (i: number): bigint => BigInt(i + 1);

async function freshSender(env: SendEnv): Promise<Hex> {
  const key = generatePrivateKey();
  const address = privateKeyToAccount(key).address;
  await env.dev.setBalance({ address, value: SENDER_ETH_WEI });
  await mintUsdc(env.chain, address, SENDER_USDC);
  return key;
}

/** The old facilitator's client: its own nonce manager, `writeContract`. */
function counterProc(rpcUrl: string, key: Hex): Proc {
  const client = createWalletClient({
    account: privateKeyToAccount(key, { nonceManager: createNonceManager({ source: jsonRpc() }) }),
    chain: base,
    transport: http(rpcUrl),
  }).extend(publicActions);
  return {
    send: (i) => client.writeContract({ address: BASE_USDC, abi: usdcAbi, functionName: 'transfer', args: [recipient, amountOf(i)] }),
    close: async () => undefined,
  };
}

/**
 * `db` whose transactions are timed as turns: each takes the next `queued` time of its lane (a lane
 * runs its sends' transactions one at a time, in the order `lane.send` was called), records when it
 * calls `update` (`select … for update` has returned: the row lock is held) and when it resolved
 * (COMMIT done: the lock is released); the send callback fills in its own start and end through
 * `slot`. Only turns whose transaction committed are kept.
 */
function timedDb(db: Db, wallet: string, queued: number[], slot: { turn?: Partial<Turn> }, turns: Turn[]): Db {
  return new Proxy(db, {
    get(target, prop, receiver) {
      if (prop !== 'transaction') return Reflect.get(target, prop, receiver) as unknown;
      return async (fn: (tx: unknown) => Promise<unknown>, config?: unknown) => {
        const turn: Partial<Turn> = { wallet, queued: queued.shift() ?? performance.now() };
        slot.turn = turn;
        const timedTx = (tx: object) =>
          new Proxy(tx, {
            get(t, p) {
              if (p === 'update' && turn.locked === undefined) turn.locked = performance.now();
              const v = Reflect.get(t, p, t) as unknown;
              return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
            },
          });
        const run = target.transaction.bind(target) as (f: (tx: object) => Promise<unknown>, c?: unknown) => Promise<unknown>;
        const result = await run((tx) => fn(timedTx(tx)), config);
        turn.committed = performance.now();
        if (turn.locked !== undefined && turn.cbStart !== undefined && turn.cbEnd !== undefined) turns.push(turn as Turn);
        return result;
      };
    },
  });
}

/** The facilitator's send through a SendLane of its own pool (one per process). */
async function laneProc(env: SendEnv, key: Hex, turns: Turn[]): Promise<Proc> {
  const database: Database = await openDatabase({ url: env.databaseUrl, dataDir: '', poolMax: 5 });
  const client = createWalletClient({ account: privateKeyToAccount(key), chain: base, transport: http(env.chain.rpcUrl) }).extend(publicActions);
  const wallet = client.account.address.toLowerCase();
  const queued: number[] = [];
  const slot: { turn?: Partial<Turn> } = {};
  const lane = new SendLane(timedDb(database.db, wallet, queued, slot, turns), wallet);
  return {
    send: async (i) => {
      const data = encodeFunctionData({ abi: usdcAbi, functionName: 'transfer', args: [recipient, amountOf(i)] });
      const pending = client.getTransactionCount({ address: client.account.address, blockTag: 'pending' });
      const request = await client.prepareTransactionRequest({ to: BASE_USDC, data, parameters: ['fees', 'gas', 'type', 'chainId'] });
      queued.push(performance.now());
      return lane.send(pending, async (nonce) => {
        const turn = slot.turn!;
        turn.cbStart = performance.now();
        const hash = await client.sendRawTransaction({
          serializedTransaction: await client.signTransaction({ ...request, nonce } as Parameters<typeof client.signTransaction>[0]),
        });
        turn.cbEnd = performance.now();
        return hash;
      });
    },
    close: () => database.close(),
  };
}

async function procsFor(option: SendOption, env: SendEnv, turns: Turn[]): Promise<Proc[]> {
  switch (option) {
    case 'counters': {
      const key = await freshSender(env);
      return [counterProc(env.chain.rpcUrl, key), counterProc(env.chain.rpcUrl, key)];
    }
    case 'lane ×1':
      return [await laneProc(env, await freshSender(env), turns)];
    case 'lane': {
      const key = await freshSender(env);
      return [await laneProc(env, key, turns), await laneProc(env, key, turns)];
    }
    case 'key pool':
      return [counterProc(env.chain.rpcUrl, await freshSender(env)), counterProc(env.chain.rpcUrl, await freshSender(env))];
    case 'key pool + lane':
      return [await laneProc(env, await freshSender(env), turns), await laneProc(env, await freshSender(env), turns)];
  }
}

/** `count` sends round-robin over `procs`, `concurrency` in flight; the hashes the node took. */
async function sendAll(
  procs: Proc[],
  count: number,
  concurrency: number,
  figures: RunFigures,
  maxSeconds = Infinity,
): Promise<{ hashes: Hash[]; latencyByHash: Map<Hash, number> }> {
  const hashes: Hash[] = [];
  const latencyByHash = new Map<Hash, number>();
  figures.attempted = await inFlight(count, concurrency, async (i) => {
    const started = performance.now();
    try {
      const hash = await withTimeout(procs[i % procs.length]!.send(i), CALL_TIMEOUT_MS);
      hashes.push(hash);
      latencyByHash.set(hash, performance.now() - started);
    } catch (err) {
      tally(figures.failures, errorKey(err));
    }
  }, performance.now() + maxSeconds * 1000);
  return { hashes, latencyByHash };
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timeout after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Receipts of the hashes the node took: mined and succeeded, reverted, or never mined (a nonce gap). */
async function judge(env: SendEnv, hashes: Hash[], figures: RunFigures, latencyByHash: Map<Hash, number>): Promise<void> {
  const receiptOf = async (hash: Hash) => env.dev.getTransactionReceipt({ hash }).catch(() => undefined);
  let missing: Hash[] = [];
  await inFlight(hashes.length, 16, async (i) => {
    const hash = hashes[i]!;
    const receipt = await receiptOf(hash);
    if (!receipt) missing.push(hash);
    else if (receipt.status !== 'success') tally(figures.failures, 'mined but reverted');
    else {
      figures.ok++;
      figures.latencies.push(latencyByHash.get(hash)!);
    }
  });
  // automine: a transaction the node took is mined at once unless it waits behind a nonce gap
  if (missing.length > 0) {
    await new Promise((r) => setTimeout(r, 1000));
    const still: Hash[] = [];
    for (const hash of missing) {
      const receipt = await receiptOf(hash);
      if (receipt?.status === 'success') {
        figures.ok++;
        figures.latencies.push(latencyByHash.get(hash)!);
      } else if (receipt) tally(figures.failures, 'mined but reverted');
      else still.push(hash);
    }
    missing = still;
    if (missing.length > 0) tally(figures.failures, 'taken by the node, never mined (behind a nonce gap)', missing.length);
  }
}

/** One option: fresh key(s), a warm-up, then `env.sends` measured sends. */
export async function runSendOption(option: SendOption, env: SendEnv): Promise<SendRun> {
  const turns: Turn[] = [];
  const procs = await procsFor(option, env, turns);
  try {
    const warm: RunFigures = { label: option, attempted: WARMUP_SENDS, ok: 0, seconds: 0, latencies: [], failures: {} };
    await sendAll(procs, WARMUP_SENDS, env.concurrency, warm);
    turns.length = 0;
    const figures: RunFigures = { label: option, attempted: env.sends, ok: 0, seconds: 0, latencies: [], failures: {} };
    const sampled = option.includes('lane') ? env.lockSampler : undefined;
    sampled?.start();
    const from = performance.now();
    const { hashes, latencyByHash } = await sendAll(procs, env.sends, env.concurrency, figures, env.maxSeconds);
    const to = performance.now();
    const lock = await sampled?.stop();
    figures.seconds = (to - from) / 1000;
    await judge(env, hashes, figures, latencyByHash);
    return { option, figures, turns: turns.filter((t) => t.queued >= from), window: [from, to], ...(lock ? { lock } : {}) };
  } finally {
    await Promise.all(procs.map((p) => p.close()));
  }
}

export interface TurnFigures {
  turns: number;
  /** The row lock held: `update` call → COMMIT done (p50, p99, mean ms). */
  hold: [number, number, number];
  /** Sign + eth_sendRawTransaction inside the turn. */
  broadcast: [number, number, number];
  /** Queued in memory and waiting for the row: lane.send called → lock taken. */
  wait: [number, number, number];
  /** Share of the window during which some process held the wallet's row (mean over wallets). */
  busyShare: number;
}

export function turnFigures(run: SendRun): TurnFigures | undefined {
  if (run.turns.length === 0) return undefined;
  const three = (xs: number[]): [number, number, number] => [percentile(xs, 50), percentile(xs, 99), xs.reduce((a, b) => a + b, 0) / xs.length];
  const wallets = [...new Set(run.turns.map((t) => t.wallet))];
  const span = run.window[1] - run.window[0];
  const busy = wallets.map((w) => unionMs(run.turns.filter((t) => t.wallet === w).map((t) => [t.locked, t.committed] as const)) / span);
  return {
    turns: run.turns.length,
    hold: three(run.turns.map((t) => t.committed - t.locked)),
    broadcast: three(run.turns.map((t) => t.cbEnd - t.cbStart)),
    wait: three(run.turns.map((t) => t.locked - t.queued)),
    busyShare: busy.reduce((a, b) => a + b, 0) / busy.length,
  };
}
