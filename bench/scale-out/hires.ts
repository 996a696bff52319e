/**
 * The load: `inFlight` lanes, each hiring in a loop until the phase's end. A hire is three paid
 * steps with the stock x402 client (bench/soak/wallets.ts), every request sent to the next API in
 * the rotation (cluster.ts): create the task (with a callback_url), fund its escrow, poll its
 * status until it is terminal (completed or failed). The first failed request ends the hire with
 * that error; what the service then does with the task is checked by the invariants.
 */
import { mulberry32, seedOf, type Rng } from '../soak/prng.js';
import type { RequestStats } from '../soak/requests.js';
import type { SoakAgent } from '../soak/agents.js';
import type { Payer } from '../soak/wallets.js';
import type { Cluster } from './cluster.js';
import { BUDGET, HIRE_TIMEOUT_MS, POLL_MS, TASK_TIMEOUT_S } from './options.js';

export type Step = 'create' | 'fund' | 'poll';

export interface HireError {
  step: Step;
  /** `402 payment_invalid`, `503 service_unavailable`, `no answer`, `timeout`, … */
  key: string;
  /** The HTTP status, or undefined when no answer came back. */
  status?: number;
  /** The service's error message (402s: the server-side cause, if any). */
  message?: string;
  /** A request in flight to an API process when the bench killed it. */
  byKill: boolean;
  /** 5xx, a 402 whose settlement failed on the server, no answer from an API in rotation, a hire that never ended. */
  serviceMade: boolean;
}

export interface Hire {
  lane: number;
  agent: string;
  started: number;
  ended: number;
  taskId?: string;
  /** The terminal status the client saw. */
  outcome?: 'completed' | 'failed';
  polls: number;
  error?: HireError;
}

export interface LoadContext {
  phase: number;
  seed: number;
  cluster: Cluster;
  payers: readonly Payer[];
  agents: readonly SoakAgent[];
  callbackUrl: string;
  stats: RequestStats;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const REQUEST_TIMEOUT_MS = 30_000;
const TERMINAL = new Set(['completed', 'failed', 'cancelled', 'expired', 'disputed']);

/** Runs `inFlight` lanes of hires until `until` (no hire starts after it); resolves when all have ended. */
export async function runLoad(ctx: LoadContext, inFlight: number, until: number): Promise<Hire[]> {
  const hires: Hire[] = [];
  let next = 0;
  const lane = async (i: number) => {
    const rng = mulberry32(seedOf(ctx.seed, ctx.phase, 'lane', i));
    while (Date.now() < until) {
      const agent = ctx.agents[next++ % ctx.agents.length]!;
      const hire = await oneHire(ctx, i, ctx.payers[i % ctx.payers.length]!, agent, rng);
      hires.push(hire);
      // a refused connection fails at once: do not spin
      if (hire.error && hire.error.status === undefined) await sleep(200);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, (_, i) => lane(i)));
  return hires;
}

async function oneHire(ctx: LoadContext, lane: number, payer: Payer, agent: SoakAgent, rng: Rng): Promise<Hire> {
  const hire: Hire = { lane, agent: `${agent.kind}:${agent.id}`, started: Date.now(), ended: 0, polls: 0 };
  const end = (error?: HireError) => {
    hire.ended = Date.now();
    if (error) hire.error = error;
    return hire;
  };
  const budget = String(rng.int(BUDGET[0], BUDGET[1]));
  const created = await call(ctx, payer, 'create', 'create_task', 201, '/v1/tasks', {
    agent_id: agent.id,
    description: `Scale-out phase ${ctx.phase}, lane ${lane}: a ${agent.kind} job`,
    budget: { amount: budget, currency: 'USDC', chain: 'base' },
    callback_url: ctx.callbackUrl,
    timeout_seconds: TASK_TIMEOUT_S,
  });
  if ('error' in created) return end(created.error);
  hire.taskId = (created.body as { task_id: string }).task_id;
  const funded = await call(ctx, payer, 'fund', 'fund_task', 200, `/v1/tasks/${hire.taskId}/fund`, { amount: budget });
  if ('error' in funded) return end(funded.error);
  for (;;) {
    if (Date.now() - hire.started > HIRE_TIMEOUT_MS) {
      return end({ step: 'poll', key: `not terminal after ${HIRE_TIMEOUT_MS / 1000} s`, byKill: false, serviceMade: true });
    }
    await sleep(POLL_MS);
    hire.polls++;
    const polled = await call(ctx, payer, 'poll', 'task_status', 200, `/v1/tasks/${hire.taskId}/status`);
    if ('error' in polled) return end(polled.error);
    const status = (polled.body as { status: string }).status;
    if (TERMINAL.has(status)) {
      if (status === 'completed' || status === 'failed') hire.outcome = status;
      else return end({ step: 'poll', key: `unexpected terminal status ${status}`, byKill: false, serviceMade: true });
      return end();
    }
  }
}

type Called = { body: unknown } | { error: HireError };

/** One paid request to the next API in rotation; anything but `expected` is the hire's error. */
async function call(ctx: LoadContext, payer: Payer, step: Step, label: string, expected: number, path: string, body?: unknown): Promise<Called> {
  const { index, baseUrl } = ctx.cluster.pick();
  const from = Date.now();
  const answer = await ctx.stats.send(ctx.phase, label, () => ctx.cluster.inRotation(index), () =>
    payer.pay(`${baseUrl}${path}`, {
      ...(body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    }),
  );
  if (answer === null) {
    const byKill = ctx.cluster.killedDuring(index, from, Date.now());
    return { error: { step, key: byKill ? 'no answer (the API was killed)' : 'no answer', byKill, serviceMade: !byKill } };
  }
  if (answer.status === expected) return { body: answer.body };
  return { error: classify(step, answer.status, answer.body) };
}

/**
 * What a refused request says about the service. The payers are funded and pay the service's own
 * challenge with the stock client, so a 402 whose settlement failed (`Payment settlement failed: …`)
 * is the server's doing; a 402 refused at verification is printed with its reason, not counted.
 */
export function classify(step: Step, status: number, body: unknown): HireError {
  const error = (body as { error?: { code?: string; message?: string } } | undefined)?.error;
  const code = error?.code ?? '(no code)';
  const message = error?.message?.slice(0, 200);
  const settlement = status === 402 && /settlement failed/i.test(message ?? '');
  const serviceMade = status >= 500 || (status === 402 && (code === 'payment_failed' || (code === 'payment_invalid' && settlement)));
  return {
    step,
    key: `${status} ${code}${status === 402 ? (settlement ? ' (at settlement)' : ' (at verification)') : ''}`,
    status,
    ...(message ? { message } : {}),
    byKill: false,
    serviceMade,
  };
}
