/**
 * The service under test, one OS process at a time (test/helpers/service-process.ts): ROLE=all on
 * the soak's Postgres database and anvil, on one fixed port (agents' callbacks and SIWE sign-ins
 * keep working across restarts), with short leases so the recovery after a kill is quick. Its log
 * is written to a file and scanned for error lines and the recovery sweep's outcomes.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import path from 'node:path';
import { eachLine, serviceEnv, startService, type ServiceProcess } from '../../test/helpers/service-process.js';

export interface ServiceSettings {
  databaseUrl: string;
  rpcUrl: string;
  port: number;
  adminKey: string;
  logDir: string;
}

export interface LogFigures {
  /** The recovery sweep's outcomes, summed over its "abandoned payments resolved" lines. */
  recovery: { released: number; failed: number; refunded: number };
  /** Channel payments whose charge the sweep took back ("channel charge taken back" lines). */
  channelChargesTakenBack: number;
  /**
   * The channel settler's runs that did something ("channels: settled" lines, summed): vouchers
   * claimed, runs that settled, atomic USDC booked as paid into the fee wallet, channels refunded,
   * stored channels dropped (drained on the contract). A run killed at its crash point logs nothing.
   */
  channels: { runs: number; claimed: number; settles: number; booked: bigint; refunded: number; dropped: number };
  /** Lines at level error or above: `msg` → count. */
  errors: Record<string, number>;
  /** The first few error lines, whole. */
  errorSamples: string[];
}

export function emptyLogFigures(): LogFigures {
  return {
    recovery: { released: 0, failed: 0, refunded: 0 },
    channelChargesTakenBack: 0,
    channels: { runs: 0, claimed: 0, settles: 0, booked: 0n, refunded: 0, dropped: 0 },
    errors: {},
    errorSamples: [],
  };
}

/** The origin and SIWE domain of the service on `port`. */
export function serviceOrigin(port: number): { baseUrl: string; domain: string } {
  return { baseUrl: `http://127.0.0.1:${port}`, domain: `127.0.0.1:${port}` };
}

/** The channel settler refunds a channel idle this long (CHANNEL_IDLE_REFUND_SECONDS of the soak's service). */
export const CHANNEL_IDLE_REFUND_MS = 2000;

export function soakEnv(s: ServiceSettings, failpoints: string | undefined): Record<string, string> {
  const { baseUrl, domain } = serviceOrigin(s.port);
  return serviceEnv(s.databaseUrl, s.rpcUrl, {
    ROLE: 'all',
    PORT: String(s.port),
    PUBLIC_BASE_URL: baseUrl,
    AUTH_DOMAIN: domain,
    ADMIN_API_KEY: s.adminKey,
    // a dead request's payment is taken over by the sweep 2 s after it was claimed
    PAYMENT_LEASE_MS: '2000',
    PAYMENT_RECOVERY_INTERVAL_MS: '200',
    SETTLEMENT_INTERVAL_MS: '200',
    SETTLEMENT_LEASE_MS: '5000', // the minimum
    SETTLEMENT_BACKOFF_MS: '100',
    DISPATCH_INTERVAL_MS: '100',
    DISPATCH_LEASE_MS: '2000',
    DISPATCH_HEARTBEAT_MS: '300',
    DISPATCH_BACKOFF_MS: '100',
    MAINTENANCE_INTERVAL_MS: '1000', // the minimum
    TASK_TIMEOUT_MIN_SECONDS: '1',
    // Micro-fees served before settlement and settled in batches every 200 ms; a payer owes at most
    // five polls at a time, so its calls also take the settle-first path.
    MICRO_FEES_DEFERRED: 'true',
    MICRO_FEE_SETTLE_INTERVAL_MS: '200',
    MICRO_FEE_PAYER_CAP: '5000',
    // An x402 authorization, and a channel's reservation by a request, lasts 60 s. A request killed
    // after the scheme reserved its channel and before its payment was recorded leaves the channel
    // busy until the channel settler releases the dead reservation (after 10 s; the recovery sweep
    // releases the reservation of a recorded one). Micro-fees defer (an authorization is deferred
    // with ≥ 10 s left, so a deferred fee has ~50 s to be collected, a slow restart on a loaded
    // machine included: with 20 s, a 17 s restart once let three deferred fees expire).
    X402_MAX_TIMEOUT_SECONDS: '60',
    MICRO_FEE_MIN_VALIDITY_SECONDS: '10',
    // Channels act at once: the settler runs every 200 ms, claims 5000 unclaimed (one create_task)
    // or whatever is unclaimed a second after the last claim, and refunds a channel idle for 2 s
    // (between iterations, in an iteration planned at `channel:after-refund`, and whenever a
    // lane leaves its channel idle that long; a lane keeps its calls clear of the refund unless
    // told to race it: a refund that raced a call used to lose the call's charge, see
    // channel-refund-race.ts, which checks that the settler's refund now holds the channel).
    // A channel deposit covers 20 calls at the route's price, so channels top up during the run.
    CHANNEL_SETTLE_INTERVAL_MS: '200',
    CHANNEL_CLAIM_THRESHOLD: '5000',
    CHANNEL_CLAIM_INTERVAL_SECONDS: '1',
    CHANNEL_IDLE_REFUND_SECONDS: String(CHANNEL_IDLE_REFUND_MS / 1000),
    CHANNEL_DEPOSIT_CALLS: '20',
    ...(failpoints ? { FAILPOINTS: failpoints } : {}),
  });
}

export interface SoakService {
  process: ServiceProcess;
  logFile: string;
  /** Resolves once the process is gone and its log is flushed. */
  closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts one service process; `figures` accumulates what its log says. */
export async function startSoakService(
  s: ServiceSettings,
  name: string,
  failpoints: string | undefined,
  figures: LogFigures,
  timeoutMs = 60_000,
): Promise<SoakService> {
  return startLoggedService(soakEnv(s, failpoints), path.join(s.logDir, `${name}.log`), failpoints ? `# FAILPOINTS=${failpoints}` : undefined, figures, timeoutMs);
}

/**
 * Starts a service process on `env` (any role) whose output goes to `logFile` (after `header`, if
 * given); `figures` accumulates what its log says. Also used by bench/scale-out.
 */
export async function startLoggedService(
  env: Record<string, string>,
  logFile: string,
  header: string | undefined,
  figures: LogFigures,
  timeoutMs = 60_000,
): Promise<SoakService> {
  const proc = await startService(env, timeoutMs);
  const out: WriteStream = createWriteStream(logFile);
  if (header) out.write(`${header}\n`);
  const seen = proc.output.slice();
  const onLine = (line: string) => {
    out.write(`${line}\n`);
    scanLine(line, figures);
  };
  seen.forEach(onLine);
  eachLine(proc.proc, onLine);
  const closed = proc.exited.then(async (exit) => {
    out.write(`# exited: ${JSON.stringify(exit)}\n`);
    await new Promise<void>((resolve) => out.end(resolve));
    return exit;
  });
  return { process: proc, logFile, closed };
}

function scanLine(line: string, figures: LogFigures): void {
  if (!line.startsWith('{')) return;
  let entry: {
    level?: number;
    msg?: string;
    released?: number;
    failed?: number;
    refunded?: number;
    claimed?: number;
    settled?: boolean;
    booked?: string;
    dropped?: number;
    err?: { message?: string };
  };
  try {
    entry = JSON.parse(line);
  } catch {
    return;
  }
  if (entry.msg === 'payment recovery: abandoned payments resolved') {
    figures.recovery.released += entry.released ?? 0;
    figures.recovery.failed += entry.failed ?? 0;
    figures.recovery.refunded += entry.refunded ?? 0;
  }
  if (entry.msg === 'payment recovery: channel charge taken back') figures.channelChargesTakenBack++;
  if (entry.msg === 'channels: settled') {
    const c = figures.channels;
    c.runs++;
    c.claimed += entry.claimed ?? 0;
    if (entry.settled) c.settles++;
    c.booked += BigInt(entry.booked ?? '0');
    c.refunded += entry.refunded ?? 0;
    c.dropped += entry.dropped ?? 0;
  }
  if ((entry.level ?? 0) >= 50) {
    const key = `${entry.msg ?? '(no msg)'}${entry.err?.message ? `: ${entry.err.message.split('\n')[0]!.slice(0, 160)}` : ''}`;
    figures.errors[key] = (figures.errors[key] ?? 0) + 1;
    if (figures.errorSamples.length < 20) figures.errorSamples.push(line.slice(0, 3000));
  }
}
