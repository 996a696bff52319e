import { randomBytes } from 'node:crypto';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { x402Client } from '@x402/core/client';
import type { PaymentRequired, PaymentRequirements } from '@x402/core/types';
import { authorizationTypes } from '@x402/evm';
import { registerExactEvmScheme } from '@x402/evm/exact/client';
import {
  createPublicClient,
  custom,
  getAddress,
  hashTypedData,
  verifyMessage,
  verifyTypedData,
  type Address,
  type Hex,
  type TypedDataDomain,
} from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { base } from 'viem/chains';
import { signInHeader } from '../../src/auth/siwe-client.js';
import { SiweVerifier } from '../../src/auth/siwe.js';
import { BASE_USDC } from '../../src/chain/constants.js';
import type { Db } from '../../src/db/client.js';
import { parseSignature } from '../../src/crypto/ecdsa.js';
import { eip3009Digest, typedDataDigest } from '../../src/crypto/eip712.js';
import {
  checkMessageSignature,
  checkTypedDataSignature,
  resetSignatureStats,
  signatureStats,
  verifyMessageFast,
  verifyTypedDataFast,
  type VerifyTypedDataParams,
} from '../../src/crypto/signatures.js';

const N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const hex32 = (n: bigint) => n.toString(16).padStart(64, '0');
const randomHex = (bytes: number) => `0x${randomBytes(bytes).toString('hex')}` as Hex;
const splitSig = (sig: Hex) => ({ r: BigInt(`0x${sig.slice(2, 66)}`), s: BigInt(`0x${sig.slice(66, 130)}`), v: Number.parseInt(sig.slice(130), 16) });
const joinSig = (r: bigint, s: bigint, v: string) => `0x${hex32(r)}${hex32(s)}${v}` as Hex;
const vHex = (v: number) => v.toString(16).padStart(2, '0');
/** Every case ends as accepted or refused: viem's utilities sometimes throw to refuse. */
const outcome = (p: Promise<boolean>) => p.then((ok) => ok, () => false);

/** An x coordinate below n that is not on the curve (about half of all values are not). */
const offCurveR = (() => {
  for (let x = 5n; ; x++) {
    const p = 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2fn;
    const rhs = (((x * x) % p) * x + 7n) % p;
    // Euler's criterion: a quadratic non-residue has no square root, so no point has this x.
    if (modPow(rhs, (p - 1n) / 2n, p) !== 1n) return x;
  }
})();
function modPow(b: bigint, e: bigint, m: bigint): bigint {
  let r = 1n;
  for (b %= m; e > 0n; e >>= 1n, b = (b * b) % m) if (e & 1n) r = (r * b) % m;
  return r;
}

/** Signatures viem's recovery judges in every way it can: mangled forms of a real one. */
function variants(sig: Hex): Record<string, Hex> {
  const { r, s, v } = splitSig(sig);
  const other = v === 27 ? 28 : 27;
  return {
    original: sig,
    yParity: joinSig(r, s, vHex(v - 27)),
    flippedV: joinSig(r, s, vHex(other)),
    highS: joinSig(r, N - s, vHex(other)), // the malleable twin: same signer
    highSSameV: joinSig(r, N - s, vHex(v)),
    v29: joinSig(r, s, '1d'),
    v2: joinSig(r, s, '02'),
    v26: joinSig(r, s, '1a'),
    oddLengthV1: `0x${hex32(r)}${hex32(s)}${v - 27}` as Hex, // 129 digits: viem's size() says 65
    oddLengthVBad: `0x${hex32(r)}${hex32(s)}7` as Hex,
    short64: sig.slice(0, 130) as Hex,
    long66: `${sig}00` as Hex,
    empty: '0x',
    rFlip: joinSig(r ^ 1n, s, vHex(v)),
    sFlip: joinSig(r, s ^ (1n << 77n), vHex(v)),
    rZero: joinSig(0n, s, vHex(v)),
    sZero: joinSig(r, 0n, vHex(v)),
    rN: joinSig(N, s, vHex(v)),
    sN: joinSig(r, N, vHex(v)),
    rMax: joinSig((1n << 256n) - 1n, s, vHex(v)),
    rOffCurve: joinSig(offCurveR, s, vHex(v)),
    upperCase: `0x${sig.slice(2).toUpperCase()}` as Hex,
  };
}

function randomMessage(i: number): string {
  const pieces = ['hello', 'Sign in to task-escrow', '\n', 'ünïcödé ✓', '🔐', String(i), randomBytes(8).toString('base64')];
  return Array.from({ length: 1 + (i % 17) }, (_, k) => pieces[(i * 7 + k) % pieces.length]).join(i % 3 ? ' ' : '');
}

const usdcDomain = { name: 'USD Coin', version: '2', chainId: 8453, verifyingContract: BASE_USDC } as const;

function randomAuthorization(from: Address, i: number) {
  return {
    from,
    to: privateKeyToAccount(generatePrivateKey()).address,
    value: i % 5 === 0 ? 0n : BigInt(`0x${randomBytes(1 + (i % 32)).toString('hex')}`),
    validAfter: BigInt(i),
    validBefore: BigInt(Math.floor(Date.now() / 1000) + i),
    nonce: randomHex(32),
  };
}

/** A domain of another shape every few cases: bigint chain id, salt, fewer fields. */
function domainFor(i: number): TypedDataDomain {
  switch (i % 4) {
    case 1:
      return { ...usdcDomain, chainId: 84532n as unknown as number };
    case 2:
      return { name: 'USDC', version: '2', chainId: 1, verifyingContract: privateKeyToAccount(generatePrivateKey()).address, salt: randomHex(32) };
    case 3:
      return { name: 'Token', verifyingContract: BASE_USDC };
    default:
      return usdcDomain;
  }
}

/** Not EIP-3009: digested by viem's hashTypedData, recovered in WASM. */
const mailTypes = {
  Person: [
    { name: 'name', type: 'string' },
    { name: 'wallet', type: 'address' },
  ],
  Mail: [
    { name: 'from', type: 'Person' },
    { name: 'to', type: 'Person' },
    { name: 'contents', type: 'string' },
  ],
} as const;

async function typedCase(account: PrivateKeyAccount, i: number): Promise<Omit<VerifyTypedDataParams, 'signature' | 'address'> & { signature: Hex }> {
  if (i % 6 === 5) {
    const message = { from: { name: 'a', wallet: account.address }, to: { name: randomMessage(i), wallet: BASE_USDC }, contents: randomMessage(i + 1) };
    const signature = await account.signTypedData({ domain: usdcDomain, types: mailTypes, primaryType: 'Mail', message });
    return { domain: usdcDomain, types: mailTypes, primaryType: 'Mail', message, signature };
  }
  const primaryType = i % 2 ? 'ReceiveWithAuthorization' : 'TransferWithAuthorization';
  const types = { [primaryType]: authorizationTypes.TransferWithAuthorization };
  const domain = domainFor(i);
  const message = randomAuthorization(account.address, i);
  const signature = await account.signTypedData({ domain, types, primaryType, message });
  return { domain, types, primaryType, message, signature };
}

describe('ECDSA recovery in WASM decides as viem does', () => {
  beforeEach(() => resetSignatureStats());

  it('agrees with viem verifyMessage on 120 random keys and messages, each with mangled signatures', async () => {
    let compared = 0;
    for (let i = 0; i < 120; i++) {
      const account = privateKeyToAccount(generatePrivateKey());
      const message = randomMessage(i);
      const signature = await account.signMessage({ message });
      const all = variants(signature);
      // Every case: the real signature, its malleable twin, the yParity form, and a rotating third of the rest.
      const names = Object.keys(all);
      const picked = new Set(['original', 'highS', 'yParity', ...names.filter((_, k) => k % 3 === i % 3)]);
      const cases: { address: Address; message: string; signature: Hex }[] = [...picked].map((name) => ({ address: account.address, message, signature: all[name]! }));
      cases.push({ address: privateKeyToAccount(generatePrivateKey()).address, message, signature }); // someone else
      cases.push({ address: account.address, message: `${message}.`, signature }); // tampered message
      cases.push({ address: account.address.toLowerCase() as Address, message, signature }); // address not checksummed
      for (const c of cases) {
        const [viem, fast] = await Promise.all([outcome(verifyMessage(c)), outcome(verifyMessageFast(c))]);
        expect({ ...c, fast }).toEqual({ ...c, fast: viem });
        compared++;
      }
      expect(await verifyMessageFast({ address: account.address, message, signature })).toBe(true);
    }
    expect(compared).toBeGreaterThan(120 * 10);
    // Every one of those was decided in WASM: viem was never asked.
    expect(signatureStats.message.fallback).toBe(0);
    expect(signatureStats.message.undecided).toBe(0);
  }, 180_000);

  it('agrees with viem verifyTypedData on 120 random EIP-3009 and other typed data, each with mangled signatures', async () => {
    let compared = 0;
    for (let i = 0; i < 120; i++) {
      const account = privateKeyToAccount(generatePrivateKey());
      const { signature, ...data } = await typedCase(account, i);
      const all = variants(signature);
      const names = Object.keys(all);
      const picked = new Set(['original', 'highS', 'yParity', ...names.filter((_, k) => k % 3 === i % 3)]);
      const cases: VerifyTypedDataParams[] = [...picked].map((name) => ({ ...data, address: account.address, signature: all[name]! }));
      cases.push({ ...data, address: privateKeyToAccount(generatePrivateKey()).address, signature });
      if (data.primaryType !== 'Mail') {
        const message = data.message as ReturnType<typeof randomAuthorization>;
        cases.push({ ...data, address: account.address, signature, message: { ...message, value: message.value + 1n } });
        cases.push({ ...data, address: account.address, signature, message: { ...message, nonce: randomHex(32) } });
        cases.push({ ...data, address: account.address, signature, domain: { ...(data.domain as TypedDataDomain), chainId: 10 } });
      }
      for (const c of cases) {
        const [viem, fast] = await Promise.all([outcome(verifyTypedData(c as Parameters<typeof verifyTypedData>[0])), outcome(verifyTypedDataFast(c))]);
        expect({ case: i, signature: c.signature, fast }).toEqual({ case: i, signature: c.signature, fast: viem });
        compared++;
      }
      expect(await verifyTypedDataFast({ ...data, address: account.address, signature })).toBe(true);
    }
    expect(compared).toBeGreaterThan(120 * 10);
    expect(signatureStats.typedData.fallback).toBe(0);
  }, 180_000);

  it('accepts the malleable high-s twin and the yParity form, as viem does', async () => {
    const account = privateKeyToAccount(generatePrivateKey());
    const message = 'malleable';
    const all = variants(await account.signMessage({ message }));
    for (const name of ['original', 'yParity', 'highS', 'oddLengthV1', 'upperCase']) {
      expect(await verifyMessage({ address: account.address, message, signature: all[name]! })).toBe(true);
      expect(checkMessageSignature({ address: account.address, message, signature: all[name]! })).toBe('valid');
    }
    for (const name of ['flippedV', 'highSSameV', 'v29', 'v2', 'v26', 'oddLengthVBad', 'short64', 'long66', 'empty', 'rZero', 'sZero', 'rN', 'sN', 'rMax', 'rOffCurve', 'rFlip', 'sFlip']) {
      expect(await outcome(verifyMessage({ address: account.address, message, signature: all[name]! })), name).toBe(false);
      expect(checkMessageSignature({ address: account.address, message, signature: all[name]! }), name).toBe('invalid');
    }
    expect(parseSignature(all.rOffCurve)).not.toBeNull(); // refused by the recovery itself, not the parser
  });

  it('leaves to viem what is not a 0x hex signature or a string message, and agrees with what viem answers', async () => {
    const account = privateKeyToAccount(generatePrivateKey());
    const signature = await account.signMessage({ message: 'bytes' });
    const asBytes = Buffer.from(signature.slice(2), 'hex') as unknown as Hex;
    expect(checkMessageSignature({ address: account.address, message: 'bytes', signature: asBytes })).toBe('undecided');
    expect(await verifyMessageFast({ address: account.address, message: 'bytes', signature: asBytes })).toBe(true);
    const raw = { raw: '0x6279746573' as Hex }; // "bytes"
    expect(checkMessageSignature({ address: account.address, message: raw, signature })).toBe('undecided');
    expect(await verifyMessageFast({ address: account.address, message: raw, signature })).toBe(await verifyMessage({ address: account.address, message: raw, signature }));
    expect(await outcome(verifyMessageFast({ address: 'not-an-address', message: 'bytes', signature }))).toBe(false);
    expect(signatureStats.message.fallback).toBe(3);
  });
});

describe('EIP-712 digests', () => {
  it('encodes 200 random EIP-3009 authorizations and domains exactly as viem hashTypedData', () => {
    const from = privateKeyToAccount(generatePrivateKey()).address;
    for (let i = 0; i < 200; i++) {
      const primaryType = i % 2 ? 'ReceiveWithAuthorization' : 'TransferWithAuthorization';
      const types = i % 3 === 0
        ? { EIP712Domain: [{ name: 'name', type: 'string' }, { name: 'version', type: 'string' }, { name: 'chainId', type: 'uint256' }, { name: 'verifyingContract', type: 'address' }], [primaryType]: authorizationTypes.TransferWithAuthorization }
        : { [primaryType]: authorizationTypes.TransferWithAuthorization };
      const domain = i % 3 === 0 ? usdcDomain : domainFor(i);
      const message = { ...randomAuthorization(from, i), ...(i % 7 === 0 ? { value: (1n << 256n) - 1n } : {}), ...(i % 11 === 0 ? { to: BASE_USDC.toLowerCase() } : {}) };
      const input = { domain, types, primaryType, message };
      const fast = eip3009Digest(input);
      expect(fast, `case ${i}`).toBeDefined();
      expect(Buffer.from(fast!).toString('hex')).toBe(hashTypedData(input as Parameters<typeof hashTypedData>[0]).slice(2));
    }
  });

  it('sends anything viem would refuse or read differently to viem', () => {
    const base = { domain: usdcDomain, types: authorizationTypes, primaryType: 'TransferWithAuthorization', message: randomAuthorization(privateKeyToAccount(generatePrivateKey()).address, 1) };
    const letter = base.message.from.slice(2).search(/[a-fA-F]/) + 2; // flip the case of one letter: the checksum breaks
    const flipped = base.message.from[letter]!;
    const badChecksum = `${base.message.from.slice(0, letter)}${flipped === flipped.toLowerCase() ? flipped.toUpperCase() : flipped.toLowerCase()}${base.message.from.slice(letter + 1)}`;
    const refused: Record<string, unknown>[] = [
      { message: { ...base.message, from: badChecksum } },
      { message: { ...base.message, value: -1n } },
      { message: { ...base.message, value: 1n << 256n } },
      { message: { ...base.message, value: '1000' } },
      { message: { ...base.message, value: 1.5 } },
      { message: { ...base.message, nonce: randomHex(31) } },
      { message: { ...base.message, nonce: undefined } },
      { types: { ...authorizationTypes, Extra: [{ name: 'x', type: 'uint256' }] } },
      { types: { TransferWithAuthorization: authorizationTypes.TransferWithAuthorization.slice(0, 5) } },
      { types: { EIP712Domain: [{ name: 'name', type: 'string' }], ...authorizationTypes } },
      { domain: null },
      { domain: { ...usdcDomain, verifyingContract: '0x1234' } },
      { domain: { ...usdcDomain, chainId: { id: 1 } } },
    ];
    for (const change of refused) {
      const input = { ...base, ...change };
      expect(eip3009Digest(input as Parameters<typeof eip3009Digest>[0]), JSON.stringify(change, (_, v) => (typeof v === 'bigint' ? `${v}n` : v))).toBeUndefined();
      // typedDataDigest then answers whatever viem answers, an error included.
      let viem: string;
      try {
        viem = hashTypedData(input as Parameters<typeof hashTypedData>[0]);
      } catch (err) {
        expect(() => typedDataDigest(input as Parameters<typeof typedDataDigest>[0])).toThrow((err as Error).constructor as new () => Error);
        continue;
      }
      expect(`0x${Buffer.from(typedDataDigest(input as Parameters<typeof typedDataDigest>[0])).toString('hex')}`).toBe(viem);
    }
  });
});

describe('x402: a real EIP-3009 authorization', () => {
  const requirements: PaymentRequirements = {
    scheme: 'exact',
    network: 'eip155:8453',
    amount: '1000',
    asset: BASE_USDC,
    payTo: '0x000000000000000000000000000000000000fEE0',
    maxTimeoutSeconds: 60,
    extra: { name: 'USD Coin', version: '2' },
  };

  /** What the facilitator's signer is asked: the payload the stock x402 client signs with viem's signTypedData. */
  async function authorizationFrom(account: PrivateKeyAccount) {
    const client = new x402Client();
    registerExactEvmScheme(client, { signer: account });
    const paymentRequired: PaymentRequired = { x402Version: 2, resource: { url: 'http://localhost/x', description: 'x', mimeType: 'application/json' }, accepts: [requirements] };
    const payload = await client.createPaymentPayload(paymentRequired);
    const { authorization, signature } = payload.payload as { authorization: Record<string, string>; signature: Hex };
    return {
      address: authorization.from! as Address,
      domain: { name: 'USD Coin', version: '2', chainId: 8453, verifyingContract: getAddress(BASE_USDC) },
      types: authorizationTypes,
      primaryType: 'TransferWithAuthorization',
      message: {
        from: authorization.from,
        to: authorization.to,
        value: BigInt(authorization.value!),
        validAfter: BigInt(authorization.validAfter!),
        validBefore: BigInt(authorization.validBefore!),
        nonce: authorization.nonce,
      },
      signature,
    };
  }

  /** viem's public action against a node that answers nothing: ERC-6492 fails, its ECDSA fallback decides. */
  const offlineClient = createPublicClient({ chain: base, transport: custom({ request: async () => { throw new Error('no node in this test'); } }, { retryCount: 0 }) });

  beforeEach(() => resetSignatureStats());

  it('verifies in WASM for the USDC domain without asking the fallback', async () => {
    const account = privateKeyToAccount(generatePrivateKey());
    const params = await authorizationFrom(account);
    expect(eip3009Digest(params)).toBeDefined(); // the precomputed EIP-3009 encoding, not viem's
    const fallback = vi.fn(async () => false);
    expect(await verifyTypedDataFast(params, fallback)).toBe(true);
    expect(fallback).not.toHaveBeenCalled();
    expect(signatureStats.typedData).toMatchObject({ valid: 1, fallback: 0 });
    expect(await offlineClient.verifyTypedData(params as Parameters<typeof offlineClient.verifyTypedData>[0])).toBe(true);
  });

  it('asks the fallback (the viem public action that knows contract wallets) for everything it does not accept', async () => {
    const account = privateKeyToAccount(generatePrivateKey());
    const params = await authorizationFrom(account);
    const contractWallet = privateKeyToAccount(generatePrivateKey()).address; // ECDSA cannot give this address
    const fallback = vi.fn(async (p: VerifyTypedDataParams) => p.address === contractWallet);
    expect(await verifyTypedDataFast({ ...params, address: contractWallet }, fallback)).toBe(true);
    const erc6492 = `${params.signature}${'64926492'.repeat(8)}` as Hex; // not 65 bytes
    expect(await verifyTypedDataFast({ ...params, signature: erc6492 }, fallback)).toBe(false);
    expect(fallback).toHaveBeenCalledTimes(2);
    expect(checkTypedDataSignature({ ...params, address: `0x${'0'.repeat(40)}` })).toBe('undecided'); // viem: false for the zero address
    for (const [name, signature] of Object.entries(variants(params.signature))) {
      const viaViem = await outcome(offlineClient.verifyTypedData({ ...params, signature } as Parameters<typeof offlineClient.verifyTypedData>[0]));
      const viaFast = await outcome(verifyTypedDataFast({ ...params, signature }, (p) => offlineClient.verifyTypedData(p as Parameters<typeof offlineClient.verifyTypedData>[0])));
      expect({ name, viaFast }).toEqual({ name, viaFast: viaViem });
    }
  });
});

describe('SIWE sign-in takes the fast path', () => {
  it('verifies a signed header in WASM, viem never asked', async () => {
    const db = { insert: () => ({ values: () => ({ onConflictDoNothing: () => ({ returning: async () => [{ nonce: 'n' }] }) }) }) } as unknown as Db;
    const verifier = new SiweVerifier({ db, clock: { now: () => new Date() }, domain: 'escrow.test', maxAgeSeconds: 600 });
    const account = privateKeyToAccount(generatePrivateKey());
    resetSignatureStats();
    for (let i = 0; i < 3; i++) {
      const signedIn = await verifier.verify(await signInHeader(account, { domain: 'escrow.test', uri: 'https://escrow.test' }));
      expect(signedIn.address).toBe(account.address);
    }
    const other = privateKeyToAccount(generatePrivateKey());
    const header = await signInHeader(account, { domain: 'escrow.test', uri: 'https://escrow.test' });
    const forged = header.replace(/\.0x[0-9a-f]+$/, `.${await other.signMessage({ message: 'x' })}`);
    await expect(verifier.verify(forged)).rejects.toMatchObject({ code: 'invalid_signature' });
    expect(signatureStats.message).toEqual({ valid: 3, invalid: 1, undecided: 0, fallback: 0 });
  });
});
