import { sql } from 'drizzle-orm';
import type { Database, Executor } from '../db/client.js';
import { preparedSql } from '../db/prepared.js';

/**
 * Task changes as they commit, to whoever follows a task (the event streams), in every process:
 * a change notifies `task_changed` with the task's id in its own transaction (so a rolled-back
 * change notifies nobody), and each process listens once (Postgres LISTEN/NOTIFY; PGlite's
 * in-process listener) and tells that task's followers. A notification says only "look again":
 * followers re-read what they show.
 */
export const TASK_CHANNEL = 'task_changed';

const notifyChanged = preparedSql('tasks_notify', sql`select pg_notify(${TASK_CHANNEL}, ${sql.placeholder('taskId')}::text)`);

/** Called by tasks/ in the transaction of every change a follower can see (status, escrow, progress). */
export async function notifyTaskChanged(tx: Executor, taskId: string): Promise<void> {
  await notifyChanged(tx).execute({ taskId });
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

/** One follower of a task's shared reads (see `SharedTaskReads`). */
export interface SharedReadFollower<S> {
  /** What the task's read number `seq` found (numbers count its reads in this process, in order). */
  next(value: S, seq: number): void;
  /** Read number `seq` failed. */
  failed(err: unknown, seq: number): void;
}

/** A follower's handle on the task it follows. */
export interface FollowedTask {
  /** How many reads of the task have started in this process (the `seq` of the latest). */
  readonly started: number;
  /** How many changes of the task were notified since it was first followed here. */
  readonly changes: number;
  /** Reads the task again, from a read that starts after now (after one in flight, if any). */
  look(): void;
  /** Reads the task unless a read is in flight or one started less than `maxAgeMs` ago (time alone can change a task). */
  refresh(maxAgeMs: number): void;
  /** Stops following; the task is unfollowed when its last follower stops. */
  stop(): void;
}

interface FollowedEntry<S> {
  followers: Set<SharedReadFollower<S>>;
  /** The feed's subscription, once it is listening. */
  subscribed: Promise<() => void>;
  reading: boolean;
  /** A change arrived during the read in flight: read once more after it. */
  again: boolean;
  started: number;
  startedAt: number;
  changes: number;
}

/**
 * One read per task per change, shared by every follower of the task in this process: the event
 * streams of a task show what one read found, instead of each stream re-reading the task (1 000
 * streams on 100 tasks were 1 000 reads per second of changes; they are now 100).
 *
 * - Reads of a task never overlap, and every follower gets each result, numbered, in order.
 * - Changes notified during a read coalesce into one more read after it, so the last read a
 *   follower gets always began after the last change it could have been told of.
 * - What `read` returns must not depend on who follows (it is handed to all of them): a follower
 *   that may see only part of it, or not at all, checks that itself (tasks/event-stream.ts).
 */
export class SharedTaskReads<S> {
  private readonly entries = new Map<string, FollowedEntry<S>>();

  constructor(
    private readonly feed: TaskChangeFeed,
    private readonly read: (taskId: string) => Promise<S>,
  ) {}

  /** Follows the task's reads; resolves once its changes are listened to (throws if they cannot be). */
  async follow(taskId: string, follower: SharedReadFollower<S>): Promise<FollowedTask> {
    let entry = this.entries.get(taskId);
    if (!entry) {
      const created: FollowedEntry<S> = {
        followers: new Set(),
        subscribed: this.feed.follow(taskId, () => this.changed(taskId, created)),
        reading: false,
        again: false,
        started: 0,
        startedAt: 0,
        changes: 0,
      };
      created.subscribed.catch(() => {
        if (this.entries.get(taskId) === created) this.entries.delete(taskId); // the next follower tries again
      });
      this.entries.set(taskId, (entry = created));
    }
    const e = entry;
    e.followers.add(follower);
    try {
      await e.subscribed;
    } catch (err) {
      e.followers.delete(follower);
      throw err;
    }
    return {
      get started() {
        return e.started;
      },
      get changes() {
        return e.changes;
      },
      look: () => this.look(taskId, e),
      refresh: (maxAgeMs) => {
        if (!e.reading && performance.now() - e.startedAt >= maxAgeMs) this.look(taskId, e);
      },
      stop: () => this.stop(taskId, e, follower),
    };
  }

  /** How many tasks are followed in this process. */
  get followed(): number {
    return this.entries.size;
  }

  private changed(taskId: string, entry: FollowedEntry<S>): void {
    entry.changes++;
    this.look(taskId, entry);
  }

  private look(taskId: string, entry: FollowedEntry<S>): void {
    if (entry.followers.size === 0) return;
    if (entry.reading) {
      entry.again = true;
      return;
    }
    entry.reading = true;
    entry.startedAt = performance.now();
    void this.readFor(taskId, entry, ++entry.started);
  }

  private async readFor(taskId: string, entry: FollowedEntry<S>, seq: number): Promise<void> {
    let outcome: { value: S } | { err: unknown };
    try {
      outcome = { value: await this.read(taskId) };
    } catch (err) {
      outcome = { err };
    }
    try {
      for (const follower of [...entry.followers]) {
        if ('value' in outcome) follower.next(outcome.value, seq);
        else follower.failed(outcome.err, seq);
      }
    } finally {
      entry.reading = false;
      if (entry.again) {
        entry.again = false;
        this.look(taskId, entry);
      }
    }
  }

  private stop(taskId: string, entry: FollowedEntry<S>, follower: SharedReadFollower<S>): void {
    if (!entry.followers.delete(follower) || entry.followers.size > 0) return;
    if (this.entries.get(taskId) === entry) this.entries.delete(taskId);
    void entry.subscribed.then((unfollow) => unfollow(), () => undefined);
  }
}
