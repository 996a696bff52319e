import { sql } from 'drizzle-orm';
import type { Database, Executor } from '../db/client.js';

/**
 * Task changes as they commit, to whoever follows a task (the event streams), in every process:
 * a change notifies `task_changed` with the task's id in its own transaction (so a rolled-back
 * change notifies nobody), and each process listens once (Postgres LISTEN/NOTIFY; PGlite's
 * in-process listener) and tells that task's followers. A notification says only "look again":
 * followers re-read what they show.
 */
export const TASK_CHANNEL = 'task_changed';

/** Called by tasks/ in the transaction of every change a follower can see (status, escrow, progress). */
export async function notifyTaskChanged(tx: Executor, taskId: string): Promise<void> {
  await tx.execute(sql`select pg_notify(${TASK_CHANNEL}, ${taskId})`);
}

export class TaskChangeFeed {
  private readonly followers = new Map<string, Set<() => void>>();
  private listening: Promise<() => Promise<void>> | null = null;

  constructor(private readonly database: Pick<Database, 'listen'>) {}

  /** Calls `onChange` after each committed change of the task, until the returned function is called. */
  async follow(taskId: string, onChange: () => void): Promise<() => void> {
    this.listening ??= this.database.listen(TASK_CHANNEL, (id) => this.tell(id), () => this.tellAll());
    try {
      await this.listening;
    } catch (err) {
      this.listening = null; // the next follower tries again
      throw err;
    }
    const set = this.followers.get(taskId) ?? new Set();
    set.add(onChange);
    this.followers.set(taskId, set);
    return () => {
      set.delete(onChange);
      if (set.size === 0 && this.followers.get(taskId) === set) this.followers.delete(taskId);
    };
  }

  /** How many tasks are followed in this process. */
  get followed(): number {
    return this.followers.size;
  }

  async close(): Promise<void> {
    const listening = this.listening;
    this.listening = null;
    this.followers.clear();
    if (listening) await (await listening.catch(() => async () => undefined))();
  }

  private tell(taskId: string): void {
    for (const fn of this.followers.get(taskId) ?? []) fn();
  }

  /** After a lost connection: notifications may have been missed, so every follower looks again. */
  private tellAll(): void {
    for (const set of this.followers.values()) for (const fn of set) fn();
  }
}
