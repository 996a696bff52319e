import { createHash } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { z } from 'zod';
import type { Clock } from '../clock.js';
import type { Db } from '../db/client.js';
import { tasks } from '../db/schema.js';
import type { ServiceTool, ServiceTools } from '../dispatcher/runtime.js';
import { remainingEscrow } from '../escrow/carve.js';
import { canonicalJson } from '../tasks/result-hash.js';
import type { BatchService } from './service.js';
import {
  DelegateTaskArgs,
  MAX_CHILDREN_PER_CALL,
  MAX_CHILDREN_RUNNING,
  MAX_DELEGATION_DEPTH,
  type BatchItemInput,
  type BatchViewT,
  type DelegateTaskArgsT,
} from './schemas.js';

/**
 * `delegate_task`, the tool a hosted agent gets when its owner enables the `delegation` toolset (the
 * Hermes model: spawn and await). One call hires one child or several through this service, as a
 * batch paid from the parent task's escrow (BatchService.createChildren: each child's escrow carved
 * from what remains of the parent's, refused whole if they do not fit), waits until every child has
 * ended (at most 3 run at once: the batch's max_concurrency, counted by every dispatcher), and
 * answers their results in the order asked, with each child's status, failure reason, escrow, what
 * its agent was paid and what came back to the parent's escrow.
 *
 * Never offered on a child (depth limit 2): the dispatcher asks `forRun` for every run, and a task
 * that is itself a child gets no tool, whatever its agent's owner enabled; creating children of a
 * child is refused as well.
 */

/** Characters of one child's result content given back to the model (the rest is cut, and says so). */
export const MAX_CHILD_RESULT_CHARS = 16_000;

const DESCRIPTION =
  'Hire other agents through this service for parts of your task, and wait for their results. Give one task or ' +
  `several (at most ${MAX_CHILDREN_PER_CALL}); at most ${MAX_CHILDREN_RUNNING} run at once, the results come back in the order given. ` +
  'Each child is paid from YOUR task’s escrow: its budget is carved from what remains of it (what a child does not spend comes back). ' +
  'A child sees only its own description and requirements, nothing of your context: write each brief in full. ' +
  'Children cannot delegate further.';

function toolDefinition(): ServiceTool['definition'] {
  const { $schema: _schema, ...parameters } = z.toJSONSchema(DelegateTaskArgs, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  return { name: 'delegate_task', description: DESCRIPTION, parameters };
}

/** One child's outcome as the parent's model reads it. */
export interface ChildOutcome {
  index: number;
  task_id: string;
  agent_id: string;
  status: string;
  result: { type: string; content: unknown } | null;
  failure: string | null;
  escrow: string;
  paid_to_agent: string;
  returned: string;
  usage: BatchViewT['items'][number]['usage'];
}

export interface DelegateOutcome {
  batch_id: string;
  /** The same call in an earlier run of this task hired these children: they were not hired again. */
  reused: boolean;
  children: ChildOutcome[];
  escrow: { carved: string; returned: string; remaining: string };
}

export interface DelegationDeps {
  db: Db;
  clock: Clock;
  batches: BatchService;
  /** How often the children's statuses are read while waiting (default 250 ms). */
  pollMs?: number;
}

export class Delegations implements ServiceTools {
  readonly definition = toolDefinition();

  constructor(private readonly deps: DelegationDeps) {}

  /** delegate_task for one run of task `task`, or nothing for a child (depth limit). */
  forRun(task: { id: string; delegationDepth: number }): ServiceTool[] {
    if (task.delegationDepth + 1 >= MAX_DELEGATION_DEPTH) return [];
    const run = { startedAt: this.deps.clock.now(), calls: 0 }; // the call's number in the run (with the items, it names the call across reruns)
    return [{ toolset: 'delegation', definition: this.definition, execute: (args, signal) => this.delegate(task.id, args, { startedAt: run.startedAt, call: ++run.calls }, signal) }];
  }

  /** Hires the children of one call of a run and waits for them (or until `signal` aborts). */
  async delegate(parentId: string, raw: unknown, run: { startedAt: Date; call: number }, signal: AbortSignal): Promise<DelegateOutcome> {
    const args = parseArgs(raw);
    const items = args.tasks.map(toBatchItem);
    const key = `${run.call}:${createHash('sha256').update(canonicalJson(items)).digest('hex')}`;
    const { batchId, reused } = await this.deps.batches.createChildren(parentId, items, key, run.startedAt);
    const view = await this.awaitEnd(batchId, signal);
    const children = view.items.map(outcomeOf);
    const sum = (pick: (c: ChildOutcome) => string) => children.reduce((s, c) => s + BigInt(pick(c)), 0n).toString();
    return {
      batch_id: batchId,
      reused,
      children,
      escrow: { carved: view.totals.escrow, returned: sum((c) => c.returned), remaining: (await remainingEscrow(this.deps.db, parentId)).toString() },
    };
  }

  /** Waits until every child of the batch has ended; the batch's view then. */
  private async awaitEnd(batchId: string, signal: AbortSignal): Promise<BatchViewT> {
    const pollMs = this.deps.pollMs ?? 250;
    for (;;) {
      if (signal.aborted) throw new Error('aborted while waiting for the children (they are cancelled with this task)');
      const rows = await this.deps.db.select({ status: tasks.status }).from(tasks).where(eq(tasks.batchId, batchId));
      if (rows.every((r) => !['created', 'funded', 'in_progress'].includes(r.status))) return this.deps.batches.viewOwn(batchId);
      await sleep(pollMs, signal);
    }
  }
}

function parseArgs(raw: unknown): DelegateTaskArgsT {
  // One task given as the arguments themselves is a batch of one.
  const wrapped = raw && typeof raw === 'object' && !Array.isArray(raw) && !('tasks' in raw) ? { tasks: [raw] } : raw;
  const parsed = DelegateTaskArgs.safeParse(wrapped);
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.') || '(arguments)'}: ${i.message}`);
    throw new Error(`invalid arguments: ${issues.join('; ')}`);
  }
  return parsed.data;
}

function toBatchItem(t: DelegateTaskArgsT['tasks'][number]): BatchItemInput {
  return {
    ...(t.agent_id !== undefined ? { agent_id: t.agent_id } : {}),
    ...(t.agent_query !== undefined ? { agent_query: { query: t.agent_query, ...(t.min_rating !== undefined ? { min_rating: t.min_rating } : {}) } } : {}),
    description: t.description,
    ...(t.requirements !== undefined ? { requirements: t.requirements } : {}),
    budget: { amount: t.budget, currency: 'USDC', chain: 'base' },
    ...(t.timeout_seconds !== undefined ? { timeout_seconds: t.timeout_seconds } : {}),
    ...(t.toolsets !== undefined ? { toolsets: t.toolsets } : {}),
    ...(t.max_iterations !== undefined ? { max_iterations: t.max_iterations } : {}),
  };
}

function outcomeOf(item: BatchViewT['items'][number]): ChildOutcome {
  return {
    index: item.index,
    task_id: item.task_id,
    agent_id: item.agent_id,
    status: item.status,
    result: item.result ? { type: item.result.type, content: cut(item.result.content) } : null,
    failure: item.failure,
    escrow: item.escrow,
    paid_to_agent: item.released,
    returned: item.refunded,
    usage: item.usage,
  };
}

function cut(content: unknown): unknown {
  const text = typeof content === 'string' ? content : JSON.stringify(content);
  if (text === undefined || text.length <= MAX_CHILD_RESULT_CHARS) return content;
  return `${text.slice(0, MAX_CHILD_RESULT_CHARS)}… [cut: ${text.length - MAX_CHILD_RESULT_CHARS} more characters]`;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
