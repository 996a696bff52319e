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
  /** Lines at level error or above: `msg` → count. */
  errors: Record<string, number>;
  /** The first few error lines, whole. */
  errorSamples: string[];
}

export function emptyLogFigures(): LogFigures {
  return { recovery: { released: 0, failed: 0, refunded: 0 }, errors: {}, errorSamples: [] };
}

/** The origin and SIWE domain of the service on `port`. */
export function serviceOrigin(port: number): { baseUrl: string; domain: string } {
  return { baseUrl: `http://127.0.0.1:${port}`, domain: `127.0.0.1:${port}` };
}

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
  let entry: { level?: number; msg?: string; released?: number; failed?: number; refunded?: number; err?: { message?: string } };
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
  if ((entry.level ?? 0) >= 50) {
    const key = `${entry.msg ?? '(no msg)'}${entry.err?.message ? `: ${entry.err.message.split('\n')[0]!.slice(0, 160)}` : ''}`;
    figures.errors[key] = (figures.errors[key] ?? 0) + 1;
    if (figures.errorSamples.length < 20) figures.errorSamples.push(line.slice(0, 3000));
  }
}
