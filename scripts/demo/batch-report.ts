import type { BatchDemoSummary, DemoBatch, DemoBatchItem } from './batches.js';
import { delta, shortHex, table, usdc } from './format.js';

/** The batch part's printout: the tree of tasks with their on-chain movements, and the money check. */

export function printBatchReport(s: BatchDemoSummary, statusPrice: bigint, log: (line: string) => void): void {
  log('');
  log('▸ Task tree of the batches: status, cost and on-chain movements');
  s.batches.forEach((b, i) => printBatch(b, i === s.batches.length - 1, log));
  printMoney(s, statusPrice, log);
}

function printBatch(b: DemoBatch, last: boolean, log: (line: string) => void): void {
  const [branch, stem] = last ? ['└─', '   '] : ['├─', '│  '];
  log(`  ${branch} ${b.batchId} ${b.label} (${b.title}): ${b.status}, paid ${usdc(b.paid)} = escrows ${usdc(b.escrow)} + fee ${usdc(b.fee)}, ${b.polls} polls`);
  log(`  ${stem}   escrow    ${usdc(b.paid).padStart(8)}  client → escrow wallet, ONE payment for ${b.items.length} escrows + fee, tx ${shortHex(b.fundTxHash)}`);
  b.items.forEach((item, i) => printItem(item, b, `  ${stem}`, i === b.items.length - 1, log));
}

function printItem(item: DemoBatchItem, b: DemoBatch, indent: string, last: boolean, log: (line: string) => void): void {
  const [branch, stem] = last ? ['└─', '   '] : ['├─', '│  '];
  const cost = item.escrow - item.refunded;
  const after = item.dependsOn.length ? `, after ${item.dependsOn.map((d) => `#${d}`).join(', ')}` : '';
  log(`${indent}${branch} #${item.index} ${item.taskId} ${item.description}: ${item.agentName}, ${item.status}, cost ${usdc(cost)}${after}`);
  for (const p of item.predecessors) {
    log(`${indent}${stem}   brief     task.predecessors: #${p.index} ${p.task_id} ${p.status}${p.result ? `, its ${p.result.type} result` : `, no result (${p.failure ?? '?'})`}`);
  }
  log(`${indent}${stem}   escrow    ${usdc(item.escrow).padStart(8)}  held in the escrow wallet (from the batch's payment ${shortHex(b.fundTxHash)})`);
  for (const p of item.payouts) {
    const to = p.kind === 'release' ? `→ ${item.agentName} payout ${shortHex(p.to)}` : `→ client ${shortHex(p.to)}`;
    const keeps = p.kind === 'release' && item.escrow > p.amount ? ` (platform fee ${usdc(item.escrow - p.amount)} stays in escrow)` : '';
    log(`${indent}${stem}   ${p.kind.padEnd(9)} ${usdc(p.amount).padStart(8)}  ${to} ${p.status}, tx ${shortHex(p.txHash)}${keeps}`);
  }
  if (item.payouts.length === 0) log(`${indent}${stem}   (no release or refund)`);
}

function printMoney(s: BatchDemoSummary, statusPrice: bigint, log: (line: string) => void): void {
  const m = s.money;
  const mark = (ok: boolean) => (ok ? '✓' : '✗');
  const items = s.batches.reduce((n, b) => n + b.items.length, 0);
  log('');
  log('  Money of the batches (client paid = escrows + batch fees + polls)');
  log(`    escrows            ${usdc(m.escrows).padStart(10)}  (${items} items in ${s.batches.length} batches)`);
  log(`    batch fees         ${usdc(m.batchFees).padStart(10)}  (${s.batches.length} × one fee, each paid with its escrows in ONE payment)`);
  log(`    polls              ${usdc(m.pollingFees).padStart(10)}  (${s.calls.batchPolls} batch + ${s.calls.statusPolls} status polls × ${usdc(statusPrice)})`);
  if (m.refunds > 0n) log(`    refunded           ${usdc(-m.refunds).padStart(10)}`);
  log(`    expected total     ${usdc(m.expected).padStart(10)}`);
  log(`    client paid        ${usdc(m.actual).padStart(10)}  (balance change on chain) ${m.actual === m.expected ? '✓ matches' : '✗ DOES NOT MATCH'}`);
  log(`    receipts           ${usdc(m.receipts.total).padStart(10)}  (${m.receipts.batchPayments} batch payments + ${m.receipts.polls} polls, GET /v1/receipts)`);
  log('');
  const wallets = [m.client, m.escrowWallet, m.feeWallet, ...m.agentWallets.filter((w) => w.expected !== 0n || w.change !== 0n)];
  for (const line of table(
    ['wallet', 'address', 'before', 'after', 'change'],
    wallets.map((w) => [w.label, shortHex(w.address), usdc(w.before), usdc(w.after), delta(w.change)]),
    { align: ['left', 'left', 'right', 'right', 'right'], indent: '    ' },
  )) {
    log(line);
  }
  log('');
  for (const c of m.checks) log(`    ${mark(c.ok)} ${c.name}`);
}
