/**
 * Signature checks, one process, no I/O: viem's pure-JS `verifyTypedData` / `verifyMessage`
 * utilities against the WASM libsecp256k1 paths of src/crypto/signatures.ts, on the inputs of the
 * hot paths (an x402 EIP-3009 authorization for the USDC domain, a SIWE sign-in message).
 *
 *   npx tsx bench/signatures.ts        # or: npm run bench:signatures
 *
 * BENCH_SIG_ROUNDS (default 5) rounds; each round measures every operation for BENCH_SIG_MS
 * (default 600) ms, the operations interleaved so that the machine's noise falls on all of them;
 * the figure is the median round. Every verification must answer true, or the run is invalid.
 */
import { readFileSync } from 'node:fs';
import { x402Facilitator } from '@x402/core/facilitator';
import type { PaymentPayload, PaymentRequirements } from '@x402/core/types';
import { authorizationTypes, type FacilitatorEvmSigner } from '@x402/evm';
import { ExactEvmScheme } from '@x402/evm/exact/facilitator';
import { getAddress, verifyMessage, verifyTypedData, type Address, type Hex } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { parseAuthorizationHeader } from '../src/auth/siwe.js';
import { BASE_USDC } from '../src/chain/constants.js';
import { FastExactEvmScheme, fastExactStats } from '../src/payments/fast-exact.js';
import { resetSignatureStats, signatureStats, verifyMessageFast, verifyTypedDataFast } from '../src/crypto/signatures.js';
import { fmt, positiveInt, printTable, siwe, x402ClientFor } from './lib.js';

const ROUNDS = positiveInt('BENCH_SIG_ROUNDS', 5, 100);
const ROUND_MS = positiveInt('BENCH_SIG_MS', 600, 60_000);
const KEYS = 64;
const X402_EVM_VERSION = (JSON.parse(readFileSync(new URL('../node_modules/@x402/evm/package.json', import.meta.url), 'utf8')) as { version: string }).version;
const PAY_TO: Address = '0x000000000000000000000000000000000000fEE0';
const STUB_TX: Hex = `0x${'ab'.repeat(32)}`;

const requirements: PaymentRequirements = {
  scheme: 'exact',
  network: 'eip155:8453',
  amount: '1000',
  asset: BASE_USDC,
  payTo: PAY_TO,
  maxTimeoutSeconds: 3600,
  extra: { name: 'USD Coin', version: '2' },
};

interface Fixture {
  typed: Parameters<typeof verifyTypedDataFast>[0] & { address: Address; signature: Hex };
  message: { address: Address; message: string; signature: Hex };
  payload: PaymentPayload;
}

/** One authorization and one sign-in per key, signed by viem as a wallet would. */
async function fixtures(): Promise<Fixture[]> {
  const out: Fixture[] = [];
  for (let i = 0; i < KEYS; i++) {
    const account = privateKeyToAccount(generatePrivateKey());
    const payload = await x402ClientFor(account).createPaymentPayload({
      x402Version: 2,
      resource: { url: 'http://bench.local/v1/tasks/x/status', description: 'bench', mimeType: 'application/json' },
      accepts: [requirements],
    });
    const { authorization: a, signature } = payload.payload as { authorization: Record<string, string>; signature: Hex };
    const typed = {
      address: a.from as Address,
      domain: { name: 'USD Coin', version: '2', chainId: 8453, verifyingContract: getAddress(BASE_USDC) },
      types: authorizationTypes,
      primaryType: 'TransferWithAuthorization',
      message: { from: a.from, to: a.to, value: BigInt(a.value!), validAfter: BigInt(a.validAfter!), validBefore: BigInt(a.validBefore!), nonce: a.nonce },
      signature,
    };
    const { message, signature: siweSignature } = parseAuthorizationHeader(await siwe(account));
    out.push({ typed, message: { address: account.address, message, signature: siweSignature }, payload });
  }
  return out;
}

/** A facilitator signer on a stub chain answering at once (a fixed tx hash, USDC has code, payers none): CPU alone. */
function stubSigner(counter: { verifyTypedData: number }): FacilitatorEvmSigner {
  const signer = {
    address: PAY_TO,
    getAddresses: () => [PAY_TO],
    getCode: async ({ address }: { address: Address }) => (address.toLowerCase() === BASE_USDC.toLowerCase() ? ('0x6080' as Hex) : ('0x' as Hex)),
    readContract: async ({ functionName }: { functionName: string }) => (functionName === 'authorizationState' ? false : functionName === 'balanceOf' ? 10n ** 12n : undefined),
    verifyTypedData: async (args: Parameters<typeof verifyTypedDataFast>[0]) => {
      counter.verifyTypedData++;
      return verifyTypedDataFast(args);
    },
    writeContract: async () => STUB_TX,
    sendTransaction: async () => STUB_TX,
    waitForTransactionReceipt: async () => ({ status: 'success' as const }),
  };
  return signer as unknown as FacilitatorEvmSigner;
}

/**
 * The x402 exact scheme as the in-process facilitator runs it per paid request, on a stub chain:
 * `verify` alone, and `verify` then `settle` (which checks the signature again). `stock` is
 * @x402/evm's own scheme; `fast` is src/payments/fast-exact.ts.
 */
function x402Scheme(kind: 'stock' | 'fast', counter: { verifications: number; verifyTypedData: number }) {
  const facilitator = new x402Facilitator();
  const signer = stubSigner(counter);
  facilitator.register('eip155:8453', kind === 'stock' ? new ExactEvmScheme(signer) : new FastExactEvmScheme(signer));
  return {
    verify: async (payload: PaymentPayload) => {
      counter.verifications++;
      return (await facilitator.verify(payload, requirements)).isValid;
    },
    verifyAndSettle: async (payload: PaymentPayload) => {
      counter.verifications++;
      if (!(await facilitator.verify(payload, requirements)).isValid) return false;
      return (await facilitator.settle(payload, requirements)).success;
    },
  };
}

interface Op {
  name: string;
  run: (f: Fixture) => Promise<boolean>;
  perRound: number[];
  cpuPerRound: number[];
}

/** Verifications per second (wall) and CPU µs per verification over `ms` of back-to-back calls. */
async function measure(op: Op, all: Fixture[], ms: number): Promise<{ perSecond: number; cpuUs: number }> {
  let n = 0;
  const cpu = process.cpuUsage();
  const start = process.hrtime.bigint();
  const budget = BigInt(ms) * 1_000_000n;
  while (process.hrtime.bigint() - start < budget) {
    if (!(await op.run(all[n % all.length]!))) throw new Error(`${op.name}: a valid signature was refused`);
    n++;
  }
  const wall = Number(process.hrtime.bigint() - start) / 1e9;
  const used = process.cpuUsage(cpu);
  return { perSecond: n / wall, cpuUs: (used.user + used.system) / n };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  console.log(`signature checks: ${ROUNDS} rounds × ${ROUND_MS} ms per operation, ${KEYS} keys, Node ${process.version}`);
  const all = await fixtures();
  const x402Calls = { verifications: 0, verifyTypedData: 0 };
  const stock = x402Scheme('stock', x402Calls);
  const fastScheme = x402Scheme('fast', x402Calls);
  const ops: Op[] = [
    { name: 'viem verifyTypedData (utils, pure JS)', run: (f) => verifyTypedData(f.typed as Parameters<typeof verifyTypedData>[0]), perRound: [], cpuPerRound: [] },
    { name: 'fast verifyTypedDataFast (WASM)', run: (f) => verifyTypedDataFast(f.typed), perRound: [], cpuPerRound: [] },
    { name: 'viem verifyMessage (SIWE, pure JS)', run: (f) => verifyMessage(f.message), perRound: [], cpuPerRound: [] },
    { name: 'fast verifyMessageFast (SIWE, WASM)', run: (f) => verifyMessageFast(f.message), perRound: [], cpuPerRound: [] },
    { name: 'x402 exact verify: @x402/evm (stub chain)', run: (f) => stock.verify(f.payload), perRound: [], cpuPerRound: [] },
    { name: 'x402 exact verify: fast-exact (stub chain)', run: (f) => fastScheme.verify(f.payload), perRound: [], cpuPerRound: [] },
    { name: 'x402 verify + settle: @x402/evm (stub chain)', run: (f) => stock.verifyAndSettle(f.payload), perRound: [], cpuPerRound: [] },
    { name: 'x402 verify + settle: fast-exact (stub chain)', run: (f) => fastScheme.verifyAndSettle(f.payload), perRound: [], cpuPerRound: [] },
  ];
  for (const op of ops) await measure(op, all, 150); // warm-up: JIT, WASM, caches
  resetSignatureStats();
  x402Calls.verifyTypedData = x402Calls.verifications = 0;
  for (const k of Object.keys(fastExactStats) as (keyof typeof fastExactStats)[]) fastExactStats[k] = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 ? [...ops].reverse() : ops;
    for (const op of order) {
      const { perSecond, cpuUs } = await measure(op, all, ROUND_MS);
      op.perRound.push(perSecond);
      op.cpuPerRound.push(cpuUs);
    }
  }
  const rate = (i: number) => median(ops[i]!.perRound);
  const cpu = (i: number) => median(ops[i]!.cpuPerRound);
  console.log('');
  printTable(
    ['operation', 'verifications/s', 'µs per verification (wall)', 'CPU µs per verification', 'min–max /s over rounds'],
    ops.map((op, i) => [op.name, fmt(rate(i)), fmt(1e6 / rate(i), 1), fmt(cpu(i), 1), `${fmt(Math.min(...op.perRound))}–${fmt(Math.max(...op.perRound))}`]),
  );
  console.log('');
  const ratio = (label: string, viem: number, fast: number) =>
    console.log(`${label} fast ÷ viem = ${fmt(rate(fast) / rate(viem), 2)}× the verifications/s, ${fmt(cpu(viem) / cpu(fast), 2)}× less CPU per verification (${fmt(cpu(viem))} → ${fmt(cpu(fast))} CPU µs)`);
  // "viem" is the stock side of each pair, "fast" the WASM side.
  ratio('typed data (EIP-3009):', 0, 1);
  ratio('message (SIWE):       ', 2, 3);
  ratio('x402 exact verify:    ', 4, 5);
  ratio('x402 verify + settle: ', 6, 7);
  const { typedData, message } = signatureStats;
  console.log(`fast path verdicts: typed data ${typedData.valid} valid / ${typedData.fallback} sent to viem; message ${message.valid} valid / ${message.fallback} sent to viem`);
  console.log(
    `@x402/evm ${X402_EVM_VERSION}: the x402 rows called signer.verifyTypedData ${x402Calls.verifyTypedData} times in ${x402Calls.verifications} paid calls` +
      ' (it recovers with its own viem call; see bench/README.md)',
  );
  console.log(
    `fast-exact paths: ${fastExactStats.fastValid} verified fast, ${fastExactStats.fastInvalid} refused fast, ${fastExactStats.stock} sent to the stock verify; ` +
      `settles ${fastExactStats.vouchedSettles} vouched, ${fastExactStats.stockSettles} stock`,
  );
  if (fastExactStats.stock + fastExactStats.fastInvalid + fastExactStats.stockSettles > 0) {
    console.log('WARNING: a fast-exact call left the fast path: its figures are not the fast path alone');
    process.exitCode = 1;
  }
  if (typedData.fallback + message.fallback > 0) {
    console.log('WARNING: a fast check was sent to viem: the fast figures are not the fast path alone');
    process.exitCode = 1;
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
