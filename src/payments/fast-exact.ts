import { InMemoryPendingSettlementStore } from '@x402/core/facilitator';
import type { FacilitatorContext, Network, PaymentPayload, PaymentRequirements, SchemeNetworkFacilitator, SettleResponse, VerifyResponse } from '@x402/core/types';
import { authorizationTypes, eip3009ABI, isPermit2Payload, type FacilitatorEvmSigner } from '@x402/evm';
import { ExactEvmScheme } from '@x402/evm/exact/facilitator';
import { getAddress, isAddress, parseSignature as viemParseSignature, type Address, type Hex } from 'viem';
import { parseSignature, recoverAddressFromDigest } from '../crypto/ecdsa.js';
import { eip3009Digest } from '../crypto/eip712.js';
import type { PayerBalances } from './payer-balances.js';

/**
 * The `exact` scheme of @x402/evm 2.27 for x402 v2, with a fast verify for the common payment: an
 * EIP-3009 `transferWithAuthorization` signed by an externally owned account.
 *
 * The stock verify (`verifyEIP3009` in @x402/evm) recovers the signer with viem's pure-JS
 * secp256k1 (~3 ms of CPU) and asks the chain for the payer's code twice; the stock settle runs
 * that verify again before it sends. Here:
 * - verify makes the stock verify's checks, in its order and with its reason codes, but builds the
 *   EIP-712 digest from a cached domain separator and a precomputed type hash
 *   (crypto/eip712.ts) and recovers with libsecp256k1 in WASM (crypto/ecdsa.ts);
 * - the payer's code (is it an account or a contract?) is cached for `payerCodeTtlMs` and the
 *   asset's for `assetCodeTtlMs`; whether the authorization can still be spent (balance, nonce
 *   not used, the token's own signature check) is asked of the chain on every verify, by the same
 *   `eth_call` simulation the stock verify makes;
 * - settle stays the stock settle; for an authorization this verify accepted, its repeated
 *   signature check is answered from that result (see `vouchingSigner`).
 *
 * The stock scheme decides, unchanged, everything outside that path: Permit2 payloads, smart
 * wallets (a payer with code: ERC-1271, EIP-7702), ERC-6492 signatures, input of an unusual shape
 * (what the stock code would throw on), an RPC that failed, and every failed simulation (its
 * diagnosis names the reason: nonce used, balance, token name…). test/payments/fast-exact.test.ts
 * compares both verdicts on the same inputs.
 */

/** How often each path answered (tests, benchmarks). */
export const fastExactStats = { fastValid: 0, fastInvalid: 0, stock: 0, vouchedSettles: 0, stockSettles: 0, localValid: 0 };

export interface FastExactOptions {
  /** How long a payer's code (empty: an account) is trusted. A stale answer cannot pass a bad payment: the simulation asks the token. */
  payerCodeTtlMs?: number;
  /** How long the asset's code is trusted (the stock scheme trusts it 15 minutes). */
  assetCodeTtlMs?: number;
  /** Clock in ms (tests move it). */
  now?: () => number;
  /** Handed to the stock scheme. */
  eip6492AllowedFactories?: string[];
  simulateInSettle?: boolean;
  /**
   * Micro-fees verified without the chain: for requirements this names, a valid EOA authorization
   * is accepted when the payer's balance, as last seen (`balances`, one read per payer per TTL),
   * covers it, instead of by an `eth_call` simulation per payment. Whether the nonce is still
   * unused on chain is learnt when the authorization is settled (payments/micro-fees.ts).
   */
  local?: { appliesTo(requirements: PaymentRequirements): boolean; balances: PayerBalances };
}

// The stock scheme's reason codes (@x402/evm `ErrInvalidScheme` … `ErrAuthorizationValueMismatch`).
export const REASONS = {
  scheme: 'invalid_exact_evm_scheme',
  network: 'invalid_exact_evm_network_mismatch',
  domain: 'invalid_exact_evm_missing_eip712_domain',
  signature: 'invalid_exact_evm_signature',
  recipient: 'invalid_exact_evm_recipient_mismatch',
  validBefore: 'invalid_exact_evm_payload_authorization_valid_before',
  validAfter: 'invalid_exact_evm_payload_authorization_valid_after',
  value: 'invalid_exact_evm_payload_authorization_value_mismatch',
} as const;

/** The stock verify refuses an authorization that expires within this many seconds. */
const VALID_BEFORE_MARGIN_S = 6n;
const ERC1271_MAGIC = '0x1626ba7e';
/** ERC-6492 wraps a signature and ends it with this 32-byte suffix. */
const ERC6492_SUFFIX = '6492'.repeat(16);
const ECDSA_HEX = /^0x[0-9a-fA-F]{130}$/;
const UINT = /^[0-9]{1,78}$/;
const NONCE = /^0x[0-9a-fA-F]{64}$/;
const EIP155 = /^eip155:([0-9]{1,15})$/;
const VOUCHED_MAX = 4096;
const PAYER_CODE_TTL_MS = 30_000;
const ASSET_CODE_TTL_MS = 15 * 60_000;
const CODE_CACHE_MAX = 10_000;

interface Authorization {
  from: string;
  to: string;
  value: string;
  validAfter: string;
  validBefore: string;
  nonce: string;
}

/** An EIP-3009 payload of the shape the fast path takes: six strings and a 65-byte hex signature. */
export interface PlainEip3009 {
  authorization: Authorization;
  signature: Hex;
}

/** A signature this verify recovered to its payer: the digest it signs (what settle's check is answered from). */
interface Vouched {
  payer: string;
  digest: Hex;
}

export class FastExactEvmScheme implements SchemeNetworkFacilitator {
  readonly scheme = 'exact';
  readonly caipFamily = 'eip155:*';
  private readonly stock: ExactEvmScheme;
  private readonly pendingStore = new InMemoryPendingSettlementStore();
  private readonly codes: CodeCache;
  /** The signer with its payer code reads cached: the stock scheme reads through it too. */
  private readonly cachedSigner: FacilitatorEvmSigner;
  private readonly vouched = new Map<string, Vouched>();
  private readonly now: () => number;

  constructor(
    private readonly signer: FacilitatorEvmSigner,
    private readonly opts: FastExactOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
    this.codes = new CodeCache(signer, this.now);
    this.cachedSigner = this.codes.wrap(signer, opts.payerCodeTtlMs ?? PAYER_CODE_TTL_MS);
    this.stock = this.stockScheme(this.cachedSigner);
  }

  getExtra(network: Network): Record<string, unknown> | undefined {
    return this.stock.getExtra(network);
  }

  getSigners(network: string): string[] {
    return this.stock.getSigners(network);
  }

  async verify(payload: PaymentPayload, requirements: PaymentRequirements, context?: FacilitatorContext): Promise<VerifyResponse> {
    const answer = await this.fastVerify(payload, requirements);
    if (answer) {
      fastExactStats[answer.isValid ? 'fastValid' : 'fastInvalid']++;
      return answer;
    }
    fastExactStats.stock++;
    return this.stock.verify(payload, requirements, context);
  }

  /**
   * The stock settle. For an authorization this verify accepted it runs on a signer that vouches
   * for that one signature, so the settle's own signature check costs nothing; its other checks
   * (recipient, time window, amount) run again as always, and the token checks the signature on
   * chain when it executes.
   */
  async settle(payload: PaymentPayload, requirements: PaymentRequirements, context?: FacilitatorContext): Promise<SettleResponse> {
    const plain = plainEip3009(payload.payload);
    const vouched = plain ? this.vouched.get(plain.signature) : undefined;
    if (!plain || !vouched || vouched.payer !== plain.authorization.from.toLowerCase()) {
      fastExactStats.stockSettles++;
      return this.stock.settle(payload, requirements, context);
    }
    this.vouched.delete(plain.signature);
    fastExactStats.vouchedSettles++;
    return this.stockScheme(vouchingSigner(this.cachedSigner, plain.signature, vouched)).settle(payload, requirements, context);
  }

  /** A stock scheme on `signer`, sharing this scheme's store of settlements in flight. */
  private stockScheme(signer: FacilitatorEvmSigner): ExactEvmScheme {
    return new ExactEvmScheme(signer, {
      eip6492AllowedFactories: this.opts.eip6492AllowedFactories ?? [],
      simulateInSettle: this.opts.simulateInSettle ?? false,
      pendingSettlementStore: this.pendingStore,
    });
  }

  /**
   * The stock verify's verdict, reached without it; undefined when only the stock verify can
   * answer (see the class comment). The checks run in the stock order, so a payload with two
   * faults is refused for the same one.
   */
  private async fastVerify(payload: PaymentPayload, requirements: PaymentRequirements): Promise<VerifyResponse | undefined> {
    const plain = plainEip3009(payload.payload);
    const terms = plainTerms(requirements);
    if (!plain || !terms || isPermit2Payload(payload.payload as never)) return undefined;
    const { authorization: auth, signature } = plain;
    const refuse = (invalidReason: string): VerifyResponse => ({ isValid: false, invalidReason, payer: auth.from });

    if (payload.accepted.scheme !== 'exact' || requirements.scheme !== 'exact') return refuse(REASONS.scheme);
    if (!terms.name || !terms.version) return refuse(REASONS.domain);
    if (payload.accepted.network !== requirements.network) return refuse(REASONS.network);
    if (terms.chainId === undefined) return undefined;

    // Both are usually cached; the asset's answer is awaited where the stock verify awaits it.
    const assetCode = this.codes.get(terms.asset, this.opts.assetCodeTtlMs ?? ASSET_CODE_TTL_MS).catch(() => undefined);
    const payerCode = await this.codes.get(auth.from, this.opts.payerCodeTtlMs ?? PAYER_CODE_TTL_MS).catch(() => undefined);
    if (payerCode !== '0x') return undefined; // a contract (ERC-1271, EIP-7702), or the RPC failed

    const digest = eip3009Digest({
      domain: { name: terms.name, version: terms.version, chainId: terms.chainId, verifyingContract: terms.asset },
      types: authorizationTypes,
      primaryType: 'TransferWithAuthorization',
      message: { ...auth, value: BigInt(auth.value), validAfter: BigInt(auth.validAfter), validBefore: BigInt(auth.validBefore) },
    });
    if (!digest) return undefined; // an address viem would judge itself
    const sig = parseSignature(signature);
    if (!sig || recoverAddressFromDigest(digest, sig) !== auth.from.toLowerCase()) return refuse(REASONS.signature);

    if (auth.to.toLowerCase() !== terms.payTo) return refuse(REASONS.recipient);
    const nowS = BigInt(Math.floor(this.now() / 1000));
    if (BigInt(auth.validBefore) < nowS + VALID_BEFORE_MARGIN_S) return refuse(REASONS.validBefore);
    if (BigInt(auth.validAfter) > nowS) return refuse(REASONS.validAfter);
    if (BigInt(auth.value) !== terms.amount) return refuse(REASONS.value);
    if ((await assetCode) === undefined || (await assetCode) === '0x') return undefined; // stock names it (or throws)

    if (!(await this.coveredLocally(requirements, terms, auth)) && !(await this.simulate(terms.asset, plain))) return undefined; // stock diagnoses: nonce used, balance…
    this.vouch(signature, { payer: auth.from.toLowerCase(), digest: `0x${Buffer.from(digest).toString('hex')}` });
    return { isValid: true, invalidReason: undefined, payer: auth.from };
  }

  /** A micro-fee whose payer was seen to hold enough (see `FastExactOptions.local`). */
  private async coveredLocally(requirements: PaymentRequirements, terms: PlainTerms, auth: Authorization): Promise<boolean> {
    const local = this.opts.local;
    if (!local?.appliesTo(requirements)) return false;
    const balance = await local.balances.read(terms.asset, getAddress(auth.from)).catch(() => undefined);
    if (balance === undefined || balance < terms.amount) return false;
    fastExactStats.localValid++;
    return true;
  }

  /** The stock verify's simulation: `transferWithAuthorization` by `eth_call`, true when it would succeed. */
  private async simulate(asset: Address, { authorization: a, signature }: PlainEip3009): Promise<boolean> {
    const { v, yParity, r, s } = viemParseSignature(signature);
    try {
      await this.signer.readContract({
        address: asset,
        abi: eip3009ABI,
        functionName: 'transferWithAuthorization',
        args: [getAddress(a.from), getAddress(a.to), BigInt(a.value), BigInt(a.validAfter), BigInt(a.validBefore), a.nonce, v ?? yParity, r, s],
      });
      return true;
    } catch {
      return false;
    }
  }

  private vouch(signature: Hex, entry: Vouched): void {
    if (this.vouched.size >= VOUCHED_MAX) this.vouched.delete(this.vouched.keys().next().value!);
    this.vouched.set(signature, entry);
  }
}

/**
 * The signer the stock settle of one vouched authorization runs on. The stock settle re-checks the
 * signature with viem's pure-JS recovery unless the payer has code, in which case it asks the
 * payer's ERC-1271 `isValidSignature(digest, signature)`; it offers no other hook. So, for this
 * settle only: the payer reads as having code, and `isValidSignature` answers valid for exactly the
 * digest and signature this scheme's verify recovered to the payer (a pure fact: recovery gives the
 * same answer every time). Any other digest or signature goes to the chain, where an account has no
 * `isValidSignature` and the check fails, as it should. The signer lies about nothing that reaches
 * the chain: the transfer itself is checked by the token.
 */
function vouchingSigner(base: FacilitatorEvmSigner, signature: Hex, vouched: Vouched): FacilitatorEvmSigner {
  const isPayer = (address: string) => address.toLowerCase() === vouched.payer;
  return {
    ...base,
    getAddresses: () => base.getAddresses(),
    getCode: async (args) => (isPayer(args.address) ? VOUCHED_CODE : base.getCode(args)),
    readContract: async (args) => {
      const [digest, sig] = (args.args ?? []) as unknown[];
      const vouchedCall =
        args.functionName === 'isValidSignature' &&
        isPayer(args.address) &&
        typeof digest === 'string' &&
        digest.toLowerCase() === vouched.digest &&
        sig === signature;
      return vouchedCall ? ERC1271_MAGIC : base.readContract(args);
    },
  };
}

/** What the payer's code reads as while a vouched settle runs (never sent anywhere). */
const VOUCHED_CODE: Hex = '0xfe';

/** `payload` if it is an EIP-3009 payload of six strings and a plain 65-byte ECDSA signature. */
export function plainEip3009(payload: unknown): PlainEip3009 | undefined {
  const p = payload as { authorization?: Record<string, unknown>; signature?: unknown } | null;
  const a = p?.authorization;
  if (!a || typeof a !== 'object' || typeof p.signature !== 'string') return undefined;
  if (!ECDSA_HEX.test(p.signature) || p.signature.endsWith(ERC6492_SUFFIX)) return undefined;
  const { from, to, value, validAfter, validBefore, nonce } = a;
  if (typeof from !== 'string' || typeof to !== 'string' || typeof nonce !== 'string' || !NONCE.test(nonce)) return undefined;
  if (![value, validAfter, validBefore].every((n) => typeof n === 'string' && UINT.test(n))) return undefined;
  return { authorization: { from, to, value, validAfter, validBefore, nonce } as Authorization, signature: p.signature as Hex };
}

interface PlainTerms {
  name: string | undefined;
  version: string | undefined;
  asset: Address;
  payTo: string;
  amount: bigint;
  chainId: number | undefined;
}

/** The requirements' fields the checks read, or undefined where the stock code would throw on them. */
function plainTerms(r: PaymentRequirements): PlainTerms | undefined {
  if (!isAddress(r.asset, { strict: false }) || !isAddress(r.payTo, { strict: false }) || !UINT.test(r.amount)) return undefined;
  const extra = (r.extra ?? {}) as { name?: unknown; version?: unknown };
  // A missing or empty name/version is refused below, as the stock verify refuses it; any other non-string is the stock code's to judge.
  if ((extra.name && typeof extra.name !== 'string') || (extra.version && typeof extra.version !== 'string')) return undefined;
  const chain = EIP155.exec(r.network)?.[1];
  return {
    name: extra.name ? (extra.name as string) : undefined,
    version: extra.version ? (extra.version as string) : undefined,
    asset: getAddress(r.asset),
    payTo: r.payTo.toLowerCase(),
    amount: BigInt(r.amount),
    chainId: chain === undefined ? undefined : Number(chain),
  };
}

/**
 * `eth_getCode` answers, kept for a while per address: whether a payer is an account or a contract
 * changes rarely (a deployment, an EIP-7702 delegation), and every check that matters is made
 * again on chain when the transfer runs. Failed reads are not kept.
 */
class CodeCache {
  private readonly entries = new Map<string, { code: Hex; until: number }>();

  constructor(
    private readonly signer: FacilitatorEvmSigner,
    private readonly now: () => number,
  ) {}

  async get(address: string, ttlMs: number, signer: FacilitatorEvmSigner = this.signer): Promise<Hex> {
    const key = address.toLowerCase();
    const hit = this.entries.get(key);
    if (hit && hit.until > this.now()) return hit.code;
    const code = ((await signer.getCode({ address: address as Address })) ?? '0x') as Hex;
    if (this.entries.size >= CODE_CACHE_MAX) this.entries.clear();
    this.entries.set(key, { code, until: this.now() + ttlMs });
    return code;
  }

  /** `signer` with its `getCode` answered from this cache, kept `ttlMs`. */
  wrap(signer: FacilitatorEvmSigner, ttlMs: number): FacilitatorEvmSigner {
    return { ...signer, getAddresses: () => signer.getAddresses(), getCode: (args) => this.get(args.address, ttlMs, signer) };
  }
}
