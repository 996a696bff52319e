/**
 * task-escrow CLI: `hire`, `batch FILE`, `status [--watch]`, `receipts`, on top of the SDK
 * (sdk/src/index.ts): every HTTP call and x402 payment is the SDK's.
 *
 * Settings, as the SDK and scripts take them:
 * - service: TASK_ESCROW_URL, else BASE_URL, else http://127.0.0.1:$PORT (scripts/base-url.ts);
 * - wallet: TASK_ESCROW_PRIVATE_KEY (0x + 64 hex), never printed;
 * - spend caps: --max-per-call / --max-per-session (decimal USDC), else TASK_ESCROW_MAX_PER_CALL /
 *   TASK_ESCROW_MAX_PER_SESSION, else 1.5 and 5.
 *
 * Exit codes: 0 ok; 1 a task or batch item ended other than completed; 2 usage error;
 * 3 refused by a spend cap (nothing paid); 4 the service answered an error; 5 anything else.
 */
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { privateKeyToAccount } from 'viem/accounts';
import { serviceBaseUrl } from '../scripts/base-url.js';
import {
  SpendLimitError,
  TaskEscrowApiError,
  TaskEscrowClient,
  usdc,
  type BatchInputItem,
  type BatchResult,
  type Budget,
  type Receipt,
  type TaskStatus,
} from '../sdk/src/index.js';

export const EXIT = { ok: 0, taskFailed: 1, usage: 2, spendLimit: 3, api: 4, other: 5 } as const;

class UsageError extends Error {
  override readonly name = 'UsageError';
}

type Env = Record<string, string | undefined>;
interface Io {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  env: Env;
}

const COMMON_OPTIONS = {
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  'max-per-call': { type: 'string' },
  'max-per-session': { type: 'string' },
} as const satisfies ParseArgsConfig['options'];

const COMMON_HELP = `Common options:
  --json                   machine output (one JSON document on stdout; errors as JSON on stderr)
  --max-per-call USDC      most one payment may be (env TASK_ESCROW_MAX_PER_CALL, default 1.5)
  --max-per-session USDC   most this run may pay in all (env TASK_ESCROW_MAX_PER_SESSION, default 5)
  -h, --help               this help

Environment:
  TASK_ESCROW_URL | BASE_URL | PORT   the service (default http://127.0.0.1:3000)
  TASK_ESCROW_PRIVATE_KEY             the paying wallet (0x + 64 hex digits); never printed`;

const HELP: Record<string, string> = {
  main: `Usage: task-escrow <command> [options]

Commands:
  hire       hire an agent: create the task and fund its escrow (optionally wait for the result)
  batch      hire many agents with one payment from a JSON file; prints results in order
  status     a task's status, or --watch it to the end with a progress bar
  receipts   the wallet's settled x402 payments

Run \`task-escrow <command> --help\` for a command's options.

Exit codes: 0 ok, 1 a task/item did not complete, 2 usage, 3 spend cap refused (nothing paid),
4 the service answered an error, 5 other.

${COMMON_HELP}`,
  hire: `Usage: task-escrow hire (--agent ID | --query TEXT) --budget USDC --description TEXT [--wait]

Creates a task and funds its escrow (two payments: the create fee, then budget + funding fee).
Prints the task id; with --wait, follows the task to its end and prints its result.

Options:
  --agent ID             the agent to hire
  --query TEXT           or: the best-ranked online agent matching TEXT whose base rate fits the budget
  --budget USDC          the escrow, decimal USDC (e.g. 0.2)
  --description TEXT     what to do
  --timeout-seconds N    how long the agent may work
  --wait                 wait for the end and print the result (exit 1 if it did not complete)

${COMMON_HELP}`,
  batch: `Usage: task-escrow batch FILE.json [--policy fail_fast|continue] [--max-concurrency N] [--max-spend USDC]

Hires every item of FILE with one payment (POST /v1/batches), follows the batch to its end, prints
each item's result in input order and the failure report. Exit 1 if any item did not complete.

FILE holds the items array, or a batch body {items, policy?, max_concurrency?, max_spend?}. Each item is
what POST /v1/batches takes (agent_id or agent_query, description, budget, depends_on?, …); a budget is
the API's object {amount (atomic), currency, chain}, or decimal USDC as a string or number ("0.2").

Options:
  --policy P             fail_fast (default) or continue; overrides FILE
  --max-concurrency N    items running at once (default 3); overrides FILE
  --max-spend USDC       refuse the batch if escrows + fee exceed this; overrides FILE

${COMMON_HELP}`,
  status: `Usage: task-escrow status TASK_ID [--watch] [--poll]

Prints the task's status (one paid call). With --watch, follows it to its end (the event stream,
falling back to polls) with a progress bar, in place on a terminal, one line per change otherwise;
exit 1 if it ended other than completed.

Options:
  --watch                follow the task to its end
  --poll                 with --watch: poll the status instead of the event stream

${COMMON_HELP}`,
  receipts: `Usage: task-escrow receipts [--limit N]

Lists the wallet's settled x402 payments (GET /v1/receipts, free, SIWE-signed, every page).

Options:
  --limit N              page size (default 100)

${COMMON_HELP}`,
};

/** Decimal USDC → atomic string, with a usage error naming the option. */
function usdcOption(value: string, what: string): string {
  try {
    return usdc(value);
  } catch {
    throw new UsageError(`${what}: not a USDC amount with at most 6 decimals: ${JSON.stringify(value)}`);
  }
}

function intOption(value: string | undefined, what: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value.trim())) throw new UsageError(`${what}: not a whole number: ${JSON.stringify(value)}`);
  return Number(value);
}

/** "1500000" → "1.5" */
export function formatUsdc(atomic: string | bigint): string {
  const a = BigInt(atomic);
  const neg = a < 0n;
  const abs = neg ? -a : a;
  const frac = (abs % 1_000_000n).toString().padStart(6, '0').replace(/0+$/, '');
  return `${neg ? '-' : ''}${abs / 1_000_000n}${frac ? `.${frac}` : ''}`;
}

function clientFrom(values: Record<string, unknown>, env: Env): TaskEscrowClient {
  const baseUrl = (() => {
    try {
      return serviceBaseUrl(env);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  })();
  const key = env.TASK_ESCROW_PRIVATE_KEY?.trim();
  if (!key) throw new UsageError('TASK_ESCROW_PRIVATE_KEY is not set: the paying wallet’s private key (0x + 64 hex digits)');
  // Checked here so that nothing downstream can echo a malformed key in its error message.
  if (!/^0x[0-9a-fA-F]{64}$/.test(key)) throw new UsageError('TASK_ESCROW_PRIVATE_KEY is not a private key (0x + 64 hex digits); its value is not shown');
  const account = privateKeyToAccount(key as `0x${string}`);
  const maxPerCall = usdcOption(
    (values['max-per-call'] as string | undefined) ?? env.TASK_ESCROW_MAX_PER_CALL?.trim() ?? '1.5',
    '--max-per-call / TASK_ESCROW_MAX_PER_CALL',
  );
  const maxPerSession = usdcOption(
    (values['max-per-session'] as string | undefined) ?? env.TASK_ESCROW_MAX_PER_SESSION?.trim() ?? '5',
    '--max-per-session / TASK_ESCROW_MAX_PER_SESSION',
  );
  return new TaskEscrowClient({
    baseUrl,
    account,
    spend: { maxPerCall, maxPerSession },
    ...(env.AUTH_DOMAIN?.trim() && { authDomain: env.AUTH_DOMAIN.trim() }),
  });
}

function parse<O extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: O, positionals: boolean) {
  try {
    return parseArgs({ args, options: { ...COMMON_OPTIONS, ...options }, allowPositionals: positionals, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

const json = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x), 2);
const contentText = (c: unknown) => (typeof c === 'string' ? c : JSON.stringify(c));

// ── hire ──────────────────────────────────────────────────────────────────────

async function hire(args: string[], io: Io): Promise<number> {
  const { values } = parse(
    args,
    {
      agent: { type: 'string' },
      query: { type: 'string' },
      budget: { type: 'string' },
      description: { type: 'string' },
      'timeout-seconds': { type: 'string' },
      wait: { type: 'boolean' },
    },
    false,
  );
  if (values.help) return help('hire', io);
  if (!values.agent === !values.query) throw new UsageError('hire: give exactly one of --agent ID or --query TEXT');
  if (!values.budget) throw new UsageError('hire: --budget USDC is required');
  if (!values.description) throw new UsageError('hire: --description TEXT is required');
  const budget = usdcOption(values.budget, '--budget');
  const timeout = intOption(values['timeout-seconds'], '--timeout-seconds');
  const sdk = clientFrom(values, io.env);

  let agentId = values.agent;
  if (!agentId) {
    const found = await sdk.searchAgents({ query: values.query!, max_price: budget, availability: 'online', limit: 1 });
    const agent = found.agents[0];
    if (!agent) throw new TaskEscrowApiError(404, { error: { code: 'no_agent_found', message: `no online agent matches ${JSON.stringify(values.query)} within ${values.budget} USDC` } }, 'hire --query');
    agentId = agent.id;
    if (!values.json) io.stderr.write(`agent ${agent.id} (${agent.name})\n`);
  }
  const hired = await sdk.hire({ agent_id: agentId, description: values.description, budget, ...(timeout !== undefined && { timeout_seconds: timeout }) });
  if (!values.wait) {
    if (values.json) io.stdout.write(`${json({ task_id: hired.task_id, agent_id: agentId, funded: hired.funded, spent: sdk.spending().spent })}\n`);
    else io.stdout.write(`${hired.task_id}\n`);
    return EXIT.ok;
  }
  if (!values.json) io.stdout.write(`${hired.task_id}\n`);
  const bar = values.json ? null : new ProgressLine(io.stderr);
  const status = await sdk.wait(hired.task_id, { ...(bar && { onProgress: (s: TaskStatus) => bar.update(s) }) });
  bar?.finish(status);
  const result = status.status === 'completed' ? await sdk.result(hired.task_id) : null;
  if (values.json) {
    io.stdout.write(`${json({ task_id: hired.task_id, agent_id: agentId, funded: hired.funded, status, result, spent: sdk.spending().spent })}\n`);
  } else if (result) {
    io.stdout.write(`${contentText(result.result.content)}\n`);
  } else {
    io.stdout.write(`task ${hired.task_id} ended ${status.status} (escrow ${status.escrow_status})\n`);
  }
  return status.status === 'completed' ? EXIT.ok : EXIT.taskFailed;
}

// ── batch ─────────────────────────────────────────────────────────────────────

function readBatchFile(file: string): { items: BatchInputItem[]; policy?: string; max_concurrency?: number; max_spend?: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new UsageError(`batch: cannot read ${file}: ${(err as Error).message}`);
  }
  const body = (Array.isArray(raw) ? { items: raw } : raw) as { items?: unknown; policy?: string; max_concurrency?: number; max_spend?: string };
  if (!body || typeof body !== 'object' || !Array.isArray(body.items) || body.items.length === 0)
    throw new UsageError(`batch: ${file} must hold a non-empty items array, or a batch body {items: [...]}`);
  const items = body.items.map((item, i) => {
    if (!item || typeof item !== 'object') throw new UsageError(`batch: item ${i} is not an object`);
    const b = (item as { budget?: unknown }).budget;
    let budget: Budget | string;
    if (typeof b === 'string' || typeof b === 'number') budget = usdcOption(String(b), `batch: items.${i}.budget`);
    else if (b && typeof b === 'object') budget = b as Budget;
    else throw new UsageError(`batch: items.${i}.budget is missing`);
    return { ...(item as object), budget } as BatchInputItem;
  });
  return { ...body, items };
}

async function batch(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    args,
    { policy: { type: 'string' }, 'max-concurrency': { type: 'string' }, 'max-spend': { type: 'string' } },
    true,
  );
  if (values.help) return help('batch', io);
  if (positionals.length !== 1) throw new UsageError('batch: give exactly one FILE.json');
  const file = readBatchFile(positionals[0]!);
  const policy = values.policy ?? file.policy ?? 'fail_fast';
  if (policy !== 'fail_fast' && policy !== 'continue') throw new UsageError(`batch: --policy is fail_fast or continue, not ${JSON.stringify(policy)}`);
  const maxConcurrency = intOption(values['max-concurrency'], '--max-concurrency') ?? file.max_concurrency;
  const maxSpend = values['max-spend'] !== undefined ? usdcOption(values['max-spend'], '--max-spend') : file.max_spend;
  const sdk = clientFrom(values, io.env);
  const live = !values.json && io.stderr.isTTY;
  const out: BatchResult = await sdk.batch(file.items, {
    policy,
    ...(maxConcurrency !== undefined && { max_concurrency: maxConcurrency }),
    ...(maxSpend !== undefined && { max_spend: maxSpend }),
    ...(live && {
      onProgress: (b) => {
        const done = b.items.filter((i) => i.status !== 'created' && i.status !== 'in_progress').length;
        io.stderr.write(`\r\x1b[2K${bar(done / Math.max(1, b.items.length))} ${done}/${b.items.length} items ended · ${b.status}`);
      },
    }),
  });
  if (live) io.stderr.write('\r\x1b[2K');
  const failed = out.results.some((r) => r.status !== 'completed') || out.failures.length > 0;
  if (values.json) {
    io.stdout.write(`${json({ batch_id: out.batch_id, status: out.status, results: out.results, failures: out.failures, totals: out.totals, spent: sdk.spending().spent })}\n`);
    return failed ? EXIT.taskFailed : EXIT.ok;
  }
  io.stdout.write(`batch ${out.batch_id}: ${out.status}\n`);
  for (const r of out.results) {
    const what = r.result ? contentText(r.result.content) : (r.failure ?? '—');
    io.stdout.write(`#${r.index} ${r.status.padEnd(9)} ${r.task_id}  ${what}\n`);
  }
  if (out.failures.length) {
    io.stdout.write(`failures:\n`);
    for (const f of out.failures)
      io.stdout.write(`  #${f.index} ${f.task_id} ${f.status} after ${f.attempts} run(s): ${f.reason} (refunded ${formatUsdc(f.refunded)} USDC)\n`);
  }
  io.stdout.write(`paid ${formatUsdc(sdk.spending().spent)} USDC in this run\n`);
  return failed ? EXIT.taskFailed : EXIT.ok;
}

// ── status ────────────────────────────────────────────────────────────────────

const BAR_WIDTH = 24;
function bar(fraction: number): string {
  const f = Math.min(1, Math.max(0, fraction));
  const full = Math.round(f * BAR_WIDTH);
  return `[${'#'.repeat(full)}${'-'.repeat(BAR_WIDTH - full)}] ${String(Math.round(f * 100)).padStart(3)}%`;
}

function statusLine(s: TaskStatus): string {
  const pct = s.status === 'completed' ? 100 : s.progress_percent;
  return `${bar(pct / 100)} ${s.status} (${s.stage}, escrow ${s.escrow_status})`;
}

/** One line updated in place on a terminal; one line per change otherwise. */
class ProgressLine {
  private last = '';
  constructor(private readonly out: NodeJS.WriteStream) {}
  update(s: TaskStatus): void {
    const line = statusLine(s);
    if (line === this.last) return;
    this.last = line;
    if (this.out.isTTY) this.out.write(`\r\x1b[2K${line}`);
    else this.out.write(`${line}\n`);
  }
  finish(s: TaskStatus): void {
    this.update(s);
    if (this.out.isTTY) this.out.write('\n');
  }
}

async function status(args: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(args, { watch: { type: 'boolean' }, poll: { type: 'boolean' } }, true);
  if (values.help) return help('status', io);
  if (positionals.length !== 1) throw new UsageError('status: give exactly one TASK_ID');
  const taskId = positionals[0]!;
  const sdk = clientFrom(values, io.env);
  if (!values.watch) {
    const s = await sdk.status(taskId);
    io.stdout.write(values.json ? `${json(s)}\n` : `${s.task_id} ${s.status} (${s.stage}, ${s.progress_percent}%, escrow ${s.escrow_status})\n`);
    return EXIT.ok;
  }
  const views: TaskStatus[] = [];
  const line = values.json ? null : new ProgressLine(io.stdout);
  const final = await sdk.wait(taskId, {
    ...(values.poll && { transport: 'poll' as const }),
    onProgress: (s) => {
      views.push(s);
      line?.update(s);
    },
  });
  if (line) line.finish(final);
  else io.stdout.write(`${json({ ...final, views: views.map((v) => ({ status: v.status, stage: v.stage, progress_percent: v.progress_percent })) })}\n`);
  return final.status === 'completed' ? EXIT.ok : EXIT.taskFailed;
}

// ── receipts ──────────────────────────────────────────────────────────────────

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ')).join('\n');
}

async function receipts(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, { limit: { type: 'string' } }, false);
  if (values.help) return help('receipts', io);
  const limit = intOption(values.limit, '--limit');
  const sdk = clientFrom(values, io.env);
  const list: Receipt[] = await sdk.receipts(limit !== undefined ? { limit } : {});
  if (values.json) {
    io.stdout.write(`${json(list)}\n`);
    return EXIT.ok;
  }
  if (list.length === 0) {
    io.stdout.write('no receipts\n');
    return EXIT.ok;
  }
  const rows = [['SETTLED', 'KIND', 'USDC', 'STATUS', 'ENDPOINT', 'TASK', 'TX']];
  for (const r of list) rows.push([r.settled_at, r.kind, formatUsdc(r.amount), r.status, r.endpoint, r.task_id ?? '-', r.tx_hash]);
  const total = list.reduce((s, r) => s + BigInt(r.amount), 0n);
  io.stdout.write(`${table(rows)}\n${list.length} receipts, ${formatUsdc(total)} USDC\n`);
  return EXIT.ok;
}

// ── main ──────────────────────────────────────────────────────────────────────

function help(topic: string, io: Io): number {
  io.stdout.write(`${HELP[topic] ?? HELP.main}\n`);
  return EXIT.ok;
}

const COMMANDS: Record<string, (args: string[], io: Io) => Promise<number>> = { hire, batch, status, receipts };

/** Runs one command line; answers the exit code. Errors are printed here, without the private key. */
export async function main(argv: string[], io: Io = { stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  const [command, ...rest] = argv;
  const wantsJson = argv.includes('--json');
  const key = io.env.TASK_ESCROW_PRIVATE_KEY?.trim();
  const redact = (text: string) => (key && key.length >= 8 ? text.split(key).join('[redacted]').split(key.slice(2)).join('[redacted]') : text);
  try {
    if (!command || command === 'help' || command === '--help' || command === '-h') return help(rest[0] ?? 'main', io);
    const run = COMMANDS[command];
    if (!run) throw new UsageError(`unknown command ${JSON.stringify(command)} (hire, batch, status, receipts; --help)`);
    return await run(rest, io);
  } catch (err) {
    const { code, exit, details } =
      err instanceof UsageError
        ? { code: 'usage', exit: EXIT.usage, details: {} }
        : err instanceof SpendLimitError
          ? { code: 'spend_limit', exit: EXIT.spendLimit, details: { cap: err.cap, requested: err.requested.toString(), limit: err.limit.toString(), spent: err.spent.toString() } }
          : err instanceof TaskEscrowApiError
            ? { code: err.code, exit: EXIT.api, details: { status: err.status, body: err.body } }
            : { code: 'error', exit: EXIT.other, details: {} };
    const name = err instanceof Error ? err.name : 'Error';
    const message = err instanceof Error ? err.message : String(err);
    if (wantsJson) io.stderr.write(`${redact(json({ error: { name, code, message, ...details } }))}\n`);
    else {
      io.stderr.write(redact(`task-escrow: ${name === 'Error' ? '' : `${name}: `}${message}\n`));
      if (exit === EXIT.usage) io.stderr.write(`run \`task-escrow ${COMMANDS[command ?? ''] ? `${command} ` : ''}--help\` for usage\n`);
    }
    return exit;
  }
}

// Always the entry point (bin/task-escrow.mjs imports this file). Exit explicitly: an open
// keep-alive socket must not hold the process.
const code = await main(process.argv.slice(2));
process.exit(code);
