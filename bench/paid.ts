/**
 * What x402 costs on the task status poll (`GET /v1/tasks/{id}/status`): the same route unpaid
 * (x402 off, caller by SIWE) and paid (x402 on: every request carries its own EIP-3009
 * authorization, verified by the in-process facilitator and settled on the embedded anvil), a
 * bare Fastify route as the reference, and the gas of each settlement, all in one run
 * (see bench/README.md).
 *
 *   npx tsx bench/paid.ts   (BENCH_SECONDS, BENCH_CONNECTIONS, BENCH_PAID_CONNECTIONS, DATABASE_URL,
 *                            BENCH_GAS_GWEI, BENCH_ETH_USD)
 *
 * As in bench/status.ts each server runs in a child process (this file with `--serve`) and the
 * load generator in this one. One anvil, started here, serves every app child.
 */
import { cpus } from 'node:os';
import type { FastifyInstance } from 'fastify';
import { createPublicClient, http, type Address, type Hash } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { DEV_ROLES } from '../src/chain/constants.js';
import { mintUsdc, startDevChain, usdcBalance, type DevChain } from '../src/chain/dev/devchain.js';
import { resolveWallets } from '../src/chain/wallets.js';
import { loadConfig } from '../src/config.js';
import { payments } from '../src/db/schema.js';
import { CustodialEscrowWallet } from '../src/escrow/custody.js';
import {
  DEFAULT_PG_URL,
  WARMUP_SECONDS,
  createThrowawayDb,
  demo,
  killChildren,
  measurePlain,
  measureSigned,
  onceFromChild,
  paidFixture,
  paymentSigner,
  positiveInt,
  printTable as printMarkdownTable,
  redactUrl,
  runBench,
  serveApp,
  serveBare,
  serveChild,
  serveKindFromArgs,
  siweSigner,
  sleep,
  startWatchdog,
  tell,
  unpaidFixture,
  withServer as withScriptServer,
  type Row,
  type Server,
} from './lib.js';

const STATUS_ENDPOINT = 'GET /v1/tasks/:id/status';
/** The longest authorization window the service accepts (config max): pre-signed payments stay valid. */
const X402_TIMEOUT_SECONDS = 3600;
/** Demo wallets (indices into DEV_ROLES.demo) that pay; each owns one task and polls it. */
const PAYER_SLOTS = [0, 1, 2, 3] as const;
/** Demo wallet that owns the agent. */
const OWNER_SLOT = 5;
/** Request rates assumed to size the warm-up's pre-signed pool (the measured pool is sized from the warm-up). */
const WARMUP_RATE_GUESS = { unpaid: 600, paid: 300 } as const;

// ---------------------------------------------------------------- messages parent ⇄ child

type ServeKind = 'bare' | 'app';
type ToChild = { type: 'payments' } | { type: 'close' };
interface SettledPayment {
  endpoint: string;
  kind: string;
  amount: string;
  txHash: string | null;
}
type FromChild = { type: 'payments'; rows: SettledPayment[]; claimed: number } | { type: 'failed'; message: string };

// ---------------------------------------------------------------- child: the servers

/**
 * The real app, logger off, limits out of the way, on the parent's anvil; x402 on or off by
 * BENCH_X402; PGlite in a temp dir unless BENCH_DB_URL is set.
 */
async function servePaidApp() {
  const rpcUrl = process.env.BENCH_RPC_URL;
  if (!rpcUrl) throw new Error('BENCH_RPC_URL is not set');
  return serveApp({
    dirPrefix: 'te-bench-paid-',
    config: {
      X402_ENABLED: process.env.BENCH_X402 === 'true' ? 'true' : 'false',
      X402_MAX_TIMEOUT_SECONDS: String(X402_TIMEOUT_SECONDS),
    },
    chainRpcUrl: rpcUrl,
  });
}

/** Settled payments, and how many are still claimed (verified, not yet settled or released). */
async function paymentRows(app: FastifyInstance): Promise<{ rows: SettledPayment[]; claimed: number }> {
  const all = await app.db
    .select({ status: payments.status, endpoint: payments.endpoint, kind: payments.kind, amount: payments.amount, txHash: payments.txHash })
    .from(payments);
  const settled = all.filter((r) => r.status === 'booked');
  return {
    rows: settled.map((r) => ({ endpoint: r.endpoint, kind: r.kind, amount: r.amount.toString(), txHash: r.txHash })),
    claimed: all.filter((r) => r.status === 'claimed').length,
  };
}

async function serve(kind: ServeKind): Promise<void> {
  const served = kind === 'bare' ? await serveBare() : await servePaidApp();
  await serveChild<ToChild>(served, (msg) => {
    if (msg.type === 'payments') {
      paymentRows(served.app).then(
        ({ rows, claimed }) => tell({ type: 'payments', rows, claimed } satisfies FromChild),
        (err: unknown) => tell({ type: 'failed', message: err instanceof Error ? err.message : String(err) } satisfies FromChild),
      );
    }
  });
}

// ---------------------------------------------------------------- parent: settings

interface Settings {
  seconds: number;
  connections: number;
  paidConnections: number;
  pgUrl: string;
  /** Lifetime of the pre-signed SIWE headers and the server's AUTH_MAX_AGE_SECONDS. */
  authMaxAge: number;
  gasGwei: number;
  ethUsd: number;
}

function positiveNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got "${raw}"`);
  return n;
}

function readSettings(): Settings {
  const seconds = positiveInt('BENCH_SECONDS', 10);
  return {
    seconds,
    connections: positiveInt('BENCH_CONNECTIONS', 50),
    paidConnections: positiveInt('BENCH_PAID_CONNECTIONS', 16),
    pgUrl: process.env.DATABASE_URL || DEFAULT_PG_URL,
    authMaxAge: 3600,
    gasGwei: positiveNumber('BENCH_GAS_GWEI', 0.01),
    ethUsd: positiveNumber('BENCH_ETH_USD', 3000),
  };
}

/** Wall-clock budget after which the bench gives up and kills everything. */
function budgetSeconds(s: Settings): number {
  return 5 * (WARMUP_SECONDS + s.seconds) + 600;
}

// ---------------------------------------------------------------- parent: children

const withServer = <T>(kind: ServeKind, env: Record<string, string>, fn: (server: Server) => Promise<T>) =>
  withScriptServer(import.meta.url, kind, env, fn);

async function fetchPayments(server: Server): Promise<{ rows: SettledPayment[]; claimed: number }> {
  const answer = onceFromChild<FromChild, 'payments'>(server.child, 'payments', 30_000);
  server.child.send({ type: 'payments' } satisfies ToChild);
  return answer;
}

/**
 * Requests cut off at the end of a run still settle on the server: wait (at most 30 s) until no
 * payment is claimed-but-unsettled and the settled count and the fee wallet's balance held still
 * for a second.
 */
async function quiescentPayments(server: Server, rpcUrl: string, feeAddress: Address) {
  let last = { settled: -1, fee: -1n };
  for (let i = 0; ; i++) {
    const { rows, claimed } = await fetchPayments(server);
    const fee = await usdcBalance(rpcUrl, feeAddress);
    if ((claimed === 0 && rows.length === last.settled && fee === last.fee) || i >= 30) return { rows, claimed, fee };
    last = { settled: rows.length, fee };
    await sleep(1000);
  }
}

// ---------------------------------------------------------------- parent: gas

interface GasStats {
  count: number;
  total: bigint;
  min: bigint;
  max: bigint;
  failed: number;
}

async function gasOf(rpcUrl: string, hashes: readonly Hash[]): Promise<GasStats> {
  const client = createPublicClient({ transport: http(rpcUrl, { batch: { batchSize: 100 } }) });
  const stats: GasStats = { count: 0, total: 0n, min: 0n, max: 0n, failed: 0 };
  for (let i = 0; i < hashes.length; i += 500) {
    const receipts = await Promise.all(hashes.slice(i, i + 500).map((hash) => client.getTransactionReceipt({ hash })));
    for (const r of receipts) {
      if (r.status !== 'success') stats.failed++;
      stats.min = stats.count === 0 || r.gasUsed < stats.min ? r.gasUsed : stats.min;
      stats.max = r.gasUsed > stats.max ? r.gasUsed : stats.max;
      stats.total += r.gasUsed;
      stats.count++;
    }
  }
  return stats;
}

/**
 * Gas of one escrow release as the settlement worker sends it: a USDC `transfer` from the escrow
 * wallet, signed by src/escrow/custody.ts. Measured to a fresh payout address (first USDC it
 * receives: a zero → non-zero balance) and again to the same address.
 */
async function releaseGas(chain: DevChain, escrowKey: `0x${string}`): Promise<{ fresh: bigint; warm: bigint }> {
  const custody = new CustodialEscrowWallet({ rpcUrl: chain.rpcUrl, chainId: chain.chainId, usdc: chain.usdc, privateKey: escrowKey });
  await mintUsdc(chain, custody.address, 2_000_000n);
  const payee = privateKeyToAccount(generatePrivateKey()).address;
  const once = async (): Promise<bigint> => {
    const { rawTx, txHash } = await custody.signTransfer(payee, 975_000n, await custody.pendingNonce(), await custody.feeQuote());
    await custody.broadcast(rawTx);
    for (let i = 0; i < 200; i++) {
      const receipt = await custody.receipt(txHash);
      if (receipt) {
        if (receipt.status !== 'success' || receipt.gasUsed === undefined) throw new Error(`release transfer ${txHash} failed`);
        return receipt.gasUsed;
      }
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error(`release transfer ${txHash} was not mined`);
  };
  const fresh = await once();
  const warm = await once();
  return { fresh, warm };
}

// ---------------------------------------------------------------- parent: one database

interface PaidResult {
  label: string;
  unpaid: Row;
  paid: Row;
  gas: GasStats;
  /** Settled status payments recorded by the paid server (≥ 2xx seen: requests in flight at a run's end also settle). */
  settled: number;
  uniqueTx: number;
  /** Payments still claimed (verified, never settled nor released) once the server went quiet. */
  claimed: number;
  /** Fee wallet's USDC increase during the paid server's life vs the sum of the call fees it recorded. */
  feeDelta: bigint;
  feeBooked: bigint;
}

async function benchDatabase(label: string, dbUrl: string, chain: DevChain, settings: Settings, feeAddress: Address): Promise<PaidResult> {
  const env = (x402: boolean) => ({
    BENCH_DB_URL: dbUrl,
    BENCH_RPC_URL: chain.rpcUrl,
    BENCH_X402: String(x402),
    BENCH_AUTH_MAX_AGE: String(settings.authMaxAge),
  });
  const payers = PAYER_SLOTS.map(demo);

  const unpaid = await withServer('app', env(false), async (server) => {
    const pollers = await unpaidFixture(server.base, payers, demo(OWNER_SLOT));
    return measureSigned(
      `unpaid status ${label}`,
      server,
      chain.pid,
      settings.connections,
      settings.seconds,
      WARMUP_RATE_GUESS.unpaid,
      siweSigner(pollers, settings.authMaxAge),
    );
  });

  const feeBefore = await usdcBalance(chain.rpcUrl, feeAddress);
  return withServer('app', env(true), async (server) => {
    const pollers = await paidFixture(server.base, payers, demo(OWNER_SLOT));
    const paid = await measureSigned(
      `paid status ${label}`,
      server,
      chain.pid,
      settings.paidConnections,
      settings.seconds,
      WARMUP_RATE_GUESS.paid,
      paymentSigner(pollers),
    );
    const { rows, claimed, fee } = await quiescentPayments(server, chain.rpcUrl, feeAddress);
    const feeDelta = fee - feeBefore;
    const status = rows.filter((r) => r.endpoint === STATUS_ENDPOINT);
    const hashes = status.map((r) => r.txHash).filter((h): h is Hash => typeof h === 'string' && h.startsWith('0x'));
    const gas = await gasOf(chain.rpcUrl, hashes);
    return {
      label,
      unpaid,
      paid,
      gas,
      settled: status.length,
      uniqueTx: new Set(hashes).size,
      claimed,
      feeDelta,
      feeBooked: rows.filter((r) => r.kind === 'call_fee').reduce((sum, r) => sum + BigInt(r.amount), 0n),
    };
  });
}

// ---------------------------------------------------------------- parent: report

const fmt = (n: number, digits = 0) => n.toFixed(digits);

function printTable(rows: Row[]): void {
  const head = ['target', 'conns', 'req/s', 'p50 ms', 'p99 ms', 'non-2xx', 'errors', 'loader CPU %', 'server CPU %', 'server CPU ms/req', 'anvil CPU %'];
  const pct = (cpuS: number | undefined, r: Row) => (cpuS === undefined ? '-' : fmt((cpuS / r.seconds) * 100));
  const body = rows.map((r) => [
    r.target,
    String(r.connections),
    fmt(r.reqPerSec),
    fmt(r.p50, 1),
    fmt(r.p99, 1),
    String(r.non2xx),
    String(r.errors),
    fmt(r.loaderCpu),
    pct(r.serverCpuS, r),
    r.serverCpuS === undefined || r.total === 0 ? '-' : fmt((r.serverCpuS * 1000) / r.total, 2),
    pct(r.anvilCpuS, r),
  ]);
  printMarkdownTable(head, body);
}

const gasNum = (g: bigint) => Number(g).toLocaleString('en-US');

function printRatios(bare: Row, results: PaidResult[]): void {
  console.log('\nratios (req/s, same run):');
  for (const r of results) {
    console.log(`  ${r.label.padEnd(10)} paid/unpaid ${fmt(r.paid.reqPerSec / r.unpaid.reqPerSec, 3)}` +
      `   unpaid/bare ${fmt(r.unpaid.reqPerSec / bare.reqPerSec, 3)}   paid/bare ${fmt(r.paid.reqPerSec / bare.reqPerSec, 4)}` +
      `   (paid at ${r.paid.connections} connections, unpaid at ${r.unpaid.connections})`);
  }
}

function printGas(results: PaidResult[], settings: Settings, release: { fresh: bigint; warm: bigint } | string): void {
  console.log('\ngas per paid call (x402 settlement = one transferWithAuthorization tx on anvil, receipts of every settled status payment):');
  let meanForNote = 0;
  for (const r of results) {
    const mean = r.gas.count ? Number(r.gas.total) / r.gas.count : 0;
    meanForNote = meanForNote || mean;
    console.log(
      `  ${r.label.padEnd(10)} ${r.gas.count} settlements (${r.uniqueTx} distinct tx, ${r.gas.failed} reverted; ${r.paid.ok2xx} paid 2xx seen by the loader): ` +
        `mean ${gasNum(BigInt(Math.round(mean)))}, min ${gasNum(r.gas.min)}, max ${gasNum(r.gas.max)} gas` +
        (r.claimed ? `; ${r.claimed} payments left claimed` : ''),
    );
    console.log(
      `             fee wallet +${r.feeDelta} atomic USDC on chain vs ${r.feeBooked} booked as call fees by the server` +
        (r.feeDelta === r.feeBooked ? ' (match)' : ' (MISMATCH)'),
    );
  }
  if (typeof release === 'string') console.log(`  escrow release: skipped — ${release}`);
  else {
    console.log(
      `  escrow release (custodial USDC transfer as the settlement worker signs it): ${gasNum(release.fresh)} gas to a new payout address, ` +
        `${gasNum(release.warm)} to one already holding USDC`,
    );
  }
  if (!meanForNote) return;
  const ethPerCall = (meanForNote * settings.gasGwei) / 1e9;
  const usdPerCall = ethPerCall * settings.ethUsd;
  const fee = 0.001;
  const breakEvenGwei = fee / settings.ethUsd / meanForNote * 1e9;
  console.log(
    `\nfee vs gas: the status fee is 1000 atomic = ${fee} USDC per call; the operator pays ~${gasNum(BigInt(Math.round(meanForNote)))} gas to settle it.\n` +
      `  at ${settings.gasGwei} gwei (Base L2 execution gas; BENCH_GAS_GWEI): ${ethPerCall.toExponential(2)} ETH per call ` +
      `≈ $${usdPerCall.toFixed(5)} at $${settings.ethUsd}/ETH (BENCH_ETH_USD) = ${fmt((usdPerCall / fee) * 100)} % of the fee.\n` +
      `  break-even gas price ≈ ${breakEvenGwei.toFixed(4)} gwei. Not counted: Base's L1 data fee per transaction, which varies with L1 blob prices.`,
  );
}

function checkRows(rows: Row[], results: PaidResult[], settings: Settings): boolean {
  let ok = true;
  for (const r of rows) {
    if (r.non2xx > 0 || r.errors > 0 || r.shortfall > 0) {
      console.error(`WARNING ${r.target}: ${r.non2xx} non-2xx, ${r.errors} errors, ${r.shortfall} requests past the pre-signed items — figures are not valid`);
      ok = false;
    }
    if (r.seconds < settings.seconds * 0.9) {
      console.error(`NOTE ${r.target}: the pre-signed pool ran out after ${fmt(r.seconds, 1)} s of ${settings.seconds} (still valid: nothing was replayed)`);
    }
    if (r.loaderCpu >= 90) console.error(`NOTE ${r.target}: the load generator used ${fmt(r.loaderCpu)} % of a core; that figure is a floor`);
  }
  for (const r of results) {
    // +1 per payer: the fixture's paid check poll.
    const bad = r.settled < r.paid.ok2xx + PAYER_SLOTS.length || r.uniqueTx !== r.settled || r.gas.failed > 0 || r.feeDelta !== r.feeBooked;
    if (bad || r.claimed > 0) {
      console.error(
        `WARNING ${r.label}: ${r.settled} settled status payments for ${r.paid.ok2xx + PAYER_SLOTS.length} paid 2xx, ${r.uniqueTx} distinct tx, ${r.claimed} left claimed, ` +
          `${r.gas.failed} reverted, fee wallet +${r.feeDelta} vs ${r.feeBooked} booked — figures are not valid`,
      );
      ok = false;
    }
  }
  return ok;
}

// ---------------------------------------------------------------- parent: main

let chainToStop: DevChain | undefined;

function killAll(): void {
  killChildren();
  // devchain.ts also kills its anvil on process exit; this is the explicit path.
  void chainToStop?.stop();
}

async function main(): Promise<void> {
  const settings = readSettings();
  startWatchdog(budgetSeconds(settings) * 1000, { kill: killAll, exitDelayMs: 500, signals: ['SIGINT'] });
  console.log(
    `bench: ${WARMUP_SECONDS} s warm-up + ${settings.seconds} s per target; ${settings.connections} connections ` +
      `(paid: ${settings.paidConnections}); node ${process.version}, ${cpus().length} cpus`,
  );
  const t0 = Date.now();
  const chain = await startDevChain({ silent: true, fundIndices: [...DEV_ROLES.demo] });
  chainToStop = chain;
  console.log(`anvil ${chain.rpcUrl} ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const wallets = resolveWallets(loadConfig({}));

  try {
    const bare = await withServer('bare', {}, (server) => measurePlain('bare /hello', server, '/hello', settings));
    const results: PaidResult[] = [await benchDatabase('(PGlite)', '', chain, settings, wallets.feeAddress)];

    const db = await createThrowawayDb(settings.pgUrl);
    if (typeof db === 'string') console.log(`postgres: skipped — ${db}`);
    else {
      console.log(`postgres: throwaway database on ${redactUrl(settings.pgUrl)}`);
      try {
        results.push(await benchDatabase('(Postgres)', db.url, chain, settings, wallets.feeAddress));
      } finally {
        await db.drop();
      }
    }

    let release: { fresh: bigint; warm: bigint } | string;
    try {
      release = await releaseGas(chain, wallets.escrowKey);
    } catch (err) {
      release = (err as Error).message;
    }

    const rows = [bare, ...results.flatMap((r) => [r.unpaid, r.paid])];
    console.log('');
    printTable(rows);
    printRatios(bare, results);
    printGas(results, settings, release);
    if (!checkRows(rows, results, settings)) process.exitCode = 1;
  } finally {
    await chain.stop();
    chainToStop = undefined;
  }
}

const serveKind = serveKindFromArgs(process.argv.slice(2));
runBench(serveKind ? () => serve(serveKind) : undefined, main, killChildren);
