/**
 * `npm run demo`: the batch-delegation pattern end to end, with nothing to configure. Starts the
 * service in this process (fresh PGlite database in a temp directory, fresh anvil chain, API on
 * 127.0.0.1, dispatcher and settlement worker), registers two webhook agents it serves itself
 * (and a hosted LLM agent when LLM_BASE_URL/LLM_API_KEY or OPENAI_API_KEY is set), then, as
 * the client in demo wallet anvil 4 paying with the stock @x402/fetch client: searches, creates
 * and funds three tasks in parallel, polls them to completion, collects the results, waits for
 * the payouts on chain and prints what it cost. Then the same client hires with the batch resource
 * (POST /v1/batches): three tasks paid with ONE payment, and research → write where the writer gets
 * the research in its brief; it prints the task tree with every on-chain movement and checks that
 * the client paid exactly escrows + batch fees + polls. Last, sub-delegation: a hosted LLM agent
 * (against a loopback chat-completions stand-in unless an LLM is configured) hires two children
 * with delegate_task, paid from its own escrow; it prints that tree and checks its money against
 * the ledger, the status views and the chain. Exits 0, or 1 with the reason.
 */
import { DemoError, SEED_SUBTASKS, runDemo } from './demo/run.js';

const WATCHDOG_MS = 120_000;

const watchdog = setTimeout(() => {
  console.error(`\ndemo failed: no result after ${WATCHDOG_MS / 1000} s (watchdog)`);
  process.exit(1);
}, WATCHDOG_MS);
watchdog.unref();

// Ctrl-C: stop at the next step and clean up (anvil, temp directory); a second Ctrl-C quits at once.
const interrupt = new AbortController();
process.on('SIGINT', () => {
  if (interrupt.signal.aborted) process.exit(130);
  console.error('\ninterrupted: shutting down (Ctrl-C again to quit at once)');
  interrupt.abort();
});

try {
  const summary = await runDemo({ timeoutMs: WATCHDOG_MS - 15_000, signal: interrupt.signal });
  clearTimeout(watchdog);
  if (!summary.ok) {
    const reasons = [
      ...(summary.budget.ok ? [] : [`the client paid ${summary.budget.actual} atomic USDC, expected ${summary.budget.expected}`]),
      ...summary.tasks.filter((t) => t.status !== 'completed' && SEED_SUBTASKS.some((s) => s.description === t.description)).map((t) => `${t.description}: ${t.status}`),
      ...(summary.receipts.unattributed !== 0n ? ['some fees could not be matched to a task'] : []),
      ...summary.batches.batches.filter((b) => b.status !== 'completed').map((b) => `batch ${b.label}: ${b.status}`),
      ...summary.batches.money.checks.filter((c) => !c.ok).map((c) => `batch money check failed: ${c.name}`),
      ...(summary.delegation.parent.status !== 'completed' ? [`the delegating parent: ${summary.delegation.parent.status}`] : []),
      ...summary.delegation.children.filter((c) => c.status !== 'completed').map((c) => `child ${c.taskId}: ${c.status}`),
      ...summary.delegation.money.checks.filter((c) => !c.ok).map((c) => `sub-delegation check failed: ${c.name}`),
    ];
    console.error(`\ndemo failed: ${reasons.join('; ')}`);
    process.exit(1);
  }
  process.exit(0);
} catch (err) {
  clearTimeout(watchdog);
  const message = err instanceof DemoError ? err.message : err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  console.error(`\ndemo failed: ${message}`);
  process.exit(1);
}
