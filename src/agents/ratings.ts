import { eq, sql } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import type { Db, Executor, Tx } from '../db/client.js';
import type { PaidWrite } from '../payments/paid-write.js';
import { agents, ratings, tasks } from '../db/schema.js';
import { AppError } from '../errors.js';
import { newId } from '../ids.js';
import type { RateAgentInput } from './schemas.js';

export interface RatingCreatedT {
  rating_id: string;
  agent_id: string;
  task_id: string;
  rating: number;
  submitted_at: string;
}

/**
 * A rating is given by the payer of a completed task of that agent, once per task; the
 * agent's running mean is updated in the same transaction. A paid write (payments/paid-write.ts):
 * checked before its fee settles, stored with the fee's booking.
 */
export function ratingWrite(db: Db, clock: Clock, rater: string, agentId: string, input: RateAgentInput): PaidWrite<RatingCreatedT> {
  return {
    check: () => rateable(db, rater, agentId, input),
    apply: (tx) => insertRating(tx, clock, rater, agentId, input),
    taskOf: (rating) => rating.task_id,
  };
}

async function rateable(exec: Executor, rater: string, agentId: string, input: RateAgentInput): Promise<void> {
  const [task] = await exec.select().from(tasks).where(eq(tasks.id, input.task_id));
  if (!task || task.agentId !== agentId) {
    throw new AppError('task_not_found', `Task ${input.task_id} is not a task of agent ${agentId}`, { param: 'task_id' });
  }
  if (task.payerAddress !== rater.toLowerCase()) throw new AppError('forbidden', 'Only the payer of the task may rate it');
  if (task.status !== 'completed') {
    throw new AppError('invalid_state', `Task ${task.id} is ${task.status}; only completed tasks can be rated`, { param: 'task_id' });
  }
  const [earlier] = await exec.select({ id: ratings.id }).from(ratings).where(eq(ratings.taskId, task.id));
  if (earlier) throw alreadyRated(input.task_id);
}

const alreadyRated = (taskId: string) => new AppError('already_rated', `Task ${taskId} has already been rated`, { param: 'task_id' });

async function insertRating(tx: Tx, clock: Clock, rater: string, agentId: string, input: RateAgentInput): Promise<RatingCreatedT> {
  await rateable(tx, rater, agentId, input);
  const now = clock.now();
  // A concurrent rating of the same task: the unique index refuses it without aborting the transaction.
  const [row] = await tx
    .insert(ratings)
    .values({
      id: newId('rating'),
      agentId,
      taskId: input.task_id,
      raterAddress: rater.toLowerCase(),
      rating: input.rating,
      comment: input.comment ?? null,
      createdAt: now,
    })
    .onConflictDoNothing({ target: ratings.taskId })
    .returning();
  if (!row) throw alreadyRated(input.task_id);
  await tx
    .update(agents)
    .set({ ratingSum: sql`${agents.ratingSum} + ${input.rating}`, ratingCount: sql`${agents.ratingCount} + 1` })
    .where(eq(agents.id, agentId));
  return {
    rating_id: row.id,
    agent_id: agentId,
    task_id: input.task_id,
    rating: row.rating,
    submitted_at: row.createdAt.toISOString(),
  };
}
