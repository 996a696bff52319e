import { HTTPFacilitatorClient, type FacilitatorClient } from '@x402/core/server';
import type { Network, SupportedResponse } from '@x402/core/types';
import { x402Facilitator } from '@x402/core/facilitator';
import { toFacilitatorEvmSigner } from '@x402/evm';
import { ExactEvmSchemeV1 } from '@x402/evm/exact/v1/facilitator';
import { NETWORKS as V1_NETWORKS } from '@x402/evm/v1';
import {
  BaseError,
  ContractFunctionRevertedError,
  createWalletClient,
  encodeFunctionData,
  ExecutionRevertedError,
  http,
  publicActions,
  type Address,
  type Chain,
  type Hex,
} from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { base, baseSepolia } from 'viem/chains';
import { SendLane } from '../chain/nonces.js';
import type { ChainTarget } from '../chain/wallets.js';
import type { Db } from '../db/client.js';
import { describeError } from '../net/redact.js';
import { FastExactEvmScheme } from './fast-exact.js';

export function viemChain(target: ChainTarget): Chain {
  return target.chainId === baseSepolia.id ? baseSepolia : base;
}

export interface FacilitatorOptions {
  target: ChainTarget;
  rpcUrl?: string | undefined;
  /** Settles in-process with this key; its sends go through one lane per wallet across all processes. */
  operatorKey?: Hex | undefined;
  /** Where the lane allocates the operator wallet's nonces (shared by every API process). */
  db: Db;
  /** Where a failed send is logged with its cause (the facilitator itself reports only a reason code). */
  log?: { error(obj: object, msg: string): void };
  /** How often a settlement's receipt is polled (ms); undefined = viem's default for the chain. */
  receiptPollMs?: number | undefined;
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
    account: privateKeyToAccount(opts.operatorKey),
    chain: viemChain(opts.target),
    transport: http(opts.rpcUrl),
  }).extend(publicActions);
  // Every API process settles from this one key: nonces come from the database, one send at a
  // time per wallet across processes (chain/nonces.ts), never from a per-process counter. Gas and
  // fees are prepared before the turn; a turn only signs and broadcasts.
  const lane = new SendLane(opts.db, client.account.address.toLowerCase());
  const send = async (call: { to: Address; data?: Hex | undefined; value?: bigint | undefined }, args: unknown): Promise<Hex> => {
    const pending = client.getTransactionCount({ address: client.account.address, blockTag: 'pending' });
    try {
      const request = await client.prepareTransactionRequest({ ...call, parameters: ['fees', 'gas', 'type', 'chainId'] });
      return await lane.send(pending, async (nonce) =>
        client.sendRawTransaction({ serializedTransaction: await client.signTransaction({ ...request, nonce } as Parameters<typeof client.signTransaction>[0]) }),
      );
    } catch (err) {
      // The facilitator turns a send's exception into a reason code; the cause is logged here, with
      // the authorization's nonce, which the request's own error line carries too.
      opts.log?.error({ authorization: authorizationNonce(args), cause: describeError(err) }, 'x402 facilitator: the operator wallet could not send a settlement');
      // A revert names the authorization's fault (used, expired, the payer's balance): the
      // facilitator reads it. Anything else is the operator wallet's or the node's, and must not
      // read like the payer's ("insufficient funds for gas" is ours).
      if (err instanceof BaseError && err.walk((e) => e instanceof ExecutionRevertedError || e instanceof ContractFunctionRevertedError)) throw err;
      throw new Error('The operator wallet could not send the settlement');
    }
  };
  const signer = toFacilitatorEvmSigner({
    address: client.account.address,
    readContract: (a) => client.readContract(a as Parameters<typeof client.readContract>[0]),
    verifyTypedData: (a) => client.verifyTypedData(a as Parameters<typeof client.verifyTypedData>[0]),
    writeContract: (a) => send({ to: a.address, data: encodeFunctionData({ abi: a.abi, functionName: a.functionName, args: a.args } as Parameters<typeof encodeFunctionData>[0]) }, a),
    sendTransaction: (a) => send({ to: a.to, data: a.data }, a),
    waitForTransactionReceipt: (a) => client.waitForTransactionReceipt({ ...a, pollingInterval: opts.receiptPollMs }),
    getCode: (a) => client.getCode(a),
  });
  // What `registerExactEvmScheme` of @x402/evm registers, except that v2 `exact` (every payment
  // this service asks for) verifies EOA authorizations fast and keeps the stock settle (fast-exact.ts).
  const facilitator = new x402Facilitator();
  facilitator.register(opts.target.network, new FastExactEvmScheme(signer));
  // v1 names its networks plainly ("base"); registerV1 is typed for CAIP-2 only.
  facilitator.registerV1(V1_NETWORKS as Network[], new ExactEvmSchemeV1(signer));
  return {
    verify: (payload, requirements) => facilitator.verify(payload, requirements),
    settle: (payload, requirements) => facilitator.settle(payload, requirements),
    // The facilitator types `network` as string; the resource server wants CAIP-2 (`a:b`), which it is.
    getSupported: async () => facilitator.getSupported() as unknown as SupportedResponse,
  };
}

/** The EIP-3009 nonce among a transferWithAuthorization call's arguments (bytes32), if any. */
function authorizationNonce(args: unknown): string | undefined {
  const list = (args as { args?: unknown[] } | undefined)?.args;
  return list?.find((a): a is string => typeof a === 'string' && /^0x[0-9a-fA-F]{64}$/.test(a));
}
