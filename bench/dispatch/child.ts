/**
 * Child side (bench/dispatch.ts with `--serve`): serves the app on loopback and answers the
 * parent's requests, one `result` per request id.
 */
import { cpuMsSince, serveChild, tell } from '../lib.js';
import { fund, paymentCounts, registerAgent, report, serveDispatchApp, type ChildApp } from './app.js';
import { Loops } from './loops.js';
import type { FromChild, Request } from './protocol.js';
import { rawClaim } from './raw-claim.js';

async function handle(s: ChildApp, loops: Loops, req: Request): Promise<unknown> {
  switch (req.type) {
    case 'register-agent':
      return registerAgent(s, req);
    case 'raw-claim':
      return rawClaim(s, req);
    case 'fund':
      return fund(s, req);
    case 'loops-start':
      return loops.start(req);
    case 'wait':
      return loops.wait(req);
    case 'loops-stop':
      return loops.stop();
    case 'report':
      return report(s, req.agentId);
    case 'payments':
      return paymentCounts(s);
    case 'cpu':
      return cpuMsSince({ user: 0, system: 0 });
    case 'warnings':
      return [...s.warnings];
  }
}

export async function serve(): Promise<void> {
  const served = await serveDispatchApp();
  const loops = new Loops(served);
  const closing = {
    app: served.app,
    close: async () => {
      if (loops.active) await loops.stop().catch(() => undefined);
      await served.close();
    },
  };
  await serveChild<Request & { id: number }>(closing, (msg) => {
    handle(served, loops, msg).then(
      (value) => tell({ type: 'result', id: msg.id, ok: true, value } satisfies FromChild),
      (err: unknown) =>
        tell({ type: 'result', id: msg.id, ok: false, message: err instanceof Error ? (err.stack ?? err.message) : String(err) } satisfies FromChild),
    );
  });
}
