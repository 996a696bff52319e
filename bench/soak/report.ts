/** The soak's figures as text (printed by bench/soak.ts, and by the test when it fails). */
import type { SoakReport } from './run.js';

const usdc = (atomic: bigint) => `${(Number(atomic) / 1e6).toFixed(6)} USDC`;

function table(rows: Record<string, number | string>): string[] {
  const entries = Object.entries(rows).sort(([a], [b]) => a.localeCompare(b));
  const width = Math.max(0, ...entries.map(([k]) => k.length));
  return entries.map(([k, v]) => `    ${k.padEnd(width)}  ${v}`);
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
  push(`  tasks by status/escrow:`, ...table(r.books.tasks));
  push(`  chain transfers:`, ...table(r.books.transfers));
  push(`  atomic units lost     ${r.lostFinal} at the last check, ${r.lostWorst} at the worst`);
  push(`  owed, given up        ${r.unpaidFinal} atomic units in failed chain transfers (the books agree; the creditor is short)`);
  push(
    `  timing                wall ${seconds(r.wallMs)}; per iteration: workload ${seconds(avg(r.records.map((x) => x.workloadMs)))} mean, ` +
      `restart ${seconds(avg(r.records.map((x) => x.restartMs)))} mean, quiesce ${seconds(avg(r.records.map((x) => x.quiesceMs)))} mean / ${seconds(max(r.records.map((x) => x.quiesceMs)))} max`,
  );
  const wreck = r.records.reduce((s, x) => ({ p: s.p + x.wreckage.payments, x: s.x + x.wreckage.transfers, t: s.t + x.wreckage.tasks }), { p: 0, x: 0, t: 0 });
  push(`  wreckage after kills  ${wreck.p} payments, ${wreck.x} transfers, ${wreck.t} tasks in flight (summed over the restarts' first look)`);
  const errors = Object.entries(r.logs.errors);
  if (errors.length > 0) push(`  service error log lines (level ≥ error), by message:`, ...table(Object.fromEntries(errors)));
  push(`  service logs          ${r.logDir}`);
  push(`  database              ${r.databaseUrl}`);
  push(`  rerun                 ${r.rerun}`);
  if (r.violations.length > 0) {
    push('', '### violations', ...r.violations.map((v) => `  - ${v}`));
  }
  return lines.join('\n');
}
