import { HTTPFacilitatorClient, type FacilitatorClient } from '@x402/core/server';
import type { Network, SupportedResponse } from '@x402/core/types';
import { x402Facilitator } from '@x402/core/facilitator';
import { toFacilitatorEvmSigner } from '@x402/evm';
import { ExactEvmSchemeV1 } from '@x402/evm/exact/v1/facilitator';
import { BatchSettlementEvmScheme as BatchSettlementFacilitatorScheme } from '@x402/evm/batch-settlement/facilitator';
import { privateKeyToAccount } from 'viem/accounts';
import { NETWORKS as V1_NETWORKS } from '@x402/evm/v1';
import { BaseError, ContractFunctionRevertedError, encodeFunctionData, ExecutionRevertedError, type Address, type Hex } from 'viem';
import { createOperatorSender, type OperatorSender } from '../chain/operator.js';
import type { ChainTarget } from '../chain/wallets.js';
import type { Db } from '../db/client.js';
import { describeError } from '../net/redact.js';
import { FastExactEvmScheme, type FastExactOptions } from './fast-exact.js';

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
  /** The operator wallet's sender, when the caller shares it (the micro-fee settler sends from it too). */
  operator?: OperatorSender | undefined;
  /** Micro-fees verified without the chain (fast-exact.ts `local`). */
  local?: FastExactOptions['local'];
  /**
   * Batch-settlement channels (payments/channels/): the stock facilitator scheme of @x402/evm,
   * sending deposits, claims, settlements and refunds from the operator wallet, and signing claims
   * and refunds as the channels' receiver authorizer with the operator key.
   */
  channels?: boolean;
}

/**
 * The x402 facilitator the resource server talks to: a hosted one by URL, or one in this
 * process that verifies EIP-3009 authorizations and settles them from the operator wallet.
 */
export function createFacilitatorClient(opts: FacilitatorOptions): FacilitatorClient {
  if (opts.facilitatorUrl) return new HTTPFacilitatorClient({ url: opts.facilitatorUrl });
  if (!opts.rpcUrl || !opts.operatorKey) throw new Error('An in-process facilitator needs a chain RPC URL and OPERATOR_PRIVATE_KEY');
  const operator = opts.operator ?? createOperatorSender({ target: opts.target, rpcUrl: opts.rpcUrl, operatorKey: opts.operatorKey, db: opts.db, receiptPollMs: opts.receiptPollMs });
  const { client } = operator;
  const send = async (call: { to: Address; data?: Hex | undefined; value?: bigint | undefined }, args: unknown): Promise<Hex> => {
    try {
      return await operator.send(call);
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
    waitForTransactionReceipt: (a) => client.waitForTransactionReceipt({ ...a, pollingInterval: operator.receiptPollMs }),
    getCode: (a) => client.getCode(a),
  });
  // What `registerExactEvmScheme` of @x402/evm registers, except that v2 `exact` (every payment
  // this service asks for) verifies EOA authorizations fast and keeps the stock settle (fast-exact.ts).
  const facilitator = new x402Facilitator();
  facilitator.register(opts.target.network, new FastExactEvmScheme(signer, opts.local ? { local: opts.local } : {}));
  if (opts.channels) facilitator.register(opts.target.network, new BatchSettlementFacilitatorScheme(signer, privateKeyToAccount(opts.operatorKey)));
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
