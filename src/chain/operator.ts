import { createWalletClient, http, publicActions, type Address, type Chain, type Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { base, baseSepolia } from 'viem/chains';
import type { Db } from '../db/client.js';
import { SendLane } from './nonces.js';
import type { ChainTarget } from './wallets.js';

export function viemChain(target: ChainTarget): Chain {
  return target.chainId === baseSepolia.id ? baseSepolia : base;
}

export interface OperatorOptions {
  target: ChainTarget;
  rpcUrl: string;
  operatorKey: Hex;
  /** Where the lane allocates the operator wallet's nonces (shared by every process). */
  db: Db;
  /** How often a transaction's receipt is polled (ms); undefined = viem's default for the chain. */
  receiptPollMs?: number | undefined;
}

/** The operator wallet: it pays the gas of x402 settlements (one by one, or micro-fees in batches). */
export type OperatorClient = ReturnType<typeof operatorClient>;

function operatorClient(opts: OperatorOptions) {
  return createWalletClient({
    account: privateKeyToAccount(opts.operatorKey),
    chain: viemChain(opts.target),
    transport: http(opts.rpcUrl),
  }).extend(publicActions);
}

export interface OperatorSender {
  readonly address: Address;
  readonly client: OperatorClient;
  readonly receiptPollMs: number | undefined;
  /** Signs and broadcasts one call from the operator wallet, in its turn of the wallet's lane. */
  send(call: { to: Address; data?: Hex | undefined; value?: bigint | undefined; gas?: bigint | undefined }): Promise<Hex>;
}

/**
 * Every process sends from the one operator key through one lane per wallet: nonces come from the
 * database, one send at a time across processes (chain/nonces.ts), never from a per-process
 * counter. Gas and fees are prepared before the turn; a turn only signs and broadcasts.
 */
export function createOperatorSender(opts: OperatorOptions): OperatorSender {
  const client = operatorClient(opts);
  const lane = new SendLane(opts.db, client.account.address.toLowerCase());
  return {
    address: client.account.address,
    client,
    receiptPollMs: opts.receiptPollMs,
    send: async (call) => {
      const pending = client.getTransactionCount({ address: client.account.address, blockTag: 'pending' });
      // A call that names its gas limit is not estimated (a batch whose inner calls may fail on their own must not be).
      const request = await client.prepareTransactionRequest({ ...call, parameters: call.gas === undefined ? ['fees', 'gas', 'type', 'chainId'] : ['fees', 'type', 'chainId'] });
      return lane.send(pending, async (nonce) =>
        client.sendRawTransaction({ serializedTransaction: await client.signTransaction({ ...request, nonce } as Parameters<typeof client.signTransaction>[0]) }),
      );
    },
  };
}
