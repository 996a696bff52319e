/**
 * The dev faucet: test USDC minted by the dev token's minter (anvil account 0, an unlocked
 * account: no key needed client-side). Dev chain only; production never mints.
 */
import type { Address, Hash } from 'viem';
import { ANVIL_ACCOUNTS, BASE_USDC } from '../constants.js';
import { UsdcReader } from '../usdc.js';
import { createDevClient, DEV_POLL_INTERVAL_MS, type DevClient } from './client.js';
import { testUsdcAbi } from './contracts.js';

/** Where the faucet mints: the chain's RPC URL and its USDC token. */
export interface FaucetTarget {
  readonly rpcUrl: string;
  readonly usdc: Address;
}

/**
 * Per-RPC-URL queue for the minter's transactions. anvil fills in the nonce of an unlocked
 * account itself, but two eth_sendTransaction calls in flight at once can get the same nonce
 * ("nonce too low"); with automine each send returns once mined, so queueing sends is enough.
 */
const minterQueues = new Map<string, Promise<unknown>>();

function enqueueMinterSend<T>(rpcUrl: string, send: () => Promise<T>): Promise<T> {
  const previous = minterQueues.get(rpcUrl) ?? Promise.resolve();
  const next = previous.catch(() => undefined).then(send);
  const settled = next.catch(() => undefined);
  minterQueues.set(rpcUrl, settled);
  void settled.then(() => {
    if (minterQueues.get(rpcUrl) === settled) minterQueues.delete(rpcUrl);
  });
  return next;
}

/** Sends a mint from the minter (queued per chain); does not wait for the receipt. */
export async function sendMint(client: DevClient, rpcUrl: string, usdc: Address, to: Address, amount: bigint): Promise<Hash> {
  const minter = ANVIL_ACCOUNTS[0]!.address;
  return enqueueMinterSend(rpcUrl, () =>
    client.writeContract({ account: minter, address: usdc, abi: testUsdcAbi, functionName: 'mint', args: [to, amount] }),
  );
}

/** Waits for the receipt of `hash` and throws if the transaction reverted. */
export async function requireSuccess(client: DevClient, hash: Hash, what: string): Promise<void> {
  const receipt = await client.waitForTransactionReceipt({ hash, pollingInterval: DEV_POLL_INTERVAL_MS });
  if (receipt.status !== 'success') throw new Error(`${what} reverted (tx ${hash})`);
}

/**
 * Dev faucet: mints `amount` (atomic units) of the dev USDC to `to` from the minter
 * (account 0) and waits for the receipt. Concurrent calls in one process are queued;
 * several processes minting on the same chain at once may race on the minter's nonce.
 */
export async function mintUsdc(chain: FaucetTarget, to: Address, amount: bigint): Promise<Hash> {
  const client = createDevClient(chain.rpcUrl);
  const hash = await sendMint(client, chain.rpcUrl, chain.usdc, to, amount);
  await requireSuccess(client, hash, `mint to ${to}`);
  return hash;
}

/**
 * USDC balance (atomic units) of `address` on the chain at `rpcUrl`: a convenience for tests,
 * scripts and benchmarks, read through the production ERC-20 reader (../usdc.ts).
 */
export async function usdcBalance(rpcUrl: string, address: Address, usdc: Address = BASE_USDC): Promise<bigint> {
  return new UsdcReader(rpcUrl, usdc).balanceOf(address);
}
