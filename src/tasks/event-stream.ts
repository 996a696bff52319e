import { PassThrough, type Readable } from 'node:stream';
import type { TaskChangeFeed } from './change-feed.js';
import type { TaskStatusViewT } from './schemas.js';

/**
 * A task's server-sent event stream: the task's status view (status, stage, progress,
 * intermediate result, payouts) as an `event: status` now and after every committed change,
 * until the task is no longer `created` or `in_progress`; then the stream ends. A comment line
 * every `heartbeatMs` keeps proxies from closing it, and re-reads the task (a status that changes
 * with time alone, such as an unfunded task expiring, shows up then).
 */
export interface TaskEventStreamOptions {
  taskId: string;
  /** The caller's view of the task (throws when it may not read it). */
  read: () => Promise<TaskStatusViewT>;
  feed: TaskChangeFeed;
  heartbeatMs: number;
  /** The id of event `n` (the resume token rides in it). */
  eventId: (n: number) => string;
  /** The number of the first event (a resumed stream continues its numbering). */
  firstEvent?: number;
  onError?: (err: unknown) => void;
}

const FOLLOWED = new Set(['created', 'in_progress']);

/** Opens the stream once the first event is ready; a refusal (404, 403) throws before any byte. */
export async function openTaskEventStream(opts: TaskEventStreamOptions): Promise<Readable> {
  const out = new PassThrough();
  let n = opts.firstEvent ?? 0;
  let last = '';
  let reading: Promise<void> | null = null;
  let again = false;
  let closed = false;
  let started = false;
  let heartbeat: NodeJS.Timeout | undefined;

  const send = (view: TaskStatusViewT): void => {
    const data = JSON.stringify(view);
    if (data === last || closed) return;
    last = data;
    out.write(`id: ${opts.eventId(n++)}\nevent: status\ndata: ${data}\n\n`);
    if (!FOLLOWED.has(view.status)) finish();
  };
  // Changes arriving during a read coalesce into one more read.
  const look = (): void => {
    if (closed) return;
    if (reading || !started) {
      again = true;
      return;
    }
    reading = opts
      .read()
      .then(send, (err: unknown) => {
        opts.onError?.(err);
        finish();
      })
      .finally(() => {
        reading = null;
        if (again) {
          again = false;
          look();
        }
      });
  };

  const unfollow = await opts.feed.follow(opts.taskId, look);
  let first: TaskStatusViewT;
  try {
    first = await opts.read();
  } catch (err) {
    unfollow();
    throw err;
  }
  heartbeat = setInterval(() => {
    if (closed) return;
    out.write(': heartbeat\n\n');
    look();
  }, opts.heartbeatMs);
  heartbeat.unref();
  function finish(): void {
    if (closed) return;
    closed = true;
    clearInterval(heartbeat);
    unfollow();
    out.end();
  }
  out.on('close', finish);
  out.write('retry: 3000\n\n');
  send(first);
  started = true;
  if (again) {
    again = false;
    look(); // a change committed while the first view was read
  }
  return out;
}
