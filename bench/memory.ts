/**
 * Memory of the service as `npm start` runs it on embedded defaults (PGlite in DATA_DIR, the
 * embedded anvil): RSS of the server process right after start and after N paid calls, against
 * the 400 MB target, with anvil's RSS beside it and a breakdown of where the server's memory goes
 * (see bench/README.md).
 *
 *   npm run bench:memory                                  # npm start, fresh DATA_DIR, 10 000 paid calls
 *   npm run bench:memory -- --calls 2000 --payers 8
 *   npm run bench:memory -- --server tsx                  # the former `npm start` (tsx src/server.ts)
 *   npm run bench:memory -- --data-dir ./data --calls 0   # a restart on an existing data dir
 *
 * The service runs as its own process tree (npm → sh → node dist/server.js → anvil guardian →
 * anvil), exactly as a user starts it, with two settings added: PORT=0 and RATE_LIMIT_MAX raised
 * (the default 600 a minute per IP would refuse the load; the limiter keeps one entry for the
 * bench's one address either way). Paid calls are `GET /v1/agents?query=x` (the cheapest priced
 * route) paid by the stock client (`@x402/fetch` + the exact EVM scheme) from the six demo wallets
 * the service prints at start-up, `--payers` at a time. RSS is VmRSS of /proc/<pid>/status, the
 * peak VmHWM. The breakdown comes from bench/memory-probe.cjs, preloaded into the server through
 * NODE_OPTIONS (it is inert in npm, tsc and the tsx CLI); `--no-breakdown` leaves it out.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { x402Client } from '@x402/core/client';
import { registerExactEvmScheme } from '@x402/evm/exact/client';
import { wrapFetchWithPayment } from '@x402/fetch';
import { privateKeyToAccount } from 'viem/accounts';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../src/chain/constants.js';

const TARGET_MB = 400;
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PROBE = fileURLToPath(new URL('./memory-probe.cjs', import.meta.url));
const PAID_PATH = '/v1/agents?query=x';
const START_TIMEOUT_MS = 300_000; // a fresh machine's prestart build plus initdb, on a loaded 2-core box
const STOP_TIMEOUT_MS = 30_000;

const SERVERS = {
  npm: { command: 'npm', args: ['start'], what: '`npm start` (its prestart build, then node dist/server.js)' },
  node: { command: process.execPath, args: ['dist/server.js'], what: '`node dist/server.js` (built beforehand)' },
  tsx: { command: path.join(ROOT, 'node_modules', '.bin', 'tsx'), args: ['src/server.ts'], what: '`tsx src/server.ts` (the former npm start)' },
} as const;
type ServerKind = keyof typeof SERVERS;

// ---------------------------------------------------------------- options

interface Options {
  calls: number;
  payers: number;
  server: ServerKind;
  dataDir: string | undefined;
  keep: boolean;
  settleMs: number;
  breakdown: boolean;
}

function options(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      calls: { type: 'string', default: '10000' },
      payers: { type: 'string', default: '8' },
      server: { type: 'string', default: 'npm' },
      'data-dir': { type: 'string' },
      keep: { type: 'boolean', default: false },
      settle: { type: 'string', default: '10' },
      'no-breakdown': { type: 'boolean', default: false },
    },
  });
  const int = (name: string, raw: string, min: number): number => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got "${raw}"`);
    return n;
  };
  if (!(values.server in SERVERS)) throw new Error(`--server must be one of ${Object.keys(SERVERS).join(', ')}`);
  return {
    calls: int('calls', values.calls, 0),
    payers: int('payers', values.payers, 1),
    server: values.server as ServerKind,
    dataDir: values['data-dir'] ? path.resolve(values['data-dir']) : undefined,
    keep: values.keep,
    settleMs: int('settle', values.settle, 0) * 1000,
    breakdown: !values['no-breakdown'],
  };
}

// ---------------------------------------------------------------- /proc

const MB = 1024 * 1024;
const mb = (bytes: number | undefined | null): string => (bytes === undefined || bytes === null ? '-' : (bytes / MB).toFixed(0));

/** VmRSS and VmHWM (peak RSS) of a process, in bytes; undefined once it is gone. */
function rssOf(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kB = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN) * 1024;
    return { rss: kB('VmRSS'), hwm: kB('VmHWM') };
  } catch {
    return undefined;
  }
}

function processTable(): Array<{ pid: number; ppid: number; comm: string }> {
  const rows: Array<{ pid: number; ppid: number; comm: string }> = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const fields = stat.slice(close + 2).split(' ');
      rows.push({ pid: Number(name), ppid: Number(fields[1]), comm: stat.slice(stat.indexOf('(') + 1, close) });
    } catch {
      /* gone meanwhile */
    }
  }
  return rows;
}

/** The server's descendants (anvil's guardian and anvil) and its ancestors up to the process we spawned (npm, sh, the tsx CLI). */
function relatives(serverPid: number, topPid: number) {
  const table = processTable();
  const byPid = new Map(table.map((p) => [p.pid, p]));
  const descendants: Array<{ pid: number; comm: string }> = [];
  const walk = (pid: number) => {
    for (const p of table) {
      if (p.ppid === pid) {
        descendants.push(p);
        walk(p.pid);
      }
    }
  };
  walk(serverPid);
  const launchers: Array<{ pid: number; comm: string }> = [];
  for (let p = byPid.get(serverPid); p && p.pid !== topPid; ) {
    p = byPid.get(p.ppid);
    if (p) launchers.push(p);
  }
  return {
    anvil: descendants.filter((p) => p.comm === 'anvil').map((p) => p.pid),
    guardian: descendants.filter((p) => p.comm !== 'anvil' && p.comm !== 'esbuild').map((p) => p.pid),
    // tsx's esbuild service (a Go process the server starts under tsx) counts with the launchers.
    launchers: [...launchers, ...descendants.filter((p) => p.comm === 'esbuild')].map((p) => p.pid),
  };
}

const sumRss = (pids: number[]) => pids.reduce((sum, pid) => sum + (rssOf(pid)?.rss ?? 0), 0);

// ---------------------------------------------------------------- the service

interface Service {
  child: ChildProcess;
  serverPid: number;
  url: string;
  readyMs: number;
  output: () => string;
}

async function startService(kind: ServerKind, dataDir: string, probeDir: string | undefined): Promise<Service> {
  const { command, args } = SERVERS[kind];
  const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, PORT: '0', RATE_LIMIT_MAX: '100000000' };
  delete env.DATABASE_URL; // embedded defaults
  delete env.CHAIN_RPC_URL;
  if (probeDir) {
    env.MEMORY_PROBE_DIR = probeDir;
    env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --require ${PROBE}`.trim();
  }
  const started = Date.now();
  const child = spawn(command, [...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let tail = '';
  let pending = '';
  let resolveReady!: (v: { pid: number; url: string }) => void;
  const ready = new Promise<{ pid: number; url: string }>((resolve) => (resolveReady = resolve));
  const onData = (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    tail = (tail + text).slice(-8000);
    pending += text;
    let newline: number;
    while ((newline = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      const m = /"pid":(\d+).*"msg":"task-escrow listening on (http:\/\/[^ "]+)/.exec(line);
      if (m) resolveReady({ pid: Number(m[1]), url: m[2]! });
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', (chunk: Buffer) => (tail = (tail + chunk.toString('utf8')).slice(-8000)));
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code, signal) => reject(new Error(`the service exited (${code ?? signal}) before listening:\n${tail}`))),
  );
  const timeout = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error(`the service did not listen within ${START_TIMEOUT_MS / 1000} s:\n${tail}`)), START_TIMEOUT_MS).unref(),
  );
  const { pid, url } = await Promise.race([ready, exited, timeout]);
  return { child, serverPid: pid, url, readyMs: Date.now() - started, output: () => tail };
}

async function stopService(service: Service): Promise<void> {
  const { child } = service;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    process.kill(service.serverPid, 'SIGTERM'); // the server stops its workers, PGlite and anvil, then npm exits
  } catch {
    /* already gone */
  }
  const timer = setTimeout(() => killGroup(child), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

function killGroup(child: ChildProcess): void {
  try {
    if (child.pid) process.kill(-child.pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
}

// ---------------------------------------------------------------- probe (breakdown)

interface ProbeReport {
  memoryUsage: NodeJS.MemoryUsage;
  wasm: Array<{ origin: string; caller: string; bytes: number; residentBytes: number | null }>;
  residentFileBacked: number;
  residentAnonymous: number;
  residentExecutableAnonymous: number;
}

async function probe(probeDir: string, pid: number, mode: 'plain' | 'gc'): Promise<ProbeReport | undefined> {
  const out = path.join(probeDir, `${pid}.json`);
  const before = existsSync(out) ? statSync(out).mtimeMs : 0;
  writeFileSync(path.join(probeDir, `${pid}.req`), mode);
  for (let i = 0; i < 100; i++) {
    await sleep(100);
    if (existsSync(out) && statSync(out).mtimeMs > before) return JSON.parse(readFileSync(out, 'utf8')) as ProbeReport;
  }
  return undefined;
}

/** `.../node_modules/@electric-sql/pglite/dist/…` → `@electric-sql/pglite`. */
function packageOf(caller: string): string {
  if (caller.includes('node:internal/deps/undici')) return "Node's undici (llhttp)";
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(caller.replaceAll('\\', '/'));
  return m ? m[1]! : 'unknown';
}

interface Breakdown {
  rows: Array<[string, string]>;
}

function breakdownOf(rss: number, r: ProbeReport): Breakdown {
  const pglite = r.wasm.filter((w) => packageOf(w.caller) === '@electric-sql/pglite');
  const others = r.wasm.filter((w) => packageOf(w.caller) !== '@electric-sql/pglite');
  const resident = (list: typeof r.wasm) => list.reduce((s, w) => s + (w.residentBytes ?? w.bytes), 0);
  const heap = r.memoryUsage.heapTotal;
  const accounted = heap + resident(pglite) + resident(others) + r.memoryUsage.arrayBuffers + r.residentFileBacked;
  const pgliteText = pglite.length
    ? pglite.map((w) => `${mb(w.residentBytes)} of ${mb(w.bytes)}`).join(' + ') + (pglite.length > 1 ? ' (initdb leftovers still reachable or not yet collected)' : '')
    : '-';
  return {
    rows: [
      ['V8 heap: committed (used)', `${mb(heap)} (${mb(r.memoryUsage.heapUsed)})`],
      ['PGlite WASM memory: resident of size', pgliteText],
      ['other WASM memories (resident)', `${mb(resident(others))} (${[...new Set(others.map((w) => packageOf(w.caller)))].join(', ') || 'none'})`],
      ['ArrayBuffers / Buffers', mb(r.memoryUsage.arrayBuffers)],
      ['file-backed (node binary, libraries)', mb(r.residentFileBacked)],
      ['rest: JIT and WASM code, V8 zones, malloc', mb(rss - accounted)],
    ],
  };
}

// ---------------------------------------------------------------- paid calls

function payerFetches(): Array<typeof fetch> {
  return DEV_ROLES.demo.map((i) => {
    const client = new x402Client();
    registerExactEvmScheme(client, { signer: privateKeyToAccount(ANVIL_ACCOUNTS[i]!.privateKey) });
    return wrapFetchWithPayment(fetch, client);
  });
}

interface CallResult {
  paid: number;
  failures: Map<string, number>;
  seconds: number;
  peakRss: number;
}

async function paidCalls(service: Service, calls: number, payers: number): Promise<CallResult> {
  const fetches = payerFetches();
  const failures = new Map<string, number>();
  const fail = (why: string) => failures.set(why, (failures.get(why) ?? 0) + 1);
  let next = 0;
  let done = 0;
  let paid = 0;
  let peakRss = 0;
  const started = Date.now();
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssOf(service.serverPid)?.rss ?? 0)), 500);
  const step = Math.max(1, Math.round(calls / 10));
  const lanes = Array.from({ length: payers }, async (_, lane) => {
    const pay = fetches[lane % fetches.length]!;
    while (next < calls) {
      next++;
      try {
        const res = await pay(`${service.url}${PAID_PATH}`, { headers: { accept: 'application/json' } });
        const body = await res.text();
        // Paid: settled (PAYMENT-RESPONSE) or, a micro-fee under the default deferral, served before its batch settlement.
        if (res.status === 200 && (res.headers.get('payment-response') || res.headers.get('x-payment-settlement') === 'deferred')) paid++;
        else fail(`${res.status} ${body.slice(0, 120)}`);
      } catch (err) {
        fail(err instanceof Error ? err.message.slice(0, 120) : String(err));
      }
      done++;
      if (done % step === 0 || done === calls) {
        const s = (Date.now() - started) / 1000;
        console.log(`  ${String(done).padStart(6)} calls  ${s.toFixed(0).padStart(4)} s  ${(done / s).toFixed(1)} calls/s  server RSS ${mb(rssOf(service.serverPid)?.rss)} MB`);
      }
      const failed = done - paid;
      if (failed > 100 && failed > done * 0.05) throw new Error(`too many failed calls (${failed} of ${done}): ${JSON.stringify([...failures])}`);
    }
  });
  try {
    await Promise.all(lanes);
  } finally {
    clearInterval(sampler);
  }
  return { paid, failures, seconds: (Date.now() - started) / 1000, peakRss };
}

// ---------------------------------------------------------------- report

interface Point {
  label: string;
  server: { rss: number; hwm: number } | undefined;
  anvil: number;
  guardian: number;
  launchers: number;
}

function measure(label: string, service: Service): Point {
  const rel = relatives(service.serverPid, service.child.pid!);
  return { label, server: rssOf(service.serverPid), anvil: sumRss(rel.anvil), guardian: sumRss(rel.guardian), launchers: sumRss(rel.launchers) };
}

function printTable(head: string[], body: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  console.log(line(head));
  console.log(`|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`);
  for (const b of body) console.log(line(b));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const opts = options(process.argv.slice(2));
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), 'te-memory-'));
  const fresh = !existsSync(path.join(dataDir, 'pglite', 'PG_VERSION'));
  const probeDir = opts.breakdown ? mkdtempSync(path.join(tmpdir(), 'te-memory-probe-')) : undefined;
  console.log(`bench:memory — ${SERVERS[opts.server].what}, embedded defaults, DATA_DIR ${dataDir} (${fresh ? 'fresh: initdb at start' : 'existing database'})`);
  console.log(`${opts.calls} paid calls of GET ${PAID_PATH}, ${opts.payers} at a time; readings ${opts.settleMs / 1000} s after start and after the calls; target ${TARGET_MB} MB\n`);

  let service: Service | undefined;
  const cleanup = () => {
    if (service) killGroup(service.child);
    if (probeDir) rmSync(probeDir, { recursive: true, force: true });
    if (!opts.dataDir && !opts.keep) rmSync(dataDir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => {
    cleanup();
    process.exit(130);
  });
  try {
    service = await startService(opts.server, dataDir, probeDir);
    console.log(`listening on ${service.url} after ${(service.readyMs / 1000).toFixed(1)} s (server pid ${service.serverPid})`);
    const points: Point[] = [measure('at "listening"', service)];
    await sleep(opts.settleMs);
    points.push(measure(`after start (+${opts.settleMs / 1000} s)`, service));
    const breakdowns: Array<[string, Breakdown]> = [];
    const addBreakdown = async (label: string, mode: 'plain' | 'gc') => {
      if (!probeDir) return;
      const report = await probe(probeDir, service!.serverPid, mode);
      const rss = rssOf(service!.serverPid)?.rss;
      if (report && rss) breakdowns.push([`${label} (RSS ${mb(rss)})`, breakdownOf(rss, report)]);
    };
    await addBreakdown('after start', 'plain');

    let calls: CallResult | undefined;
    if (opts.calls > 0) {
      console.log(`paying ${opts.calls} calls…`);
      calls = await paidCalls(service, opts.calls, opts.payers);
      points.push(measure(`after ${calls.paid} paid calls`, service));
      await sleep(opts.settleMs);
      points.push(measure(`after the calls (+${opts.settleMs / 1000} s)`, service));
      await addBreakdown(`after ${calls.paid} calls`, 'plain');
    }
    if (probeDir) {
      await addBreakdown('after a forced full GC', 'gc');
      points.push(measure('after a forced full GC (probe)', service));
    }

    console.log('');
    printTable(
      ['point', 'server RSS MB', `÷ ${TARGET_MB} MB`, 'server peak (VmHWM) MB', 'anvil MB', 'anvil guardian MB', `launchers (${opts.server === 'npm' ? 'npm, sh' : opts.server === 'tsx' ? 'tsx CLI, esbuild' : 'none'}) MB`],
      points.map((p) => [
        p.label,
        mb(p.server?.rss),
        p.server ? `${(p.server.rss / (TARGET_MB * MB)).toFixed(2)}×` : '-',
        mb(p.server?.hwm),
        mb(p.anvil),
        mb(p.guardian),
        mb(p.launchers),
      ]),
    );
    if (calls) {
      const failed = [...calls.failures].map(([why, n]) => `${n}× ${why}`).join('; ');
      console.log(
        `\n${calls.paid} of ${opts.calls} calls paid and answered 200 in ${calls.seconds.toFixed(0)} s (${(calls.paid / calls.seconds).toFixed(1)} calls/s); peak RSS sampled during the calls ${mb(calls.peakRss)} MB${failed ? `; failures: ${failed}` : ''}`,
      );
    }
    if (breakdowns.length > 0) {
      console.log('\nWhere the server\'s RSS goes (MB; bench/memory-probe.cjs):');
      printTable(
        ['', ...breakdowns.map(([label]) => label)],
        breakdowns[0]![1].rows.map(([name], i) => [name, ...breakdowns.map(([, b]) => b.rows[i]![1])]),
      );
    }
    const reached = points.filter((p) => !p.label.includes('forced')).every((p) => p.server && p.server.rss <= TARGET_MB * MB);
    console.log(`\n${reached ? 'within' : 'ABOVE'} the ${TARGET_MB} MB target at every reading${reached ? '' : ' (see the table)'}`);
  } finally {
    if (service) await stopService(service);
    cleanup();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  },
);
