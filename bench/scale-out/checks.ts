/**
 * What must hold once the load has stopped and the service has quiesced, over every configuration
 * of the run (one database): the soak's money invariants (bench/soak/invariants.ts), the admin
 * API's reconciliation and attention list and the receipts (api-checks.ts), and the scale-out's
 * own: each task completed once, each terminal task paid out once (release or refund), one
 * callback per task.
 */
import { sql } from 'drizzle-orm';
import { rowsOf, type Db } from '../../src/db/client.js';
import { platformFee } from '../../src/escrow/outbox.js';
import { checkInvariants, type Parties } from '../soak/invariants.js';
import { attentionCheck, receiptsCheck, reconciliationCheck, type Check } from './api-checks.js';
import type { CallbackFigures } from './callbacks.js';

export type { Check } from './api-checks.js';

async function query<T>(db: Db, q: ReturnType<typeof sql>): Promise<T[]> {
  return rowsOf<T>(await db.execute(q));
}

/** The soak's invariants, one check per kind of problem they report. */
async function soakChecks(db: Db, parties: Parties): Promise<{ checks: Check[]; lost: bigint }> {
  const inv = await checkInvariants(db, parties);
  const kinds: [string, (p: string) => boolean][] = [
    ['ledger sums to 0, movement by movement', (p) => p.startsWith('ledger:')],
    ['escrow and fee wallets hold what their ledger accounts say, solvent', (p) => p.startsWith('reconciliation:') || p.startsWith('wallet ')],
    ["payers' on-chain spend = payments booked/refunded − transfers to them", (p) => p.startsWith('payer ')],
    ["agents' payout wallets = confirmed releases to them", (p) => p.startsWith('agent ')],
    ["each task's escrow account matches its escrow state", (p) => p.startsWith('task ')],
    ['no task or payment stuck, no transfer pending or failed', (p) => p.startsWith('left intermediate') || p.startsWith('failed transfer') || p.startsWith('…')],
    ['every effect has exactly its booked payment', (p) => p.startsWith('effect/payment')],
  ];
  const checks = kinds.map(([name, match]) => {
    const problems = inv.problems.filter(match);
    return { name: `${name} (soak invariants)`, ok: problems.length === 0, detail: problems.length === 0 ? 'holds' : `${problems.length} problems`, problems };
  });
  const unmatched = inv.problems.filter((p) => !kinds.some(([, match]) => match(p)));
  if (unmatched.length > 0) checks.push({ name: 'other soak invariants', ok: false, detail: `${unmatched.length} problems`, problems: unmatched });
  checks.push({ name: 'atomic units lost (soak invariants)', ok: inv.lost === 0n, detail: `${inv.lost}`, problems: inv.lost === 0n ? [] : [`${inv.lost} atomic units`] });
  return { checks, lost: inv.lost };
}

/**
 * Each task made at most one transition to a terminal status, and a completed or failed task
 * exactly its own (an escrow-only event repeats the status: from = to, not a transition).
 */
async function completedOnce(db: Db): Promise<Check> {
  const rows = await query<{ id: string; status: string; completed: number; terminal: number }>(
    db,
    sql`select t.id, t.status,
          count(e.id) filter (where e.to_status = 'completed')::int as completed,
          count(e.id) filter (where e.to_status in ('completed', 'failed', 'cancelled', 'expired', 'disputed'))::int as terminal
        from tasks t left join task_events e on e.task_id = t.id and e.from_status is distinct from e.to_status
        group by t.id, t.status`,
  );
  const bad = rows.filter((r) => r.completed > 1 || r.terminal > 1 || (['completed', 'failed'].includes(r.status) && r.terminal !== 1));
  const done = rows.filter((r) => r.status === 'completed').length;
  const failed = rows.filter((r) => r.status === 'failed').length;
  return {
    name: 'each task completed (or failed) once',
    ok: bad.length === 0,
    detail: `${rows.length} tasks: ${done} completed, ${failed} failed, ${rows.length - done - failed} other (unfunded after a failed request)`,
    problems: bad.slice(0, 20).map((r) => `task ${r.id} (${r.status}): ${r.completed} completed events, ${r.terminal} terminal events`),
  };
}

/** A completed task: one confirmed release to its agent (funded − platform fee), no refund; a failed one: one confirmed full refund to its payer, no release. */
async function payoutsPerTask(db: Db, platformFeeBps: number): Promise<Check> {
  const rows = await query<{
    id: string; status: string; funded: string | null; payer: string; payout: string;
    rel_amount: string | null; rel_to: string | null; rel_status: string | null;
    ref_amount: string | null; ref_to: string | null; ref_status: string | null;
  }>(
    db,
    sql`select t.id, t.status, t.funded_amount::text as funded, t.payer_address as payer, a.payout_address as payout,
               r.amount::text as rel_amount, r.to_address as rel_to, r.status as rel_status,
               f.amount::text as ref_amount, f.to_address as ref_to, f.status as ref_status
        from tasks t join agents a on a.id = t.agent_id
        left join chain_transfers r on r.cause = 'task:' || t.id || ':release'
        left join chain_transfers f on f.cause = 'task:' || t.id || ':refund'
        where t.status in ('completed', 'failed')`,
  );
  const problems: string[] = [];
  const same = (a: string | null, b: string) => a?.toLowerCase() === b.toLowerCase();
  for (const r of rows) {
    const funded = BigInt(r.funded ?? '0');
    if (r.status === 'completed') {
      const net = funded - platformFee(funded, platformFeeBps);
      if (r.rel_status !== 'confirmed' || !same(r.rel_to, r.payout) || r.rel_amount !== net.toString() || r.ref_status !== null) {
        problems.push(`completed task ${r.id}: release ${r.rel_status ?? 'none'} of ${r.rel_amount} to ${r.rel_to} (expected ${net} to ${r.payout}), refund ${r.ref_status ?? 'none'}`);
      }
    } else if (r.ref_status !== 'confirmed' || !same(r.ref_to, r.payer) || r.ref_amount !== funded.toString() || r.rel_status !== null) {
      problems.push(`failed task ${r.id}: refund ${r.ref_status ?? 'none'} of ${r.ref_amount} to ${r.ref_to} (expected ${funded} to ${r.payer}), release ${r.rel_status ?? 'none'}`);
    }
  }
  const released = rows.filter((r) => r.status === 'completed').length;
  return {
    name: 'each completed task released once, each failed task refunded once',
    ok: problems.length === 0,
    detail: `${released} releases, ${rows.length - released} refunds checked (platform fee ${platformFeeBps} bps)`,
    problems: problems.slice(0, 20),
  };
}

/** Every completed or failed task: one callback row, delivered, and the receiver got exactly that event (repeats of it aside); other tasks none. */
async function oneCallbackPerTask(db: Db, received: CallbackFigures): Promise<Check> {
  const rows = await query<{ id: string; status: string; ids: string[] | null; statuses: string[] | null }>(
    db,
    sql`select t.id, t.status, array_agg(c.id order by c.created_at) filter (where c.id is not null) as ids,
               array_agg(c.status order by c.created_at) filter (where c.id is not null) as statuses
        from tasks t left join callback_deliveries c on c.task_id = t.id
        group by t.id, t.status`,
  );
  const problems: string[] = [];
  for (const r of rows) {
    const ids = r.ids ?? [];
    const got = received.eventsByTask.get(r.id) ?? [];
    if (['completed', 'failed'].includes(r.status)) {
      if (ids.length !== 1 || r.statuses?.[0] !== 'delivered' || got.length !== 1 || got[0] !== ids[0]) {
        problems.push(`task ${r.id} (${r.status}): ${ids.length} callback rows ${JSON.stringify(r.statuses ?? [])}, receiver got ${got.length} events ${JSON.stringify(got)}`);
      }
    } else if (ids.length > 0 || got.length > 0) {
      problems.push(`task ${r.id} (${r.status}, not terminal): ${ids.length} callback rows, ${got.length} received`);
    }
  }
  if (received.badSignature > 0) problems.push(`${received.badSignature} callbacks with a bad signature or body`);
  return {
    name: 'one callback per task (signed, delivered)',
    ok: problems.length === 0,
    detail: `${received.received} POSTs received for ${received.eventsByTask.size} tasks, ${received.repeats} repeats of an event already received`,
    problems: problems.slice(0, 20),
  };
}

export interface CheckContext {
  db: Db;
  parties: Parties;
  /** An API's origin and the SIWE domain. */
  baseUrl: string;
  domain: string;
  adminKey: string;
  platformFeeBps: number;
  callbacks: CallbackFigures;
}

export async function runChecks(c: CheckContext): Promise<{ checks: Check[]; lost: bigint }> {
  const soak = await soakChecks(c.db, c.parties);
  const checks: Check[] = [
    ...(await reconciliationCheck(c.baseUrl, c.adminKey)),
    ...soak.checks,
    await attentionCheck(c.baseUrl, c.adminKey),
    await completedOnce(c.db),
    await payoutsPerTask(c.db, c.platformFeeBps),
    await oneCallbackPerTask(c.db, c.callbacks),
    await receiptsCheck(c.db, c.baseUrl, c.domain, c.parties.rpcUrl, c.parties.payers),
  ];
  return { checks, lost: soak.lost };
}
