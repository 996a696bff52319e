import { randomBytes } from 'node:crypto';
import { BATCH_SETTLEMENT_DOMAIN, claimBatchTypes, refundTypes, voucherTypes } from '@x402/evm';
import {
  createPublicClient,
  createWalletClient,
  encodeAbiParameters,
  http,
  keccak256,
  publicActions,
  toHex,
  type Address,
  type Hex,
  type TransactionReceipt,
} from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { base } from 'viem/chains';
import {
  AUTHORIZATION_FIELDS,
  BASE_CHAIN_ID,
  BASE_USDC,
  BATCH_SETTLEMENT_ADDRESS,
  ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
  USDC_EIP712_NAME,
  USDC_EIP712_VERSION,
  type DevAccount,
} from '../../src/chain/constants.js';
import { batchSettlementAbi } from '../../src/chain/dev/contracts.js';

/**
 * Shared pieces of the batch-settlement contract tests: channel configs, the payer's and the
 * receiver authorizer's EIP-712 signatures (with the types @x402/evm ships), ERC-3009 deposits
 * through the collector, and receipts with their gas.
 */

export interface ChannelConfig {
  payer: Address;
  payerAuthorizer: Address;
  receiver: Address;
  receiverAuthorizer: Address;
  token: Address;
  withdrawDelay: number;
  salt: Hex;
}

export interface VoucherClaim {
  voucher: { channel: ChannelConfig; maxClaimableAmount: bigint };
  signature: Hex;
  totalClaimed: bigint;
}

export const ZERO_ADDRESS: Address = '0x0000000000000000000000000000000000000000';
export const WITHDRAW_DELAY = 900;

/** The scheme's EIP-712 domain on the dev chain, as @x402/evm builds it. */
export const SETTLEMENT_DOMAIN = { ...BATCH_SETTLEMENT_DOMAIN, chainId: BASE_CHAIN_ID, verifyingContract: BATCH_SETTLEMENT_ADDRESS } as const;
const USDC_DOMAIN = { name: USDC_EIP712_NAME, version: USDC_EIP712_VERSION, chainId: BASE_CHAIN_ID, verifyingContract: BASE_USDC } as const;

export const randomSalt = (): Hex => toHex(randomBytes(32));
export const nowSeconds = (): bigint => BigInt(Math.floor(Date.now() / 1000));

export function channelConfig(payer: DevAccount, receiver: Address, receiverAuthorizer: Address, overrides: Partial<ChannelConfig> = {}): ChannelConfig {
  return {
    payer: payer.address,
    payerAuthorizer: payer.address,
    receiver,
    receiverAuthorizer,
    token: BASE_USDC,
    withdrawDelay: WITHDRAW_DELAY,
    salt: randomSalt(),
    ...overrides,
  };
}

const signer = (account: DevAccount) => privateKeyToAccount(account.privateKey);

/** A cumulative voucher: `signer` lets the receiver claim up to `maxClaimableAmount` in all. */
export function signVoucher(account: DevAccount, channelId: Hex, maxClaimableAmount: bigint): Promise<Hex> {
  return signer(account).signTypedData({ domain: SETTLEMENT_DOMAIN, types: voucherTypes, primaryType: 'Voucher', message: { channelId, maxClaimableAmount } });
}

export function signRefund(account: DevAccount, channelId: Hex, nonce: bigint, amount: bigint): Promise<Hex> {
  return signer(account).signTypedData({ domain: SETTLEMENT_DOMAIN, types: refundTypes, primaryType: 'Refund', message: { channelId, nonce, amount } });
}

/** The receiver authorizer's signature over a claim batch (entries as `ClaimEntry` rows). */
export function signClaimBatch(account: DevAccount, entries: { channelId: Hex; maxClaimableAmount: bigint; totalClaimed: bigint }[]): Promise<Hex> {
  return signer(account).signTypedData({ domain: SETTLEMENT_DOMAIN, types: claimBatchTypes, primaryType: 'ClaimBatch', message: { claims: entries } });
}

/** The ERC-3009 nonce that binds a deposit authorization to one channel. */
export const depositNonce = (channelId: Hex, salt: bigint): Hex =>
  keccak256(encodeAbiParameters([{ type: 'bytes32' }, { type: 'uint256' }], [channelId, salt]));

/**
 * `collectorData` for a deposit of `amount` into `channelId`: the payer's ReceiveWithAuthorization
 * to the collector, as the scheme's client signs it.
 */
export async function depositCollectorData(payer: DevAccount, channelId: Hex, amount: bigint, opts: { salt?: bigint; signer?: DevAccount } = {}): Promise<Hex> {
  const salt = opts.salt ?? BigInt(randomSalt());
  const validBefore = nowSeconds() + 3600n;
  const signature = await signer(opts.signer ?? payer).signTypedData({
    domain: USDC_DOMAIN,
    types: { ReceiveWithAuthorization: AUTHORIZATION_FIELDS },
    primaryType: 'ReceiveWithAuthorization',
    message: { from: payer.address, to: ERC3009_DEPOSIT_COLLECTOR_ADDRESS, value: amount, validAfter: 0n, validBefore, nonce: depositNonce(channelId, salt) },
  });
  return encodeAbiParameters(
    [{ type: 'uint256' }, { type: 'uint256' }, { type: 'uint256' }, { type: 'bytes' }],
    [0n, validBefore, salt, signature],
  );
}

/** Reads and sends on the dev chain, from one account, waiting for each receipt. */
export function chainClients(rpcUrl: string) {
  const publicClient = createPublicClient({ chain: base, transport: http(rpcUrl), cacheTime: 0, pollingInterval: 20 });
  const walletFor = (account: DevAccount) =>
    createWalletClient({ account: privateKeyToAccount(account.privateKey), chain: base, transport: http(rpcUrl), cacheTime: 0, pollingInterval: 20 }).extend(publicActions);
  return { publicClient, walletFor };
}

export type SettlementFunction = 'deposit' | 'claim' | 'claimWithSignature' | 'settle' | 'initiateWithdraw' | 'finalizeWithdraw' | 'refund' | 'refundWithSignature' | 'multicall';

/** Calls the settlement contract from `account` and returns the successful receipt. */
export async function sendSettlement(rpcUrl: string, account: DevAccount, functionName: SettlementFunction, args: readonly unknown[]): Promise<TransactionReceipt> {
  const { publicClient, walletFor } = chainClients(rpcUrl);
  const hash = await walletFor(account).writeContract({ address: BATCH_SETTLEMENT_ADDRESS, abi: batchSettlementAbi, functionName, args } as never);
  const receipt = await publicClient.waitForTransactionReceipt({ hash, pollingInterval: 20 });
  if (receipt.status !== 'success') throw new Error(`${functionName} reverted in ${hash}`);
  return receipt;
}

/** The custom error a call to the settlement contract would revert with (simulated, nothing sent). */
export async function revertOf(rpcUrl: string, account: DevAccount, functionName: SettlementFunction, args: readonly unknown[]): Promise<string> {
  const { publicClient } = chainClients(rpcUrl);
  try {
    await publicClient.simulateContract({ account: account.address, address: BATCH_SETTLEMENT_ADDRESS, abi: batchSettlementAbi, functionName, args } as never);
  } catch (error) {
    // A custom error of the contract by name; a require/revert string (the token's) by its text.
    type Decoded = { data?: { errorName?: string; args?: readonly unknown[] } };
    const walked = (error as { walk?: (fn: (e: unknown) => boolean) => unknown }).walk?.((e) => typeof (e as Decoded).data?.errorName === 'string') as Decoded | undefined;
    const decoded = walked?.data;
    if (decoded?.errorName === 'Error') return String(decoded.args?.[0]);
    return decoded?.errorName ?? (error as { shortMessage?: string }).shortMessage ?? String(error);
  }
  return 'no revert';
}
