/** A server-sent event as the tests read it: fields, or a comment line (`: heartbeat`). */
export interface SseEvent {
  id?: string;
  event?: string;
  data: string;
  comment?: string;
}

export interface SseReader {
  events: SseEvent[];
  /** Resolves with the events once `pred` holds for them (fails after `timeoutMs`). */
  until(pred: (events: SseEvent[]) => boolean, timeoutMs?: number): Promise<SseEvent[]>;
  /** Resolves with every event when the server ends the stream. */
  done: Promise<SseEvent[]>;
  /** Drops the connection. */
  cancel(): Promise<void>;
}

/** Reads a `text/event-stream` response as it arrives. */
export function readEvents(res: Response): SseReader {
  const events: SseEvent[] = [];
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const parse = (block: string) => {
    const event: SseEvent = { data: '' };
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) event.comment = line.slice(1).trim();
      else if (line.startsWith('id: ')) event.id = line.slice(4);
      else if (line.startsWith('event: ')) event.event = line.slice(7);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
    }
    event.data = data.join('\n');
    events.push(event);
  };
  const done = (async () => {
    for (;;) {
      const { value, done: ended } = await reader.read().catch(() => ({ value: undefined, done: true as const }));
      if (ended) return events;
      buffer += decoder.decode(value, { stream: true });
      let i: number;
      while ((i = buffer.indexOf('\n\n')) >= 0) {
        parse(buffer.slice(0, i));
        buffer = buffer.slice(i + 2);
      }
    }
  })();
  return {
    events,
    done,
    until: async (pred, timeoutMs = 15_000) => {
      const end = Date.now() + timeoutMs;
      while (!pred(events)) {
        if (Date.now() > end) throw new Error(`stream: condition not met in ${timeoutMs} ms; events: ${JSON.stringify(events).slice(0, 2000)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return events.filter((e) => e.event === 'status');
    },
    cancel: async () => {
      await reader.cancel().catch(() => undefined);
    },
  };
}
