import {
  domainSeparator as viemDomainSeparator,
  getTypesForEIP712Domain,
  hashTypedData,
  isAddress,
  keccak256,
  stringToBytes,
  validateTypedData,
  type TypedDataDomain,
} from 'viem';

/**
 * EIP-712 digests, `keccak256(0x1901 ‖ domainSeparator ‖ structHash)`, equal to viem's
 * `hashTypedData`:
 * - the domain separator is computed by viem once per domain and cached;
 * - EIP-3009 `TransferWithAuthorization` / `ReceiveWithAuthorization` (what every x402 `exact`
 *   payment signs) are encoded here directly: a precomputed type hash and six fixed 32-byte words;
 * - any other typed data goes to viem's `hashTypedData`.
 * Input viem would refuse (a bad address, an integer out of range, a nonce that is not 32 bytes,
 * extra types) is never encoded here: it goes to viem, which throws as it always did.
 */

export interface TypedDataInput {
  domain?: unknown;
  types: unknown;
  primaryType: string;
  message: unknown;
}

const EIP3009_FIELDS = [
  ['from', 'address'],
  ['to', 'address'],
  ['value', 'uint256'],
  ['validAfter', 'uint256'],
  ['validBefore', 'uint256'],
  ['nonce', 'bytes32'],
] as const;

/** Type hash of each EIP-3009 authorization, keyed by its primary type. */
const EIP3009_TYPE_HASHES = new Map<string, Uint8Array>(
  ['TransferWithAuthorization', 'ReceiveWithAuthorization'].map((name) => [
    name,
    keccak256(stringToBytes(`${name}(${EIP3009_FIELDS.map(([n, t]) => `${t} ${n}`).join(',')})`), 'bytes'),
  ]),
);

const DOMAIN_FIELDS = ['name', 'version', 'chainId', 'verifyingContract', 'salt'] as const;
const DOMAIN_CACHE_MAX = 256;
const domainSeparators = new Map<string, Uint8Array>();
const MAX_UINT256 = (1n << 256n) - 1n;
const BYTES32 = /^0x[0-9a-fA-F]{64}$/;

/** The digest viem's `hashTypedData` would give; throws what it throws. */
export function typedDataDigest(input: TypedDataInput): Uint8Array {
  return eip3009Digest(input) ?? hexBytes(hashTypedData(input as Parameters<typeof hashTypedData>[0]));
}

/** The digest of an EIP-3009 authorization, encoded here; undefined for anything else. */
export function eip3009Digest({ domain, types, primaryType, message }: TypedDataInput): Uint8Array | undefined {
  const typeHash = EIP3009_TYPE_HASHES.get(primaryType);
  if (!typeHash || !isEip3009Types(types, primaryType, domain)) return undefined;
  const separator = cachedDomainSeparator(domain);
  if (!separator || typeof message !== 'object' || message === null) return undefined;
  const m = message as Record<string, unknown>;
  const encoded = new Uint8Array(32 * 7);
  encoded.set(typeHash, 0);
  if (!putAddress(encoded, 32, m.from) || !putAddress(encoded, 64, m.to)) return undefined;
  if (!putUint256(encoded, 96, m.value) || !putUint256(encoded, 128, m.validAfter) || !putUint256(encoded, 160, m.validBefore)) return undefined;
  if (typeof m.nonce !== 'string' || !BYTES32.test(m.nonce)) return undefined;
  encoded.set(Buffer.from(m.nonce.slice(2), 'hex'), 192);
  const prefixed = new Uint8Array(66);
  prefixed[0] = 0x19;
  prefixed[1] = 0x01;
  prefixed.set(separator, 2);
  prefixed.set(keccak256(encoded, 'bytes'), 34);
  return keccak256(prefixed, 'bytes');
}

/**
 * `types` is exactly `{ [primaryType]: the six EIP-3009 fields }`, optionally with an
 * `EIP712Domain` equal to the one viem derives from the domain (any other type, even unused, is
 * validated by viem, so it goes there).
 */
function isEip3009Types(types: unknown, primaryType: string, domain: unknown): boolean {
  if (typeof types !== 'object' || types === null) return false;
  const entries = Object.entries(types);
  for (const [name, fields] of entries) {
    if (name === primaryType) {
      if (!sameFields(fields, EIP3009_FIELDS)) return false;
    } else if (name === 'EIP712Domain') {
      const derived = getTypesForEIP712Domain({ domain: domain as TypedDataDomain }).map((f) => [f.name, f.type] as const);
      if (!sameFields(fields, derived)) return false;
    } else {
      return false;
    }
  }
  return Object.hasOwn(types, primaryType);
}

function sameFields(fields: unknown, expected: readonly (readonly [string, string])[]): boolean {
  if (!Array.isArray(fields) || fields.length !== expected.length) return false;
  return expected.every(([name, type], i) => {
    const f = fields[i] as { name?: unknown; type?: unknown } | null;
    return typeof f === 'object' && f !== null && f.name === name && f.type === type && Object.keys(f).length === 2;
  });
}

/**
 * viem's domain separator for `domain`, validated as `hashTypedData` validates it, cached by the
 * type and value of its five EIP-712 fields (the only ones viem reads). Undefined when a field has
 * a type the key cannot tell apart, or when viem refuses the domain (the caller then uses viem).
 */
export function cachedDomainSeparator(domain: unknown): Uint8Array | undefined {
  // viem defaults only an undefined domain to {}; a null one means "no separator at all".
  const d = (domain === undefined ? {} : domain) as Record<string, unknown>;
  if (typeof d !== 'object' || d === null) return undefined;
  const parts: (string | null)[][] = [];
  for (const field of DOMAIN_FIELDS) {
    const value = d[field];
    const kind = typeof value;
    if (value === null || kind === 'undefined') parts.push([null]);
    else if (kind === 'string' || kind === 'number' || kind === 'bigint') parts.push([kind, String(value)]);
    else return undefined;
  }
  const key = JSON.stringify(parts);
  const hit = domainSeparators.get(key);
  if (hit) return hit;
  let separator: Uint8Array;
  try {
    const eip712Domain = getTypesForEIP712Domain({ domain: d as TypedDataDomain });
    validateTypedData({ domain: d as TypedDataDomain, types: { EIP712Domain: eip712Domain }, primaryType: 'EIP712Domain', message: undefined } as unknown as Parameters<typeof validateTypedData>[0]);
    separator = hexBytes(viemDomainSeparator({ domain: d as TypedDataDomain }));
  } catch {
    return undefined;
  }
  if (domainSeparators.size >= DOMAIN_CACHE_MAX) domainSeparators.clear();
  domainSeparators.set(key, separator);
  return separator;
}

/** A left-padded address word, if viem's `isAddress` (strict: checksummed or one case) accepts it. */
function putAddress(out: Uint8Array, offset: number, value: unknown): boolean {
  if (typeof value !== 'string' || !isAddress(value)) return false;
  out.set(Buffer.from(value.slice(2), 'hex'), offset + 12);
  return true;
}

/** A uint256 word from a bigint or a safe integer in range (strings and the rest go to viem). */
function putUint256(out: Uint8Array, offset: number, value: unknown): boolean {
  let n: bigint;
  if (typeof value === 'bigint') n = value;
  else if (typeof value === 'number' && Number.isSafeInteger(value)) n = BigInt(value);
  else return false;
  if (n < 0n || n > MAX_UINT256) return false;
  out.set(Buffer.from(n.toString(16).padStart(64, '0'), 'hex'), offset);
  return true;
}

function hexBytes(hex: string): Uint8Array {
  return Buffer.from(hex.slice(2), 'hex');
}
