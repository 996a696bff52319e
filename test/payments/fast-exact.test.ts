import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { PaymentPayload, PaymentRequirements } from '@x402/core/types';
import { authorizationTypes, toFacilitatorEvmSigner, type FacilitatorEvmSigner } from '@x402/evm';
import { ExactEvmScheme } from '@x402/evm/exact/facilitator';
import { createWalletClient, http, publicActions, serializeErc6492Signature, type Address, type Hex } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { base } from 'viem/chains';
import { ANVIL_ACCOUNTS, DEV_ROLES } from '../../src/chain/constants.js';
import { startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { FastExactEvmScheme, REASONS, fastExactStats } from '../../src/payments/fast-exact.js';

/**
 * The fast exact verify (src/payments/fast-exact.ts) against the stock @x402/evm verify, on a real
 * anvil: every input is given to both, and both must answer the same. Then settlement through the
 * fast scheme (the stock settle on a vouching signer).
 */

let chain: DevChain;
let signer: FacilitatorEvmSigner;
let stock: ExactEvmScheme;
let fast: FastExactEvmScheme;
let requirements: PaymentRequirements;
const payTo = privateKeyToAccount(generatePrivateKey()).address;
const payer = privateKeyToAccount(ANVIL_ACCOUNTS[DEV_ROLES.demo[0]]!.privateKey);
const stranger = privateKeyToAccount(generatePrivateKey());

beforeAll(async () => {
  chain = await startDevChain({ silent: true, fundIndices: [...DEV_ROLES.demo] });
  const client = createWalletClient({
    account: privateKeyToAccount(ANVIL_ACCOUNTS[DEV_ROLES.operator]!.privateKey),
    chain: base,
    transport: http(chain.rpcUrl),
  }).extend(publicActions);
  signer = toFacilitatorEvmSigner({
    address: client.account.address,
    readContract: (a) => client.readContract(a as Parameters<typeof client.readContract>[0]),
    verifyTypedData: (a) => client.verifyTypedData(a as Parameters<typeof client.verifyTypedData>[0]),
    writeContract: (a) => client.writeContract(a as Parameters<typeof client.writeContract>[0]),
    sendTransaction: (a) => client.sendTransaction(a),
    waitForTransactionReceipt: (a) => client.waitForTransactionReceipt(a),
    getCode: (a) => client.getCode(a),
  });
  stock = new ExactEvmScheme(signer);
  fast = new FastExactEvmScheme(signer);
  requirements = {
    scheme: 'exact',
    network: 'eip155:8453',
    amount: '1000',
    asset: chain.usdc,
    payTo,
    maxTimeoutSeconds: 300,
    extra: { name: 'USD Coin', version: '2' },
  };
});
afterAll(() => chain?.stop());
beforeEach(() => {
  for (const k of Object.keys(fastExactStats) as (keyof typeof fastExactStats)[]) fastExactStats[k] = 0;
});

const nowS = () => Math.floor(Date.now() / 1000);
const randomNonce = (): Hex => `0x${Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('hex')}`;

interface Draft {
  from?: Address;
  to?: Address;
  value?: string;
  validAfter?: string;
  validBefore?: string;
  /** Who signs (default: the payer). */
  by?: PrivateKeyAccount;
  /** Changes the signature after signing. */
  tamper?: (signature: Hex) => Hex;
  accepted?: Partial<PaymentRequirements>;
}

/** An x402 v2 exact payload as the stock client builds it, with `draft`'s changes. */
async function payment(draft: Draft = {}): Promise<PaymentPayload> {
  const by = draft.by ?? payer;
  const authorization = {
    from: draft.from ?? by.address,
    to: draft.to ?? payTo,
    value: draft.value ?? requirements.amount,
    validAfter: draft.validAfter ?? String(nowS() - 600),
    validBefore: draft.validBefore ?? String(nowS() + 300),
    nonce: randomNonce(),
  };
  const signature = await by.signTypedData({
    domain: { name: 'USD Coin', version: '2', chainId: 8453, verifyingContract: chain.usdc },
    types: authorizationTypes,
    primaryType: 'TransferWithAuthorization',
    message: {
      ...authorization,
      value: BigInt(authorization.value),
      validAfter: BigInt(authorization.validAfter),
      validBefore: BigInt(authorization.validBefore),
    },
  });
  return {
    x402Version: 2,
    resource: { url: 'http://test.local/paid', description: 'test', mimeType: 'application/json' },
    accepted: { ...requirements, ...draft.accepted },
    payload: { authorization, signature: draft.tamper ? draft.tamper(signature) : signature },
  };
}

/** Both verdicts on the same input; they must be equal. */
async function bothVerify(p: PaymentPayload, r: PaymentRequirements = requirements) {
  const fastAnswer = await fast.verify(p, r);
  const stockAnswer = await stock.verify(p, r);
  expect(fastAnswer).toEqual(stockAnswer);
  return fastAnswer;
}

/** Flips one bit of the byte at `index` (0-based) of a hex signature. */
const flipByte = (index: number) => (sig: Hex): Hex => {
  const bytes = Buffer.from(sig.slice(2), 'hex');
  bytes[index]! ^= 0x01;
  return `0x${bytes.toString('hex')}`;
};

describe('fast exact verify decides as the stock verify', () => {
  it('accepts a valid authorization on the fast path', async () => {
    expect(await bothVerify(await payment())).toEqual({ isValid: true, invalidReason: undefined, payer: payer.address });
    expect(fastExactStats).toMatchObject({ fastValid: 1, stock: 0 });
  });

  it.each<[string, () => Promise<PaymentPayload>, string, PaymentRequirements?]>([
    ['signed by another key', () => payment({ by: stranger, from: payer.address }), REASONS.signature],
    ['for another amount', () => payment({ value: '999' }), REASONS.value],
    ['expired', () => payment({ validBefore: String(nowS() - 1) }), REASONS.validBefore],
    ['expiring within the margin', () => payment({ validBefore: String(nowS() + 3) }), REASONS.validBefore],
    ['not yet valid', () => payment({ validAfter: String(nowS() + 600) }), REASONS.validAfter],
    ['to another recipient', () => payment({ to: stranger.address }), REASONS.recipient],
    ['with a tampered s', () => payment({ tamper: flipByte(40) }), REASONS.signature],
    ['with a tampered r', () => payment({ tamper: flipByte(3) }), REASONS.signature],
    ['with a bad v', () => payment({ tamper: (s) => `${s.slice(0, 130)}1d` as Hex }), REASONS.signature],
    ['for another scheme', () => payment({ accepted: { scheme: 'upto' } }), REASONS.scheme],
    ['for another network', () => payment({ accepted: { network: 'eip155:84532' } }), REASONS.network],
    ['against terms without an EIP-712 domain', () => payment(), REASONS.domain, { scheme: 'exact', network: 'eip155:8453', amount: '1000', asset: '', payTo, maxTimeoutSeconds: 300, extra: {} }],
  ])('refuses an authorization %s with the stock reason', async (_, make, reason, terms) => {
    const r = terms ? { ...terms, asset: chain.usdc } : requirements;
    expect(await bothVerify(await make(), r)).toMatchObject({ isValid: false, invalidReason: reason, payer: payer.address });
    expect(fastExactStats).toMatchObject({ fastInvalid: 1, stock: 0 });
  });

  it('hands a failed simulation to the stock verify, which names it (no balance)', async () => {
    const broke = privateKeyToAccount(generatePrivateKey());
    const answer = await bothVerify(await payment({ by: broke }));
    expect(answer).toMatchObject({ isValid: false, invalidReason: 'invalid_exact_evm_insufficient_balance' });
    expect(fastExactStats).toMatchObject({ fastValid: 0, stock: 1 });
  });

  it('leaves a payer with code (a smart wallet) to the stock verify', async () => {
    const wallet = privateKeyToAccount(generatePrivateKey());
    await rpc('anvil_setCode', [wallet.address, '0x6080604052']);
    const answer = await bothVerify(await payment({ by: wallet }));
    expect(answer.isValid).toBe(false);
    expect(fastExactStats).toMatchObject({ fastValid: 0, fastInvalid: 0, stock: 1 });
  });

  it('leaves an ERC-6492 signature to the stock verify', async () => {
    const wrap = (s: Hex) => serializeErc6492Signature({ address: stranger.address, data: '0xdeadbeef', signature: s });
    const answer = await bothVerify(await payment({ tamper: wrap }));
    expect(answer.isValid).toBe(false);
    expect(fastExactStats).toMatchObject({ fastValid: 0, stock: 1 });
  });
});

describe('what the fast scheme caches', () => {
  it("trusts a payer's code for 30 s, then reads it again", async () => {
    let clock = Date.now();
    const cached = new FastExactEvmScheme(signer, { now: () => clock });
    const wallet = privateKeyToAccount(generatePrivateKey());
    const p = await payment({ by: wallet, value: '999' });
    expect(await cached.verify(p, requirements)).toMatchObject({ invalidReason: REASONS.value });
    await rpc('anvil_setCode', [wallet.address, '0x6080604052']); // it becomes a contract (as by an EIP-7702 delegation)
    clock += 29_000;
    expect(await cached.verify(p, requirements)).toMatchObject({ invalidReason: REASONS.value });
    expect(fastExactStats).toMatchObject({ fastInvalid: 2, stock: 0 });
    clock += 2_000;
    // Read again: a contract now, so the stock verify decides (ERC-1271, which this code refuses).
    expect(await cached.verify(p, requirements)).toMatchObject({ invalidReason: REASONS.signature });
    expect(fastExactStats).toMatchObject({ fastInvalid: 2, stock: 1 });
  });
});

describe('settlement through the fast scheme', () => {
  it('settles a fast-verified authorization with the stock settle, without a second recovery', async () => {
    const p = await payment();
    const before = await usdcBalance(chain.rpcUrl, payTo);
    expect((await fast.verify(p, requirements)).isValid).toBe(true);
    const settled = await fast.settle(p, requirements);
    expect(settled).toMatchObject({ success: true, payer: payer.address, network: 'eip155:8453' });
    expect(await usdcBalance(chain.rpcUrl, payTo)).toBe(before + 1000n);
    expect(fastExactStats).toMatchObject({ vouchedSettles: 1, stockSettles: 0 });

    // Spent: the same authorization again is the stock path's to refuse, and both refuse alike.
    const again = await bothVerify(p);
    expect(again).toMatchObject({ isValid: false, invalidReason: 'invalid_exact_evm_nonce_already_used' });
    expect(await fast.settle(p, requirements)).toMatchObject({ success: false });
    expect(fastExactStats.stockSettles).toBe(1);
  });

  it('does not vouch for a changed authorization that reuses a verified signature', async () => {
    const p = await payment();
    expect((await fast.verify(p, requirements)).isValid).toBe(true);
    const auth = (p.payload as { authorization: Record<string, string> }).authorization;
    const changed: PaymentPayload = { ...p, payload: { ...p.payload, authorization: { ...auth, value: '2000' } } };
    const before = await usdcBalance(chain.rpcUrl, payTo);
    const settled = await fast.settle(changed, { ...requirements, amount: '2000' });
    expect(settled).toMatchObject({ success: false, errorReason: REASONS.signature });
    expect(await usdcBalance(chain.rpcUrl, payTo)).toBe(before);
  });

  it('settles an authorization it never verified through the stock path', async () => {
    const p = await payment();
    expect(await fast.settle(p, requirements)).toMatchObject({ success: true });
    expect(fastExactStats).toMatchObject({ vouchedSettles: 0, stockSettles: 1 });
  });
});

async function rpc(method: string, params: unknown[]): Promise<unknown> {
  const res = await fetch(chain.rpcUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) });
  const body = (await res.json()) as { result?: unknown; error?: unknown };
  if (body.error) throw new Error(JSON.stringify(body.error));
  return body.result;
}
