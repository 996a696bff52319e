import { encodeDeployData, type Address, type Hex } from 'viem';
import { ANVIL_ACCOUNTS, BASE_USDC, MULTICALL3, type DevAccount } from '../constants.js';
import { batchSettlementPlacements } from './batch-settlement-contracts.js';
import type { DevClient } from './client.js';
import { multicall3Artifact, testUsdcArtifact } from './contracts.js';
import type { DevChainOptions } from './devchain-types.js';
import { requireSuccess, sendMint } from './faucet.js';

export const DEFAULT_FUND_AMOUNT = 10_000_000_000n; // 10 000 USDC

// ---------------------------------------------------------------------------- chain setup

/**
 * Runtime code of TestUSDC with `minter` baked in as its immutable: the result of an eth_call
 * of the creation code (a simulated deployment; no transaction, no stray contract).
 */
async function usdcRuntimeCode(client: DevClient, minter: Address): Promise<Hex> {
  const { abi, bytecode } = testUsdcArtifact();
  const { data } = await client.call({ data: encodeDeployData({ abi, bytecode, args: [minter] }) });
  if (!data || data === '0x') throw new Error('TestUSDC creation code returned no runtime code');
  return data;
}

/** Puts `code` at `address` unless it is already there. Returns whether the address was empty. */
async function ensureCode(client: DevClient, address: Address, code: Hex): Promise<boolean> {
  const current = await client.getCode({ address });
  if (current?.toLowerCase() === code.toLowerCase()) return false;
  await client.setCode({ address, bytecode: code });
  return !current || current === '0x';
}

async function fundAccounts(
  client: DevClient,
  rpcUrl: string,
  recipients: readonly DevAccount[],
  amount: bigint,
): Promise<void> {
  const hashes = await Promise.all(recipients.map(({ address }) => sendMint(client, rpcUrl, BASE_USDC, address, amount)));
  await Promise.all(hashes.map((hash, i) => requireSuccess(client, hash, `mint to ${recipients[i]!.address}`)));
}

export interface SetupResult {
  readonly restored: boolean;
  readonly funded: number;
}

export interface Funding {
  readonly indices: readonly number[];
  readonly amount: bigint;
}

export function fundingFrom(opts: DevChainOptions): Funding {
  const count = opts.fundAccounts ?? ANVIL_ACCOUNTS.length;
  const amount = opts.fundAmount ?? DEFAULT_FUND_AMOUNT;
  if (!Number.isInteger(count) || count < 0 || count > ANVIL_ACCOUNTS.length) {
    throw new RangeError(`fundAccounts must be an integer in 0..${ANVIL_ACCOUNTS.length}`);
  }
  const indices = opts.fundIndices ?? [...Array(count).keys()];
  if (indices.some((i) => !Number.isInteger(i) || i < 0 || i >= ANVIL_ACCOUNTS.length)) {
    throw new RangeError(`fundIndices must be integers in 0..${ANVIL_ACCOUNTS.length - 1}`);
  }
  if (amount <= 0n) throw new RangeError('fundAmount must be positive');
  return { indices, amount };
}

export async function installContracts(client: DevClient, rpcUrl: string, funding: Funding): Promise<SetupResult> {
  const minter = ANVIL_ACCOUNTS[0]!.address;
  const [usdcCode, channelContracts] = await Promise.all([
    usdcRuntimeCode(client, minter),
    batchSettlementPlacements(client),
    ensureCode(client, MULTICALL3, multicall3Artifact().deployedBytecode),
  ]);
  // The x402 batch-settlement contracts at @x402/evm's fixed addresses (also on a restored chain
  // whose state predates them, or carries an older build).
  await Promise.all(channelContracts.map(({ address, code }) => ensureCode(client, address, code)));
  const usdcWasEmpty = await ensureCode(client, BASE_USDC, usdcCode);
  if (!usdcWasEmpty) {
    // A restored chain's latest block carries the timestamp of its last run: mine one so that
    // eth_call simulations (EIP-3009 validBefore/validAfter) see the current time.
    await client.mine({ blocks: 1 });
    return { restored: true, funded: 0 };
  }
  await fundAccounts(client, rpcUrl, funding.indices.map((i) => ANVIL_ACCOUNTS[i]!), funding.amount);
  return { restored: false, funded: funding.indices.length };
}
