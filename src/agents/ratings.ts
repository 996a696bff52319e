import { eq, sql } from 'drizzle-orm';
import type { Clock } from '../clock.js';
import { isUniqueViolation, withTransaction, type Db } from '../db/client.js';
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
 * agent's running mean is updated in the same transaction.
 */
export async function rateAgent(db: Db, clock: Clock, rater: string, agentId: string, input: RateAgentInput): Promise<RatingCreatedT> {
  try {
    return await withTransaction(db, async (tx) => {
      const [task] = await tx.select().from(tasks).where(eq(tasks.id, input.task_id));
      if (!task || task.agentId !== agentId) {
        throw new AppError('task_not_found', `Task ${input.task_id} is not a task of agent ${agentId}`, { param: 'task_id' });
      }
      if (task.payerAddress !== rater.toLowerCase()) throw new AppError('forbidden', 'Only the payer of the task may rate it');
      if (task.status !== 'completed') {
        throw new AppError('invalid_state', `Task ${task.id} is ${task.status}; only completed tasks can be rated`, { param: 'task_id' });
      }
      const now = clock.now();
      const [row] = await tx
        .insert(ratings)
        .values({
          id: newId('rating'),
          agentId,
          taskId: task.id,
          raterAddress: rater.toLowerCase(),
          rating: input.rating,
          comment: input.comment ?? null,
          createdAt: now,
        })
        .returning();
      await tx
        .update(agents)
        .set({ ratingSum: sql`${agents.ratingSum} + ${input.rating}`, ratingCount: sql`${agents.ratingCount} + 1` })
        .where(eq(agents.id, agentId));
      return {
        rating_id: row!.id,
        agent_id: agentId,
        task_id: task.id,
        rating: row!.rating,
        submitted_at: row!.createdAt.toISOString(),
      };
    });
  } catch (err) {
    if (isUniqueViolation(err)) throw new AppError('already_rated', `Task ${input.task_id} has already been rated`, { param: 'task_id' });
    throw err;
  }
}
