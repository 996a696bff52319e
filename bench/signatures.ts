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
import { authorizationTypes } from '@x402/evm';
import { registerExactEvmScheme } from '@x402/evm/exact/facilitator';
import { getAddress, verifyMessage, verifyTypedData, type Address, type Hex } from 'viem';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { parseAuthorizationHeader } from '../src/auth/siwe.js';
import { BASE_USDC } from '../src/chain/constants.js';
import { resetSignatureStats, signatureStats, verifyMessageFast, verifyTypedDataFast } from '../src/crypto/signatures.js';
import { fmt, positiveInt, printTable, siwe, x402ClientFor } from './lib.js';

const ROUNDS = positiveInt('BENCH_SIG_ROUNDS', 5, 100);
const ROUND_MS = positiveInt('BENCH_SIG_MS', 600, 60_000);
const KEYS = 64;
const X402_EVM_VERSION = (JSON.parse(readFileSync(new URL('../node_modules/@x402/evm/package.json', import.meta.url), 'utf8')) as { version: string }).version;
const PAY_TO: Address = '0x000000000000000000000000000000000000fEE0';

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

/**
 * The exact scheme's own `verify` from @x402/evm (what the in-process facilitator runs per paid
 * request, and again inside `settle`) against a stub chain answering at once: its CPU alone.
 */
function x402Verifier(counter: { verifications: number; verifyTypedData: number }) {
  const facilitator = new x402Facilitator();
  const signer = {
    address: PAY_TO,
    getAddresses: () => [PAY_TO],
    getCode: async ({ address }: { address: Address }) => (address.toLowerCase() === BASE_USDC.toLowerCase() ? ('0x6080' as Hex) : ('0x' as Hex)),
    readContract: async ({ functionName }: { functionName: string }) => (functionName === 'authorizationState' ? false : functionName === 'balanceOf' ? 10n ** 12n : undefined),
    verifyTypedData: async (args: Parameters<typeof verifyTypedDataFast>[0]) => {
      counter.verifyTypedData++;
      return verifyTypedDataFast(args);
    },
    writeContract: async () => '0x' as Hex,
    sendTransaction: async () => '0x' as Hex,
    waitForTransactionReceipt: async () => ({ status: 'success' as const }),
  };
  registerExactEvmScheme(facilitator, { signer: signer as unknown as Parameters<typeof registerExactEvmScheme>[1]['signer'], networks: 'eip155:8453' });
  return async (payload: PaymentPayload) => {
    counter.verifications++;
    return (await facilitator.verify(payload, requirements)).isValid;
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
  const x402Verify = x402Verifier(x402Calls);
  const ops: Op[] = [
    { name: 'viem verifyTypedData (utils, pure JS)', run: (f) => verifyTypedData(f.typed as Parameters<typeof verifyTypedData>[0]), perRound: [], cpuPerRound: [] },
    { name: 'fast verifyTypedDataFast (WASM)', run: (f) => verifyTypedDataFast(f.typed), perRound: [], cpuPerRound: [] },
    { name: 'viem verifyMessage (SIWE, pure JS)', run: (f) => verifyMessage(f.message), perRound: [], cpuPerRound: [] },
    { name: 'fast verifyMessageFast (SIWE, WASM)', run: (f) => verifyMessageFast(f.message), perRound: [], cpuPerRound: [] },
    { name: 'reference: @x402/evm exact verify (stub chain)', run: (f) => x402Verify(f.payload), perRound: [], cpuPerRound: [] },
  ];
  for (const op of ops) await measure(op, all, 150); // warm-up: JIT, WASM, caches
  resetSignatureStats();
  x402Calls.verifyTypedData = x402Calls.verifications = 0;
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
  ratio('typed data (EIP-3009):', 0, 1);
  ratio('message (SIWE):       ', 2, 3);
  const { typedData, message } = signatureStats;
  console.log(`fast path verdicts: typed data ${typedData.valid} valid / ${typedData.fallback} sent to viem; message ${message.valid} valid / ${message.fallback} sent to viem`);
  console.log(
    `reference: @x402/evm ${X402_EVM_VERSION} exact verify called signer.verifyTypedData ${x402Calls.verifyTypedData} times in ${x402Calls.verifications} verifications` +
      ' (it recovers with its own viem call; see bench/README.md)',
  );
  if (typedData.fallback + message.fallback > 0) {
    console.log('WARNING: a fast check was sent to viem: the fast figures are not the fast path alone');
    process.exitCode = 1;
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
