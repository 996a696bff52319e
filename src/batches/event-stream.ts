import { PassThrough, type Readable } from 'node:stream';
import type { TaskChangeFeed } from '../tasks/change-feed.js';
import type { BatchViewT } from './schemas.js';

/**
 * A batch's server-sent event stream: the batch view (every item's status, progress, payouts and
 * result, the totals and the failure report) as an `event: batch` now and after every committed
 * change of any of its items, until the batch is no longer `running`; then the stream ends. Changes
 * come from the task change feed (LISTEN/NOTIFY on Postgres, in-process on PGlite), so a change made
 * by any process reaches the stream. Changes that arrive while the view is being read cause exactly
 * one more read. A comment line every `heartbeatMs` keeps proxies from closing it.
 */
export interface BatchEventStreamOptions {
  /** The items' tasks, whose changes are followed. */
  taskIds: readonly string[];
  /** The caller's view of the batch (throws when it may not read it). */
  read: () => Promise<BatchViewT>;
  feed: TaskChangeFeed;
  heartbeatMs: number;
  /** The id of event `n` (the resume token rides in it). */
  eventId: (n: number) => string;
  /** The number of the first event (a resumed stream continues its numbering). */
  firstEvent?: number;
  onError?: (err: unknown) => void;
}

/** Opens the stream once the first event is ready; a refusal (404) throws before any byte. */
export async function openBatchEventStream(opts: BatchEventStreamOptions): Promise<Readable> {
  const out = new PassThrough();
  let n = opts.firstEvent ?? 0;
  let last = '';
  let closed = false;
  /** A read is in flight (the first one included); `again`: a change came meanwhile. */
  let reading = true;
  let again = false;

  const send = (view: BatchViewT): void => {
    const data = JSON.stringify(view);
    if (data === last || closed) return;
    last = data;
    out.write(`id: ${opts.eventId(n++)}\nevent: batch\ndata: ${data}\n\n`);
    if (view.status !== 'running') finish();
  };
  const reread = (): void => {
    reading = true;
    again = false;
    opts
      .read()
      .then(send, (err: unknown) => {
        if (closed) return;
        opts.onError?.(err);
        finish();
      })
      .finally(() => {
        reading = false;
        if (again && !closed) reread();
      });
  };
  const changed = (): void => {
    if (closed) return;
    if (reading) again = true;
    else reread();
  };

  // Followed before the first read: a change committed while it runs asks for one more.
  const unfollows = await Promise.all(opts.taskIds.map((id) => opts.feed.follow(id, changed)));
  const unfollowAll = () => unfollows.forEach((unfollow) => unfollow());
  let first: BatchViewT;
  try {
    first = await opts.read();
  } catch (err) {
    unfollowAll();
    throw err;
  }
  const heartbeat = setInterval(() => {
    if (!closed) out.write(': heartbeat\n\n');
  }, opts.heartbeatMs);
  heartbeat.unref();
  function finish(): void {
    if (closed) return;
    closed = true;
    clearInterval(heartbeat);
    unfollowAll();
    out.end();
  }
  out.on('close', finish);
  out.write('retry: 3000\n\n');
  send(first);
  reading = false;
  if (again && !closed) reread();
  return out;
}
