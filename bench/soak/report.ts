/** The soak's figures as text (printed by bench/soak.ts, and by the test when it fails). */
import type { SoakReport } from './run.js';

const usdc = (atomic: bigint) => `${(Number(atomic) / 1e6).toFixed(6)} USDC`;

function table(rows: Record<string, number | string>): string[] {
  const entries = Object.entries(rows).sort(([a], [b]) => a.localeCompare(b));
  const width = Math.max(0, ...entries.map(([k]) => k.length));
  return entries.map(([k, v]) => `    ${k.padEnd(width)}  ${v}`);
}

/** The channels: kill points, calls, charges, claims, settlements, refunds, and what the clients saw. */
function channelLines(r: SoakReport): string[] {
  const c = r.books.channels!;
  const lines: string[] = [];
  const kills = Object.entries(r.kills.byKind).filter(([k]) => k.includes('channel'));
  const planned = r.records.filter((x) => x.plan.kind === 'channel' || x.plan.kind === 'channel-failpoint').length;
  lines.push(
    `  channels (batch-settlement): ${c.payers.length} channel payers; their calls ${r.raceChannelRefunds ? 'race' : 'keep clear of'} the settler's idle refund` +
      `${r.raceChannelRefunds ? ' (--race-channel-refunds)' : ''}`,
  );
  lines.push(
    `    kill points hit       ${kills.reduce((n, [, v]) => n + v, 0)} (${kills.map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}); ` +
      `${planned} iterations planned at a channel point`,
  );
  const booked = c.payers.reduce((n, p) => n + p.bookedCalls, 0);
  const charged = c.payers.reduce((n, p) => n + p.booked, 0n);
  const clientServed = (r.channelClients ?? []).reduce((n, x) => n + x.stats.served, 0);
  lines.push(
    `    calls                 ${booked} booked (${usdc(charged)} charged), ${c.payers.reduce((n, p) => n + p.refundedCalls, 0)} charges taken back by the sweep ` +
      `(log: ${r.logs.channelChargesTakenBack}), ${c.payers.reduce((n, p) => n + p.failedCalls, 0)} failed uncharged; ` +
      `${clientServed} answered < 400 to the clients; ${c.payers.reduce((n, p) => n + p.deposits, 0)} deposits booked or taken back`,
  );
  lines.push(`    by purpose and status:`, ...table(c.byPurpose).map((l) => `  ${l}`));
  const waited = r.records.filter((x) => x.reservedMs > 100);
  if (waited.length > 0) {
    lines.push(
      `    dead reservations     ${waited.length} channel-point iterations waited ${(waited.reduce((n, x) => n + x.reservedMs, 0) / 1000).toFixed(1)} s in all ` +
        `for a channel still reserved by a request a kill cut off`,
    );
  }
  lines.push(
    `    contract (fee wallet) claimed ${usdc(c.claimed)}, settled ${usdc(c.settled)}; booked channel_settled ${usdc(c.booked)}; ` +
      `receivable:channel_fees ${usdc(c.receivable)} at the end`,
  );
  const e = c.events;
  lines.push(
    `    on the contract       ${e.deposits.events} deposits (${usdc(e.deposits.amount)}), ${e.claims.events} channel claims in ${e.claims.txs} transactions (${usdc(e.claims.amount)}), ` +
      `${e.refunds.events} refunds (${usdc(e.refunds.amount)} back to the payers), ${e.settles.events} settles into the fee wallet (${usdc(e.settles.amount)})`,
  );
  const l = r.logs.channels;
  lines.push(
    `    settler's log         ${l.runs} runs logged (a run that throws logs none): ${l.claimed} vouchers claimed, ${l.settles} settles, ${usdc(l.booked)} booked, ` +
      `${l.refunded} channels refunded, ${l.dropped} stored channels dropped (drained); final drain ${r.drain ? `${r.drain.drained ? 'done' : 'NOT done'} in ${(r.drain.ms / 1000).toFixed(1)} s` : 'not run'}`,
  );
  for (const p of c.payers) {
    lines.push(
      `    payer ${p.address}: ${p.bookedCalls} calls booked, charged ${usdc(p.booked)}; channel ${p.channelIds.map((id) => id.slice(0, 10)).join(', ') || '-'} ` +
        `balance ${usdc(p.balance)}, claimed ${usdc(p.claimed)}, stored charged ${p.stored === undefined ? 'none (refunded)' : usdc(p.stored)}`,
    );
  }
  for (const x of r.channelClients ?? []) {
    const s = x.stats;
    lines.push(
      `    client ${x.address}: ${s.paidAttempts} channel payments sent (${s.deposits} deposits), ${s.served} served, ${s.resynced} corrective 402s recovered, ` +
        `${s.stateDropped} local states dropped by the soak; refused: ${JSON.stringify(s.refused)}`,
    );
  }
  return lines;
}

export function formatReport(r: SoakReport): string {
  const lines: string[] = [];
  const push = (...l: string[]) => lines.push(...l);
  const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  const avg = (xs: number[]) => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);
  const max = (xs: number[]) => (xs.length === 0 ? 0 : Math.max(...xs));
  const ok = r.violations.length === 0 && r.lostWorst === 0n;

  push('', `## crash-point soak: ${ok ? 'every invariant held' : `${r.violations.length} VIOLATIONS`}`, '');
  push(`  iterations            ${r.iterations}${r.iterations < r.planned ? ` of ${r.planned} planned (time budget)` : ''}`);
  push(`  kill points (SIGKILL) ${r.kills.total}`);
  push(...table(r.kills.byKind));
  push(`  requests              ${r.requests.sent} sent, ${r.requests.answered} answered, ${r.requests.failed} failed (no answer: the kill, or the service down)`);
  const alive = Object.entries(r.requests.failedWhileAlive);
  if (alive.length > 0) push(`  failed while the service was up:`, ...table(Object.fromEntries(alive)));
  push(`  answers by route and status:`, ...table(r.requests.outcomes));
  push(`  agents                briefs received ${JSON.stringify(r.agentCalls.briefs)}, ${r.agentCalls.progressPosted} progress reports, ${r.agentCalls.delivered} deliveries accepted, ` +
    `refused ${JSON.stringify(r.agentCalls.deliverRefused)}, ${r.agentCalls.deliverGaveUp} given up`);
  push(`  payments by final status:`);
  push(...table(Object.fromEntries(Object.entries(r.books.payments).map(([k, v]) => [k, `${v.n} (${usdc(v.amount)})`]))));
  push(`  micro-fees served before settlement ${r.books.deferredCollected} (settled in ${r.books.feeBatches} batch transactions)`);
  push(`  refunded by the recovery sweep   ${r.books.sweepRefunds} payments (sweep log: ${r.logs.recovery.refunded} refunded, ${r.logs.recovery.released} released unsent claims, ${r.logs.recovery.failed} failed)`);
  if (r.books.channels) push(...channelLines(r));
  push(`  tasks by status/escrow:`, ...table(r.books.tasks));
  push(`  chain transfers:`, ...table(r.books.transfers));
  push(`  atomic units lost     ${r.lostFinal} at the last check, ${r.lostWorst} at the worst`);
  push(`  owed, given up        ${r.unpaidFinal} atomic units in failed chain transfers (the books agree; the creditor is short)`);
  push(
    `  timing                wall ${seconds(r.wallMs)}; per iteration: workload ${seconds(avg(r.records.map((x) => x.workloadMs)))} mean, ` +
      `restart ${seconds(avg(r.records.map((x) => x.restartMs)))} mean, quiesce ${seconds(avg(r.records.map((x) => x.quiesceMs)))} mean / ${seconds(max(r.records.map((x) => x.quiesceMs)))} max`,
  );
  const wreck = r.records.reduce(
    (s, x) => ({ p: s.p + x.wreckage.payments, x: s.x + x.wreckage.transfers, t: s.t + x.wreckage.tasks, c: s.c + x.wreckage.channels }),
    { p: 0, x: 0, t: 0, c: 0 },
  );
  push(
    `  wreckage after kills  ${wreck.p} payments, ${wreck.x} transfers, ${wreck.t} tasks in flight` +
      `${r.books.channels ? `, ${wreck.c} atomic units for the channel settler to claim, settle, book or refund` : ''} (summed over the restarts' first look)`,
  );
  const errors = Object.entries(r.logs.errors);
  if (errors.length > 0) push(`  service error log lines (level ≥ error), by message:`, ...table(Object.fromEntries(errors)));
  if (r.transient.length > 0) {
    push(`  seen once, gone on a second look (the live service moved between two reads of a check; not violations):`, ...r.transient.map((t) => `    - ${t}`));
  }
  push(`  service logs          ${r.logDir}`);
  push(`  database              ${r.databaseUrl}`);
  push(`  rerun                 ${r.rerun}`);
  if (r.violations.length > 0) {
    push('', '### violations', ...r.violations.map((v) => `  - ${v}`));
  }
  return lines.join('\n');
}
