/**
 * Child side of bench/batch.ts (`--serve`): the dispatch bench's app child (bench/dispatch/app.ts:
 * the real app with x402 on, on the parent's anvil; bench/dispatch/loops.ts: two dispatchers and
 * one settlement worker looping), plus the two questions the batch bench asks of its database: the
 * ledger check and the payments of a set of payers.
 */
import { sql } from 'drizzle-orm';
import { payments } from '../../src/db/schema.js';
import { checkLedger } from '../../src/ledger/ledger.js';
import { paymentCounts, registerAgent, report, serveDispatchApp, type ChildApp } from '../dispatch/app.js';
import type { Child } from '../dispatch/children.js';
import { Loops } from '../dispatch/loops.js';
import type { FromChild, Request } from '../dispatch/protocol.js';
import { cpuMsSince, serveChild, tell } from '../lib.js';

/** Payments of some payers with one status: how many, their sum (atomic USDC) and their distinct settlement transactions. */
export interface PaidBy {
  status: string;
  n: number;
  amount: string;
  txs: number;
}

export interface LedgerResult {
  ok: boolean;
  total: string;
  unbalanced: number;
}

export type BatchRequest = Request | { type: 'ledger' } | { type: 'paid-by'; payers: string[] };

/** The dispatch child's `call`, with the batch bench's own requests too. */
export const ask = <T>(child: Child, req: BatchRequest): Promise<T> => child.call<T>(req as Request);

async function handle(s: ChildApp, loops: Loops, req: BatchRequest): Promise<unknown> {
  switch (req.type) {
    case 'register-agent':
      return registerAgent(s, req);
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
    case 'ledger': {
      const r = await checkLedger(s.app.db);
      return { ok: r.ok, total: r.total.toString(), unbalanced: r.unbalancedMovements.length } satisfies LedgerResult;
    }
    case 'paid-by': {
      const payers = req.payers.map((p) => p.toLowerCase());
      const rows = await s.app.db
        .select({
          status: payments.status,
          n: sql<number>`count(*)::int`,
          amount: sql<string>`coalesce(sum(${payments.amount}), 0)::text`,
          txs: sql<number>`count(distinct ${payments.txHash})::int`,
        })
        .from(payments)
        .where(sql`lower(${payments.payerAddress}) in (${sql.join(payers.map((p) => sql`${p}`), sql`, `)})`)
        .groupBy(payments.status);
      return rows.map((r) => ({ status: r.status, n: Number(r.n), amount: String(r.amount), txs: Number(r.txs) })) satisfies PaidBy[];
    }
    default:
      throw new Error(`bench/batch child: no such request ${req.type}`);
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
  await serveChild<BatchRequest & { id: number }>(closing, (msg) => {
    handle(served, loops, msg).then(
      (value) => tell({ type: 'result', id: msg.id, ok: true, value } satisfies FromChild),
      (err: unknown) =>
        tell({ type: 'result', id: msg.id, ok: false, message: err instanceof Error ? (err.stack ?? err.message) : String(err) } satisfies FromChild),
    );
  });
}
