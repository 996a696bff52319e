/**
 * The paying wallets: fresh keys holding minted test USDC and no ETH (x402 pays with EIP-3009
 * signatures; the facilitator pays the gas), each with the stock `@x402/fetch` client.
 */
import { x402Client } from '@x402/core/client';
import { registerExactEvmScheme } from '@x402/evm/exact/client';
import { wrapFetchWithPayment } from '@x402/fetch';
import type { Address } from 'viem';
import { generatePrivateKey, privateKeyToAccount, type PrivateKeyAccount } from 'viem/accounts';
import { mintUsdc, type DevChain } from '../../src/chain/dev/devchain.js';

export interface Payer {
  account: PrivateKeyAccount;
  address: Address;
  /** USDC minted to it at the start (its balance before the soak). */
  start: bigint;
  pay: typeof fetch;
}

/**
 * The stock x402 client paying from `account`, spend cap lifted for escrow funding: the same as
 * `x402ClientFor` in test/helpers/paid.ts (which cannot be imported outside vitest: its module
 * graph reads vitest's injected context).
 */
export function x402ClientFor(account: PrivateKeyAccount): x402Client {
  const client = new x402Client();
  registerExactEvmScheme(client, { signer: account });
  client.setSpendControls({ maxAmountPerPayment: false });
  return client;
}

export async function fundedPayers(chain: DevChain, count: number, usdc: bigint): Promise<Payer[]> {
  const payers: Payer[] = [];
  for (let i = 0; i < count; i++) {
    const account = privateKeyToAccount(generatePrivateKey());
    await mintUsdc(chain, account.address, usdc);
    payers.push({ account, address: account.address, start: usdc, pay: wrapFetchWithPayment(fetch, x402ClientFor(account)) });
  }
  return payers;
}
