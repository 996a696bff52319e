/**
 * The service processes of the scale-out bench: API processes (ROLE=api) on fixed loopback ports
 * and worker processes (ROLE=worker: dispatcher, settlement, recovery sweep, callbacks,
 * maintenance), all on one Postgres database and one anvil, started with the soak's logged
 * service start (bench/soak/service.ts over test/helpers/service-process.ts). Also the load
 * balancer of the bench: a round-robin over the API processes in rotation; a killed API leaves the
 * rotation at the kill and comes back once restarted (a health check, made instant).
 */
import path from 'node:path';
import { serviceEnv } from '../../test/helpers/service-process.js';
import { startLoggedService, type LogFigures, type SoakService } from '../soak/service.js';

export type Role = 'api' | 'worker';

export interface ClusterSettings {
  databaseUrl: string;
  rpcUrl: string;
  /** One fixed port per API slot (a restarted API listens where it did). */
  apiPorts: readonly number[];
  adminKey: string;
  logDir: string;
  figures: LogFigures;
}

/**
 * What the bench sets besides serviceEnv's defaults. The dispatcher's lease, heartbeat, backoff and
 * attempts keep the service's defaults: the takeover of a killed worker's tasks is measured as
 * configured. The payment and payout leases are shortened so that what a killed process left
 * half done is taken over within seconds (the defaults, 90 s and 60 s, would dominate the run).
 */
export const OVERRIDES: Readonly<Record<string, string>> = {
  PAYMENT_LEASE_MS: '10000',
  PAYMENT_RECOVERY_INTERVAL_MS: '1000',
  SETTLEMENT_LEASE_MS: '5000',
  SETTLEMENT_INTERVAL_MS: '500',
};

export interface Member {
  role: Role;
  index: number;
  /** `api-1`, `worker-2`: the slot, which a restart keeps. */
  name: string;
  pid: number;
  service: SoakService;
}

export interface Kill {
  name: string;
  role: Role;
  index: number;
  pid: number;
  at: number;
}

export class Cluster {
  readonly apis: (Member | undefined)[] = [];
  readonly workers: (Member | undefined)[] = [];
  readonly kills: Kill[] = [];
  /** Every pid that ever ran in a slot (for the CPU split). */
  readonly pidsByName = new Map<string, number[]>();
  private readonly down = new Set<number>();
  private readonly incarnations = new Map<string, number>();
  private turn = 0;

  constructor(private readonly s: ClusterSettings) {}

  apiUrl(index: number): string {
    return `http://127.0.0.1:${this.s.apiPorts[index]!}`;
  }

  /** API 1's origin: the PUBLIC_BASE_URL of every process, and the SIWE domain they share. */
  get origin(): { baseUrl: string; domain: string } {
    return { baseUrl: this.apiUrl(0), domain: `127.0.0.1:${this.s.apiPorts[0]!}` };
  }

  env(role: Role, index: number): Record<string, string> {
    return serviceEnv(this.s.databaseUrl, this.s.rpcUrl, {
      ROLE: role,
      ...(role === 'api' ? { PORT: String(this.s.apiPorts[index]!) } : {}),
      PUBLIC_BASE_URL: this.origin.baseUrl,
      AUTH_DOMAIN: this.origin.domain,
      ADMIN_API_KEY: this.s.adminKey,
      ...OVERRIDES,
    });
  }

  async start(role: Role, index: number): Promise<Member> {
    const name = `${role}-${index + 1}`;
    const n = (this.incarnations.get(name) ?? 0) + 1;
    this.incarnations.set(name, n);
    const logFile = path.join(this.s.logDir, `${name}${n > 1 ? `.restart-${n - 1}` : ''}.log`);
    const service = await startLoggedService(this.env(role, index), logFile, `# ${name} (${role}), incarnation ${n}`, this.s.figures, 90_000);
    const member: Member = { role, index, name, pid: service.process.proc.pid!, service };
    this.pidsByName.set(name, [...(this.pidsByName.get(name) ?? []), member.pid]);
    (role === 'api' ? this.apis : this.workers)[index] = member;
    if (role === 'api') this.down.delete(index);
    return member;
  }

  /** Starts whatever is missing of `n` APIs and `n` workers (in parallel); returns how long it took. */
  async scaleTo(n: number): Promise<number> {
    const started = Date.now();
    const pending: Promise<Member>[] = [];
    for (let i = 0; i < n; i++) {
      if (!this.apis[i]) pending.push(this.start('api', i));
      if (!this.workers[i]) pending.push(this.start('worker', i));
    }
    await Promise.all(pending);
    return Date.now() - started;
  }

  /** The next API in the rotation (round-robin over the running ones). */
  pick(): { index: number; baseUrl: string } {
    const live = this.apis.flatMap((m, i) => (m && !this.down.has(i) ? [i] : []));
    if (live.length === 0) throw new Error('scale-out: no API process in rotation');
    const index = live[this.turn++ % live.length]!;
    return { index, baseUrl: this.apiUrl(index) };
  }

  inRotation(index: number): boolean {
    return Boolean(this.apis[index]) && !this.down.has(index);
  }

  /** True when API `index` was killed between `from` and `to` (epoch ms): a request then in flight died with it. */
  killedDuring(index: number, from: number, to: number): boolean {
    return this.kills.some((k) => k.role === 'api' && k.index === index && k.at >= from && k.at <= to);
  }

  /** SIGKILL; an API leaves the rotation first. Resolves once the process is gone, with the kill's time. */
  async kill(role: Role, index: number): Promise<Kill> {
    const member = (role === 'api' ? this.apis : this.workers)[index];
    if (!member) throw new Error(`scale-out: no ${role}-${index + 1} to kill`);
    if (role === 'api') this.down.add(index);
    const kill: Kill = { name: member.name, role, index, pid: member.pid, at: Date.now() };
    this.kills.push(kill);
    await member.service.process.kill();
    await member.service.closed;
    (role === 'api' ? this.apis : this.workers)[index] = undefined;
    return kill;
  }

  /** Every process as `name → pid` (the running incarnation). */
  running(): Member[] {
    return [...this.apis, ...this.workers].filter((m): m is Member => Boolean(m));
  }

  /** Graceful stop of everything (SIGTERM, SIGKILL after the grace). */
  async stopAll(): Promise<void> {
    await Promise.all(this.running().map(async (m) => {
      await m.service.process.stop(10_000).catch(() => undefined);
      await m.service.closed.catch(() => undefined);
    }));
    this.apis.length = 0;
    this.workers.length = 0;
  }
}
