import { HTTPFacilitatorClient, type FacilitatorClient } from '@x402/core/server';
import type { SupportedResponse } from '@x402/core/types';
import { x402Facilitator } from '@x402/core/facilitator';
import { toFacilitatorEvmSigner } from '@x402/evm';
import { registerExactEvmScheme } from '@x402/evm/exact/facilitator';
import { createNonceManager, createWalletClient, http, publicActions, type Chain, type Hex } from 'viem';
import { jsonRpc } from 'viem/nonce';
import { privateKeyToAccount } from 'viem/accounts';
import { base, baseSepolia } from 'viem/chains';
import type { ChainTarget } from '../chain/wallets.js';

export function viemChain(target: ChainTarget): Chain {
  return target.chainId === baseSepolia.id ? baseSepolia : base;
}

export interface FacilitatorOptions {
  target: ChainTarget;
  rpcUrl?: string | undefined;
  /** Settles in-process with this key (viem nonce manager: concurrent settlements never collide). */
  operatorKey?: Hex | undefined;
  /** A hosted facilitator instead. */
  facilitatorUrl?: string | undefined;
}

/**
 * The x402 facilitator the resource server talks to: a hosted one by URL, or one in this
 * process that verifies EIP-3009 authorizations and settles them from the operator wallet.
 */
export function createFacilitatorClient(opts: FacilitatorOptions): FacilitatorClient {
  if (opts.facilitatorUrl) return new HTTPFacilitatorClient({ url: opts.facilitatorUrl });
  if (!opts.rpcUrl || !opts.operatorKey) throw new Error('An in-process facilitator needs a chain RPC URL and OPERATOR_PRIVATE_KEY');
  const client = createWalletClient({
    // Its own nonce manager (not viem's process-wide one): concurrent settlements never collide,
    // and a second facilitator in the process (another chain, a restarted dev chain) starts clean.
    account: privateKeyToAccount(opts.operatorKey, { nonceManager: createNonceManager({ source: jsonRpc() }) }),
    chain: viemChain(opts.target),
    transport: http(opts.rpcUrl),
  }).extend(publicActions);
  const signer = toFacilitatorEvmSigner({
    address: client.account.address,
    readContract: (a) => client.readContract(a as Parameters<typeof client.readContract>[0]),
    verifyTypedData: (a) => client.verifyTypedData(a as Parameters<typeof client.verifyTypedData>[0]),
    writeContract: (a) => client.writeContract(a as Parameters<typeof client.writeContract>[0]),
    sendTransaction: (a) => client.sendTransaction(a),
    waitForTransactionReceipt: (a) => client.waitForTransactionReceipt(a),
    getCode: (a) => client.getCode(a),
  });
  const facilitator = new x402Facilitator();
  registerExactEvmScheme(facilitator, { signer, networks: opts.target.network });
  return {
    verify: (payload, requirements) => facilitator.verify(payload, requirements),
    settle: (payload, requirements) => facilitator.settle(payload, requirements),
    // The facilitator types `network` as string; the resource server wants CAIP-2 (`a:b`), which it is.
    getSupported: async () => facilitator.getSupported() as unknown as SupportedResponse,
  };
}
