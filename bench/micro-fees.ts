/**
 * Micro-fees settled in batches (issue 9 point 3), in one run on the embedded anvil and PGlite:
 * - gas per fee: one settlement per poll (settle first, as before) against one Multicall3 batch of
 *   N deferred authorizations, for N = 1, 10, 50, 200; and what that gas costs against the
 *   0.001 USDC fee at BENCH_GAS_GWEI (default 0.01) and BENCH_ETH_USD (default 3000);
 * - what the client waits: sequential paid polls by the stock @x402/fetch client, settled first
 *   against served before settlement (p50, p99 over BENCH_CALLS calls, default 50).
 *
 *   npm run bench:micro-fees
 */
import { wrapFetchWithPayment } from '@x402/fetch';
import { createPublicClient, http, type Hash } from 'viem';
import { DEV_ROLES } from '../src/chain/constants.js';
import { startDevChain } from '../src/chain/dev/devchain.js';
import { chainTarget, resolveWallets } from '../src/chain/wallets.js';
import { MicroFeeSettler } from '../src/payments/micro-fee-settler.js';
import { x402ClientFor } from '../test/helpers/paid.js';
import { demo, positiveInt, serveApp, type Served } from './lib.js';

const GWEI = Number(process.env.BENCH_GAS_GWEI ?? '0.01');
const ETH_USD = Number(process.env.BENCH_ETH_USD ?? '3000');
const FEE_USD = 0.001;
const CALLS = positiveInt('BENCH_CALLS', 50);
const BATCHES = [1, 10, 50, 200] as const;

async function main(): Promise<void> {
  const chain = await startDevChain({ silent: true, fundIndices: [...DEV_ROLES.demo] });
  const rpc = createPublicClient({ transport: http(chain.rpcUrl), cacheTime: 0 });
  const served: Served[] = [];
  try {
    const app = async (deferred: boolean) => {
      const s = await serveApp({
        dirPrefix: 'te-bench-micro-',
        config: { X402_ENABLED: 'true', MICRO_FEES_DEFERRED: String(deferred), MICRO_FEE_PAYER_CAP: '10000000' },
        chainRpcUrl: chain.rpcUrl,
      });
      served.push(s);
      const base = await s.app.listen({ host: '127.0.0.1', port: 0 });
      return { s, url: `${base}/v1/agents?query=x` };
    };
    const first = await app(false);
    const later = await app(true);
    const pay = wrapFetchWithPayment(fetch, x402ClientFor(demo(0)));

    // ── what the client waits ────────────────────────────────────────────────
    const timed = async (url: string) => {
      const ms: number[] = [];
      for (let i = 0; i < CALLS; i++) {
        const t = performance.now();
        const res = await pay(url);
        if (res.status !== 200) throw new Error(`paid poll answered ${res.status}: ${await res.text()}`);
        await res.arrayBuffer();
        ms.push(performance.now() - t);
      }
      return ms.sort((a, b) => a - b);
    };
    const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
    await timed(first.url); // warm-up: caches, JIT
    const settleFirst = await timed(first.url);
    const deferredMs = await timed(later.url);

    // ── gas per fee ──────────────────────────────────────────────────────────
    const one = await pay(first.url);
    const settlement = JSON.parse(Buffer.from(one.headers.get('payment-response')!, 'base64').toString('utf8')) as { transaction: Hash };
    const singleGas = (await rpc.getTransactionReceipt({ hash: settlement.transaction })).gasUsed;
    const { app: deferredApp } = later.s;
    const settler = new MicroFeeSettler({
      db: deferredApp.db,
      lifecycle: deferredApp.services.paymentLifecycle,
      operator: deferredApp.microFees!.operator,
      usdc: chainTarget(deferredApp.config).usdc,
      feeAddress: resolveWallets(deferredApp.config).feeAddress,
      chain: deferredApp.escrow!.usdc,
      batchSize: 1000,
      leaseMs: 60_000,
    });
    await settler.drain(); // the latency run's fees
    const rows: { n: number; gas: bigint }[] = [];
    for (const n of BATCHES) {
      const payers = [0, 1, 2, 3, 4, 5].map((slot) => wrapFetchWithPayment(fetch, x402ClientFor(demo(slot))));
      await Promise.all(Array.from({ length: n }, (_, i) => payers[i % payers.length]!(later.url).then((r) => r.arrayBuffer())));
      const run = await settler.runOnce();
      if (run.collected !== n) throw new Error(`a batch of ${n} collected ${run.collected}`);
      rows.push({ n, gas: run.gasUsed });
    }

    const usd = (gas: number) => gas * GWEI * 1e-9 * ETH_USD;
    console.log(`\nmicro-fees (0.001 USDC polls), anvil + PGlite; gas priced at ${GWEI} gwei and $${ETH_USD}/ETH\n`);
    console.log('| settlement | authorizations | gas | gas per fee | gas cost / fee |');
    console.log('|---|--:|--:|--:|--:|');
    console.log(`| one per poll (settle first) | 1 | ${singleGas} | ${singleGas} | ${((100 * usd(Number(singleGas))) / FEE_USD).toFixed(0)} % |`);
    for (const r of rows) {
      const per = Number(r.gas) / r.n;
      console.log(`| Multicall3 batch | ${r.n} | ${r.gas} | ${Math.round(per)} | ${((100 * usd(per)) / FEE_USD).toFixed(0)} % |`);
    }
    const big = rows[rows.length - 1]!;
    console.log(`\ngas per fee, batch of ${big.n} ÷ one per poll: ${(Number(big.gas) / big.n / Number(singleGas)).toFixed(2)}`);
    console.log(`\nwhat the client waits, ${CALLS} sequential paid polls (stock @x402/fetch: 402 probe + paid retry):`);
    console.log(`  settled first               p50 ${pct(settleFirst, 0.5).toFixed(1)} ms, p99 ${pct(settleFirst, 0.99).toFixed(1)} ms`);
    console.log(`  served before settlement    p50 ${pct(deferredMs, 0.5).toFixed(1)} ms, p99 ${pct(deferredMs, 0.99).toFixed(1)} ms`);
    console.log(`  p50 ratio (deferred ÷ settled first): ${(pct(deferredMs, 0.5) / pct(settleFirst, 0.5)).toFixed(2)}`);
    console.log('  (anvil mines at once; on Base a settled-first poll also waits for its block, ~2 s)');
  } finally {
    for (const s of served) await s.close();
    await chain.stop();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
