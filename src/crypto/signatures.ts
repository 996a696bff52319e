import { keccak256, stringToBytes, verifyMessage, verifyTypedData } from 'viem';
import { parseSignature, recoverAddressFromDigest } from './ecdsa.js';
import { typedDataDigest, type TypedDataInput } from './eip712.js';

/**
 * Fast signature checks for the hot paths (x402 authorizations, SIWE): ECDSA recovery with
 * libsecp256k1 in WASM (ecdsa.ts) on digests built with cached EIP-712 parts (eip712.ts),
 * deciding exactly as viem's `verifyTypedData` / `verifyMessage` utilities decide.
 *
 * A check answers one of three verdicts:
 * - `valid`: ECDSA recovery gives `address`. viem accepts it too, its utilities and its public
 *   actions alike (those try ERC-6492/1271 first and fall back to this same recovery).
 * - `invalid`: recovery gives another address, or the signature is one viem's recovery refuses.
 *   Final for an externally owned account; a contract wallet may still accept it (ERC-1271).
 * - `undecided`: input outside the fast path (a signature that is not a `0x` hex string, a
 *   message that is not a string, an address viem would refuse): only viem can answer.
 *
 * Nothing is cached per payer. Whether an address has code was considered (to skip the
 * ERC-1271/6492 `eth_call`) and is not needed: a `valid` verdict is accepted by viem's public
 * action whatever the address's code (its ECDSA fallback runs after the contract check fails), so
 * the fast path asks no chain and can never disagree with viem because a cached fact went
 * stale (an EOA can gain code at any time through an EIP-7702 delegation). What is cached is pure:
 * EIP-712 domain separators and type hashes (eip712.ts).
 */
export type Verdict = 'valid' | 'invalid' | 'undecided';

export interface VerifyTypedDataParams extends TypedDataInput {
  address: string;
  signature: unknown;
}

export interface VerifyMessageParams {
  address: string;
  message: unknown;
  signature: unknown;
}

/** How often each verdict was reached and viem was asked instead, per kind (tests, benchmarks). */
export const signatureStats = {
  typedData: { valid: 0, invalid: 0, undecided: 0, fallback: 0 },
  message: { valid: 0, invalid: 0, undecided: 0, fallback: 0 },
};

export function resetSignatureStats(): void {
  for (const kind of Object.values(signatureStats)) kind.valid = kind.invalid = kind.undecided = kind.fallback = 0;
}

const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const ZERO_ADDRESS = `0x${'0'.repeat(40)}`;

/** EIP-712 typed data signed by `address`, decided by ECDSA recovery alone. */
export function checkTypedDataSignature(params: VerifyTypedDataParams): Verdict {
  const verdict = typedDataVerdict(params);
  signatureStats.typedData[verdict]++;
  return verdict;
}

function typedDataVerdict(params: VerifyTypedDataParams): Verdict {
  const { address, signature } = params;
  // viem's public action answers false for the zero address before anything else.
  if (typeof address !== 'string' || !ADDRESS.test(address) || address === ZERO_ADDRESS) return 'undecided';
  const sig = parseSignature(signature);
  if (sig === undefined) return 'undecided';
  if (sig === null) return 'invalid';
  let digest: Uint8Array;
  try {
    digest = typedDataDigest(params);
  } catch {
    return 'undecided'; // typed data viem refuses: viem throws its own error
  }
  return recoverAddressFromDigest(digest, sig) === address.toLowerCase() ? 'valid' : 'invalid';
}

/** An EIP-191 `personal_sign` of the string `message` by `address`, decided by ECDSA recovery alone. */
export function checkMessageSignature(params: VerifyMessageParams): Verdict {
  const verdict = messageVerdict(params);
  signatureStats.message[verdict]++;
  return verdict;
}

function messageVerdict({ address, message, signature }: VerifyMessageParams): Verdict {
  if (typeof address !== 'string' || !ADDRESS.test(address) || typeof message !== 'string') return 'undecided';
  const sig = parseSignature(signature);
  if (sig === undefined) return 'undecided';
  if (sig === null) return 'invalid';
  return recoverAddressFromDigest(personalMessageDigest(message), sig) === address.toLowerCase() ? 'valid' : 'invalid';
}

/** keccak256("\x19Ethereum Signed Message:\n" ‖ byte length ‖ message), as viem's `hashMessage`. */
export function personalMessageDigest(message: string): Uint8Array {
  const body = stringToBytes(message);
  const prefix = stringToBytes(`\x19Ethereum Signed Message:\n${body.length}`);
  const data = new Uint8Array(prefix.length + body.length);
  data.set(prefix, 0);
  data.set(body, prefix.length);
  return keccak256(data, 'bytes');
}

/**
 * Drop-in for viem's `verifyTypedData`.
 * - Without `fallback` it has that utility's meaning (externally owned accounts only): `valid` is
 *   true, `invalid` false, and `undecided` is asked of viem's utility.
 * - With `fallback` (e.g. viem's public action, which also knows contract wallets through
 *   ERC-1271/6492 and an `eth_call`), only `valid` is answered here; everything else is the
 *   fallback's to decide, so contract wallets keep working and every refusal stays viem's.
 */
export async function verifyTypedDataFast<P extends VerifyTypedDataParams>(params: P, fallback?: (params: P) => Promise<boolean>): Promise<boolean> {
  const verdict = checkTypedDataSignature(params);
  if (verdict === 'valid') return true;
  if (verdict === 'invalid' && !fallback) return false;
  signatureStats.typedData.fallback++;
  return fallback ? fallback(params) : verifyTypedData(params as unknown as Parameters<typeof verifyTypedData>[0]);
}

/** Drop-in for viem's `verifyMessage`; `fallback` as for `verifyTypedDataFast`. */
export async function verifyMessageFast<P extends VerifyMessageParams>(params: P, fallback?: (params: P) => Promise<boolean>): Promise<boolean> {
  const verdict = checkMessageSignature(params);
  if (verdict === 'valid') return true;
  if (verdict === 'invalid' && !fallback) return false;
  signatureStats.message.fallback++;
  return fallback ? fallback(params) : verifyMessage(params as unknown as Parameters<typeof verifyMessage>[0]);
}
