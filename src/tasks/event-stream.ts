import { PassThrough, type Readable } from 'node:stream';
import type { SharedTaskReads } from './change-feed.js';
import type { TaskStatusViewT } from './schemas.js';

/**
 * A task's server-sent event stream: the task's status view (status, stage, progress,
 * intermediate result, payouts) as an `event: status` now and after every committed change,
 * until the task is no longer `created` or `in_progress`; then the stream ends. A comment line
 * every `heartbeatMs` keeps proxies from closing it, and has the task re-read (a status that
 * changes with time alone, such as an unfunded task expiring, shows up then).
 *
 * After the first event, the streams of a task in this process share its reads: one read per
 * change (`SharedTaskReads`), whose view each stream checks for its own caller (`viewOf`), so a
 * caller who may no longer read the task sees its stream end.
 */
export interface TaskEventStreamOptions<S> {
  taskId: string;
  /** The caller's view of the task, for the first event (throws when it may not read it). */
  read: () => Promise<TaskStatusViewT>;
  /** The task's reads after each change, shared by all of its streams in this process. */
  reads: SharedTaskReads<S>;
  /** The caller's view in a shared read; throws when the caller may not read the task (the stream ends). */
  viewOf: (shared: S) => TaskStatusViewT | Promise<TaskStatusViewT>;
  heartbeatMs: number;
  /** The id of event `n` (the resume token rides in it). */
  eventId: (n: number) => string;
  /** The number of the first event (a resumed stream continues its numbering). */
  firstEvent?: number;
  onError?: (err: unknown) => void;
}

const FOLLOWED = new Set(['created', 'in_progress']);

/** A view's JSON, once per view object: the streams of a task share the view of each read. */
const serialized = new WeakMap<TaskStatusViewT, string>();
function dataOf(view: TaskStatusViewT): string {
  let data = serialized.get(view);
  if (data === undefined) serialized.set(view, (data = JSON.stringify(view)));
  return data;
}

/** Opens the stream once the first event is ready; a refusal (404, 403) throws before any byte. */
export async function openTaskEventStream<S>(opts: TaskEventStreamOptions<S>): Promise<Readable> {
  const { reads, viewOf } = opts;
  const out = new PassThrough();
  let n = opts.firstEvent ?? 0;
  let last = '';
  let closed = false;
  let started = false;
  /** Shared reads numbered up to `base` began before the first event was sent: never shown. */
  let base = 0;
  /** Views are checked and sent one at a time, in the order of the reads. */
  let sending: Promise<void> = Promise.resolve();
  let heartbeat: NodeJS.Timeout | undefined;

  const send = (view: TaskStatusViewT): void => {
    const data = dataOf(view);
    if (data === last || closed) return;
    last = data;
    out.write(`id: ${opts.eventId(n++)}\nevent: status\ndata: ${data}\n\n`);
    if (!FOLLOWED.has(view.status)) finish();
  };
  const fail = (err: unknown): void => {
    if (closed) return;
    opts.onError?.(err);
    finish();
  };
  const shown = (seq: number): boolean => started && !closed && seq > base;

  const following = await reads.follow(opts.taskId, {
    next: (shared, seq) => {
      if (!shown(seq)) return;
      sending = sending.then(async () => {
        if (closed) return;
        try {
          send(await viewOf(shared));
        } catch (err) {
          fail(err); // the caller may no longer read the task
        }
      });
    },
    failed: (err, seq) => {
      if (shown(seq)) sending = sending.then(() => fail(err));
    },
  });
  const changesBefore = following.changes;
  let first: TaskStatusViewT;
  try {
    first = await opts.read();
  } catch (err) {
    following.stop();
    throw err;
  }
  heartbeat = setInterval(() => {
    if (closed) return;
    out.write(': heartbeat\n\n');
    following.refresh(opts.heartbeatMs / 2);
  }, opts.heartbeatMs);
  heartbeat.unref();
  function finish(): void {
    if (closed) return;
    closed = true;
    clearInterval(heartbeat);
    following.stop();
    out.end();
  }
  out.on('close', finish);
  out.write('retry: 3000\n\n');
  send(first);
  started = true;
  base = following.started;
  // A change committed while the first view was read: the read it caused may have begun before
  // that view and is not shown, so the stream asks for one that begins after it.
  if (!closed && following.changes > changesBefore) following.look();
  return out;
}
