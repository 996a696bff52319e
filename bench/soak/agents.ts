/**
 * The soak's hired agents: real webhook servers on loopback (test/helpers/agent-server.ts), one
 * per behaviour, registered once through the signed `POST /v1/agents`. They live in the soak's
 * own process, so they outlive every service process the soak kills:
 *
 * - `instant`: answers 200 with the result at once (the escrow is released);
 * - `fail`: refuses (400, not retried) or answers 503 (retried, then failed): the escrow is refunded;
 * - `slow`: reports progress (signed), then answers 200 after 0.6–2.5 s: work in progress when
 *   a kill lands, re-run by the restarted dispatcher once the lease expires;
 * - `async`: answers 202, then delivers through `POST /v1/tasks/{id}/deliver` signed by its
 *   owner (SIWE), retrying while the service is down.
 *
 * Other benches pass their own roster (kinds may repeat) and may use two more kinds the soak does
 * not hire (bench/scale-out.ts):
 * - `steady`: answers 200 with the result after 0.2–0.8 s of "work";
 * - `flaky`: answers 503 to 20 % of its briefs (the dispatcher retries), otherwise as `steady`.
 */
import type { Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { AgentServer, type AgentReply, type Received } from '../../test/helpers/agent-server.js';
import { mulberry32, seedOf } from './prng.js';

/** The soak's roster: one agent of each. */
export const AGENT_KINDS = ['instant', 'fail', 'slow', 'async'] as const;
export const EXTRA_KINDS = ['steady', 'flaky'] as const;
export type AgentKind = (typeof AGENT_KINDS)[number] | (typeof EXTRA_KINDS)[number];

export interface SoakAgent {
  kind: AgentKind;
  id: string;
  owner: PrivateKeyAccount;
  payout: Address;
  server: AgentServer;
}

export interface AgentCallStats {
  /** Briefs (`task.assigned`) received, by agent kind. */
  briefs: Record<string, number>;
  progressPosted: number;
  delivered: number;
  /** Deliveries refused for good, by status (409: the task had moved on, e.g. cancelled). */
  deliverRefused: Record<string, number>;
  deliverGaveUp: number;
  /** Answers ≥ 500 other than 503 to an agent's progress or delivery: a bug of the service. */
  serverErrors: { url: string; status: number; body: string }[];
}

const SECRET = 'soak-webhook-shared-secret-0123456789abcdef';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const resultOf = (taskId: string, how: string) => ({
  result: { type: 'text', content: `${how} result of ${taskId}`, metadata: { tokens_used: 1, model: 'soak', duration_seconds: 0 } },
});

export class SoakAgents {
  /** The first agent of each kind in the roster. */
  readonly byKind = new Map<AgentKind, SoakAgent>();
  private readonly agents: SoakAgent[] = [];
  readonly stats: AgentCallStats = { briefs: {}, progressPosted: 0, delivered: 0, deliverRefused: {}, deliverGaveUp: 0, serverErrors: [] };
  private readonly pending = new Set<Promise<void>>();
  private readonly abort = new AbortController();

  constructor(
    private readonly seed: number,
    /** The service's origin and SIWE domain (fixed for the whole run). */
    private readonly service: { baseUrl: string; domain: string },
    /** One agent per entry, in this order (default: the soak's AGENT_KINDS). */
    private readonly roster: readonly AgentKind[] = AGENT_KINDS,
  ) {}

  async start(): Promise<this> {
    for (const kind of this.roster) {
      const owner = privateKeyToAccount(generatePrivateKey());
      const payout = privateKeyToAccount(generatePrivateKey()).address;
      const server = await new AgentServer(SECRET, (r) => this.answer(kind, owner, r)).start();
      const agent: SoakAgent = { kind, id: '', owner, payout, server };
      this.agents.push(agent);
      if (!this.byKind.has(kind)) this.byKind.set(kind, agent);
    }
    return this;
  }

  get all(): SoakAgent[] {
    return [...this.agents];
  }

  agent(kind: AgentKind): SoakAgent {
    return this.byKind.get(kind)!;
  }

  kindOf(agentId: string): AgentKind | undefined {
    return this.all.find((a) => a.id === agentId)?.kind;
  }

  /** Registers every agent (signed by its owner); throws unless each gets 201. */
  async register(): Promise<void> {
    for (const [i, agent] of this.all.entries()) {
      const nth = this.all.filter((a) => a.kind === agent.kind).length > 1 ? ` ${i + 1}` : '';
      const res = await fetch(`${this.service.baseUrl}/v1/agents`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: await this.signIn(agent.owner) },
        body: JSON.stringify({
          name: `Soak ${agent.kind}${nth}`,
          description: `A ${agent.kind} webhook agent of the crash-point soak`,
          capabilities: ['soak', agent.kind],
          pricing: { base_rate: '1000' },
          payout_address: agent.payout,
          runtime: { kind: 'webhook', url: agent.server.url, secret: SECRET, timeout_ms: 10_000 },
        }),
        signal: AbortSignal.timeout(20_000),
      });
      const text = await res.text();
      if (res.status !== 201) throw new Error(`registering the ${agent.kind} agent answered ${res.status}: ${text}`);
      agent.id = (JSON.parse(text) as { id: string }).id;
    }
  }

  /** Stops the delivery loops and the servers. */
  async stop(): Promise<void> {
    this.abort.abort();
    await Promise.allSettled([...this.pending]);
    await Promise.allSettled(this.all.map((a) => a.server.stop()));
  }

  private signIn(owner: PrivateKeyAccount): Promise<string> {
    return signInHeader(owner, { domain: this.service.domain, uri: this.service.baseUrl });
  }

  private track(work: Promise<void>): void {
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
  }

  private async answer(kind: AgentKind, owner: PrivateKeyAccount, r: Received): Promise<AgentReply> {
    if (r.type !== 'task.assigned') return { status: 200, body: {} };
    this.stats.briefs[kind] = (this.stats.briefs[kind] ?? 0) + 1;
    const rng = mulberry32(seedOf(this.seed, r.taskId, r.attempt, kind));
    const callbacks = (r.body as { callbacks?: { progress?: string; deliver?: string } }).callbacks ?? {};
    switch (kind) {
      case 'instant':
        return { status: 200, body: resultOf(r.taskId, 'instant') };
      case 'fail':
        return rng.chance(0.5) ? { status: 400, body: { error: 'cannot do this' } } : { status: 503, body: { error: 'overloaded' } };
      case 'slow': {
        if (callbacks.progress) this.track(this.post(owner, callbacks.progress, { progress_percent: rng.int(5, 95) }, 1));
        await sleep(rng.int(600, 2500));
        return { status: 200, body: resultOf(r.taskId, 'slow') };
      }
      case 'async': {
        if (callbacks.deliver) {
          const delay = rng.int(200, 1500);
          this.track(sleep(delay).then(() => this.post(owner, callbacks.deliver!, resultOf(r.taskId, 'async'), 100)));
        }
        return { status: 202, body: {} };
      }
      case 'steady':
      case 'flaky':
        if (kind === 'flaky' && rng.chance(0.2)) return { status: 503, body: { error: 'flaky: try again' } };
        await sleep(rng.int(200, 800));
        return { status: 200, body: resultOf(r.taskId, kind) };
    }
  }

  /**
   * POSTs a signed progress report or delivery, retrying network errors and 503s (the service is
   * down or restarting) every 300 ms, `attempts` times at most.
   */
  private async post(owner: PrivateKeyAccount, url: string, body: unknown, attempts: number): Promise<void> {
    const delivery = url.endsWith('/deliver');
    for (let i = 0; i < attempts && !this.abort.signal.aborted; i++) {
      try {
        const res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: await this.signIn(owner) },
          body: JSON.stringify(body),
          signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(15_000)]),
        });
        const text = await res.text();
        if (res.status >= 500 && res.status !== 503) this.stats.serverErrors.push({ url, status: res.status, body: text.slice(0, 500) });
        if (res.status < 300) {
          if (delivery) this.stats.delivered++;
          else this.stats.progressPosted++;
          return;
        }
        if (res.status < 500) {
          if (delivery) this.stats.deliverRefused[res.status] = (this.stats.deliverRefused[res.status] ?? 0) + 1;
          return;
        }
      } catch {
        /* the service is down: retry */
      }
      await sleep(300);
    }
    if (delivery && !this.abort.signal.aborted) this.stats.deliverGaveUp++;
  }
}
