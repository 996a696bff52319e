/**
 * The HTTP level: real API processes (`ROLE=api`, src/server.ts under tsx, started with
 * test/helpers/service-process.ts) on one scratch Postgres database and one anvil, paid through by
 * the stock x402 client. Each process's warnings and errors are tallied from its log (the
 * facilitator logs the cause of every send it could not make).
 */
import type { Address, Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { eachLine, serviceEnv, startService, type ServiceProcess } from '../../test/helpers/service-process.js';
import type { CpuSampler } from '../scale-out/cpu.js';
import type { Payer } from '../soak/wallets.js';
import { CALL_TIMEOUT_MS } from './settings.js';
import { errorKey, inFlight, maskVariable, tally, type RunFigures } from './stats.js';

/** The cheap priced route every call pays for (search_agents, 0.001 USDC by default). */
export const PAID_PATH = '/v1/agents?query=x';

export interface Api {
  name: string;
  svc: ServiceProcess;
  operator: Address;
}

export class ApiProcesses {
  readonly running: Api[] = [];
  /** Warn+ log lines of every API process since the last `takeLogTally()`: `level msg: cause` → count. */
  private logTally: Record<string, number> = {};

  constructor(
    private readonly databaseUrl: string,
    private readonly rpcUrl: string,
    private readonly cpu: CpuSampler,
  ) {}

  async start(name: string, operatorKey: Hex): Promise<Api> {
    const svc = await startService(
      serviceEnv(this.databaseUrl, this.rpcUrl, {
        ROLE: 'api',
        PUBLIC_BASE_URL: 'http://127.0.0.1:9',
        // required with an external chain, the same in every replica (serviceEnv may set one too)
        SESSION_SECRET: 'operator-lane-bench-session-secret-0123456789',
        OPERATOR_PRIVATE_KEY: operatorKey,
      }),
      60_000,
    );
    eachLine(svc.proc, (line) => this.onLine(line));
    this.cpu.track(name, svc.proc.pid!);
    const api = { name, svc, operator: privateKeyToAccount(operatorKey).address };
    this.running.push(api);
    return api;
  }

  async stop(api: Api): Promise<void> {
    this.running.splice(this.running.indexOf(api), 1);
    await api.svc.stop();
  }

  async stopAll(): Promise<void> {
    await Promise.allSettled([...this.running].map((a) => this.stop(a)));
  }

  takeLogTally(): Record<string, number> {
    const t = this.logTally;
    this.logTally = {};
    return t;
  }

  private onLine(line: string): void {
    if (!line.startsWith('{')) return;
    let entry: { level?: number; msg?: string; cause?: unknown; reason?: unknown; err?: { message?: unknown } };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      return;
    }
    if ((entry.level ?? 0) < 40) return;
    const why = entry.cause ?? entry.reason ?? entry.err?.message;
    const level = entry.level! >= 50 ? 'error' : 'warn';
    tally(this.logTally, `${level} ${entry.msg ?? ''}${why ? `: ${maskVariable(String(why).split('\n')[0]!).slice(0, 120)}` : ''}`);
  }
}

/**
 * `count` paid calls, call i to API i mod APIs and from payer i mod payers, `concurrency` in flight;
 * none starts after `maxSeconds` (then `attempted` says how many did).
 */
export async function paidCalls(
  label: string,
  apis: readonly string[],
  payers: readonly Payer[],
  count: number,
  concurrency: number,
  maxSeconds = Infinity,
): Promise<RunFigures> {
  const figures: RunFigures = { label, attempted: count, ok: 0, seconds: 0, latencies: [], failures: {} };
  const from = performance.now();
  figures.attempted = await inFlight(count, concurrency, async (i) => {
    const started = performance.now();
    try {
      const res = await payers[i % payers.length]!.pay(`${apis[i % apis.length]}${PAID_PATH}`, { signal: AbortSignal.timeout(CALL_TIMEOUT_MS) });
      const body = await res.text();
      if (res.status === 200) {
        figures.ok++;
        figures.latencies.push(performance.now() - started);
      } else tally(figures.failures, httpErrorKey(res.status, body));
    } catch (err) {
      tally(figures.failures, `no answer: ${errorKey(err)}`);
    }
  }, from + maxSeconds * 1000);
  figures.seconds = (performance.now() - from) / 1000;
  return figures;
}

function httpErrorKey(status: number, body: string): string {
  try {
    const error = (JSON.parse(body) as { error?: { code?: string; message?: string } }).error;
    return `${status} ${error?.code ?? '(no code)'}: ${maskVariable(error?.message ?? '').slice(0, 120)}`;
  } catch {
    return `${status} ${maskVariable(body.slice(0, 120))}`;
  }
}
