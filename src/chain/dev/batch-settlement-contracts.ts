import { encodeDeployData, type Address, type Hex } from 'viem';
import { BATCH_SETTLEMENT_ADDRESS, ERC3009_DEPOSIT_COLLECTOR_ADDRESS } from '../constants.js';
import type { DevClient } from './client.js';
import { batchSettlementArtifact, erc3009DepositCollectorArtifact } from './contracts.js';

/**
 * The x402 `batch-settlement` channel contracts on the dev chain.
 *
 * @x402/evm ships only ABIs and sends every channel call to fixed addresses
 * (BATCH_SETTLEMENT_ADDRESS, ERC3009_DEPOSIT_COLLECTOR_ADDRESS). The dev chain puts this project's
 * own contracts there with `anvil_setCode`, which copies runtime code and nothing else, so:
 * - BatchSettlement has no constructor, no immutables and writes no storage at deployment: its
 *   runtime code is the artifact's `deployedBytecode` as solc emitted it;
 * - Erc3009DepositCollector's only constructor effect is its immutable `settlement`, which must be
 *   the canonical settlement address: its runtime code comes from simulating its deployment with
 *   that argument (an eth_call of the creation code, as for TestUSDC: no transaction, no stray
 *   contract), which returns the code with the immutable filled in.
 *
 * Multicall3, which the package's facilitator reads through, is installed beside them (chain-setup.ts).
 */

export interface CodePlacement {
  readonly name: string;
  readonly address: Address;
  readonly code: Hex;
}

/** Runtime code of the deposit collector serving the settlement contract at `settlement`. */
export async function depositCollectorRuntimeCode(client: DevClient, settlement: Address = BATCH_SETTLEMENT_ADDRESS): Promise<Hex> {
  const { abi, bytecode } = erc3009DepositCollectorArtifact();
  const { data } = await client.call({ data: encodeDeployData({ abi, bytecode, args: [settlement] }) });
  if (!data || data === '0x') throw new Error('Erc3009DepositCollector creation code returned no runtime code');
  return data;
}

/** The code to place at each canonical batch-settlement address of @x402/evm. */
export async function batchSettlementPlacements(client: DevClient): Promise<CodePlacement[]> {
  return [
    { name: 'BatchSettlement', address: BATCH_SETTLEMENT_ADDRESS, code: batchSettlementArtifact().deployedBytecode },
    { name: 'Erc3009DepositCollector', address: ERC3009_DEPOSIT_COLLECTOR_ADDRESS, code: await depositCollectorRuntimeCode(client) },
  ];
}
