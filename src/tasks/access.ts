import { eq, sql } from 'drizzle-orm';
import type { AgentsService } from '../agents/service.js';
import type { Clock } from '../clock.js';
import { withTransaction, type Db, type Executor, type Tx } from '../db/client.js';
import { preparedQuery } from '../db/prepared.js';
import { tasks, type AgentRow, type TaskRow } from '../db/schema.js';
import { AppError } from '../errors.js';

/** The task rules that come from configuration. */
export interface TaskRules {
  escrowAddress: string;
  platformFeeBps: number;
  /** Seconds after completion before the escrow is released (a dispute within it freezes it). */
  disputeWindowSeconds: number;
  /** Whether callback_url may point at loopback/private addresses (dev mode only). */
  allowPrivateUrls: boolean;
  fundingWindowSeconds: number;
  timeoutMinSeconds: number;
  timeoutMaxSeconds: number;
  defaultTimeoutSeconds: number;
  cancellationFeeBps: number;
  disputeReviewSeconds: number;
}

export interface TaskDeps {
  db: Db;
  clock: Clock;
  agents: AgentsService;
  rules: TaskRules;
}

export type Access = 'payer' | 'payer_or_agent';

/**
 * Who reads a task: a wallet, and (`session`) the id of the session token it was proven by when that
 * token's revocation is still to be checked: then the read checks it in its own statement, before
 * anything else (auth/session.ts `claims`).
 */
export interface TaskReader {
  address: string;
  session?: string;
}

/** A task by id, prepared: every read of a task by id, on the database or in a transaction. */
const taskById = preparedQuery((db) => db.select().from(tasks).where(eq(tasks.id, sql.placeholder('id'))).prepare('tasks_by_id'));

/**
 * What the three task modules share (client.ts, provider.ts, lifecycle.ts): the database, the
 * clock, the rules, and who may see a task. Only these modules write `tasks` rows.
 */
export abstract class TaskModule {
  protected readonly db: Db;
  protected readonly clock: Clock;
  protected readonly agentsService: AgentsService;
  protected readonly rules: TaskRules;

  constructor(deps: TaskDeps) {
    this.db = deps.db;
    this.clock = deps.clock;
    this.agentsService = deps.agents;
    this.rules = deps.rules;
  }

  protected inTransaction<T>(exec: Tx | undefined, fn: (tx: Tx) => Promise<T>): Promise<T> {
    return exec ? fn(exec) : withTransaction(this.db, fn);
  }

  async require(exec: Executor, id: string): Promise<TaskRow> {
    const [row] = await taskById(exec).execute({ id });
    if (!row) throw new AppError('task_not_found', `Task ${id} does not exist`);
    return row;
  }

  /** The task if `caller` may see it: its payer, or (for status) the assigned agent's owner. */
  protected async readable(caller: string, id: string, access: Access, exec: Executor = this.db): Promise<TaskRow> {
    const task = await this.require(exec, id);
    await this.checkReadable(caller, task, access, () => this.agentsService.require(exec, task.agentId));
    return task;
  }

  /**
   * Throws unless `caller` may see `task` (the rule of `readable`). `agentOf` reads the assigned
   * agent, only for a caller who is not the payer (one check of many readers can share it).
   */
  protected async checkReadable(caller: string, task: Pick<TaskRow, 'id' | 'payerAddress'>, access: Access, agentOf: () => Promise<AgentRow>): Promise<void> {
    const who = caller.toLowerCase();
    if (task.payerAddress === who) return;
    if (access === 'payer_or_agent') {
      const agent = await agentOf();
      if (agent.ownerAddress === who || agent.payoutAddress === who) return;
    }
    throw new AppError('forbidden', `Task ${task.id} belongs to another wallet`);
  }

  /** The task, if `wallet` is the assigned agent's owner or payout wallet. */
  protected async forAgent(wallet: string, id: string, exec: Executor = this.db): Promise<TaskRow> {
    const task = await this.require(exec, id);
    const agent = await this.agentsService.require(exec, task.agentId);
    const who = wallet.toLowerCase();
    if (agent.ownerAddress !== who && agent.payoutAddress !== who) {
      throw new AppError('forbidden', `Only the agent assigned to task ${id} may do this`);
    }
    return task;
  }

}
