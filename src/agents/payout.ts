import { createPublicClient, getAddress, http, zeroAddress, type Address } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { chainTarget, resolveWallets } from '../chain/wallets.js';
import type { Config } from '../config.js';
import { AppError } from '../errors.js';

/**
 * Payout addresses that can receive: released escrow is paid to an agent's payout address, so
 * one that burns the money, loops it back into the service's own wallets or strands it in a
 * contract is refused at registration and update (`validation_error`, param `payout_address`).
 */
export interface PayoutRules {
  /** Addresses that may never be a payout, keyed lower-case, with what they are. */
  forbidden: ReadonlyMap<string, string>;
  /**
   * Whether an address holds contract code; absent = not checked (the embedded dev chain).
   * A contract is accepted only when the request opts in with `payout_is_contract: true`.
   */
  hasCode?: (address: Address) => Promise<boolean>;
}

const PARAM = 'payout_address';

/** The rules of this deployment: its own wallets and the USDC contract; code checked on a real chain only. */
export function payoutRules(config: Config): PayoutRules {
  const wallets = resolveWallets(config);
  const target = chainTarget(config);
  const operator = wallets.operatorKey ? privateKeyToAccount(wallets.operatorKey).address : undefined;
  const forbidden = new Map<string, string>([
    [wallets.escrowAddress.toLowerCase(), "this service's escrow wallet"],
    [wallets.feeAddress.toLowerCase(), "this service's fee address"],
    [target.usdc.toLowerCase(), 'the USDC token contract'],
  ]);
  if (operator) forbidden.set(operator.toLowerCase(), "this service's operator wallet");
  return config.CHAIN_RPC_URL ? { forbidden, hasCode: codeReader(config.CHAIN_RPC_URL) } : { forbidden };
}

/** eth_getCode over the chain's JSON-RPC; an EIP-7702 delegation (an EOA with a delegate) is not a contract. */
export function codeReader(rpcUrl: string): (address: Address) => Promise<boolean> {
  const client = createPublicClient({ transport: http(rpcUrl, { retryCount: 1, timeout: 10_000 }) });
  return async (address) => {
    const code = await client.getCode({ address });
    if (!code || code === '0x') return false;
    return !(code.length === 2 + 23 * 2 && code.toLowerCase().startsWith('0xef0100'));
  };
}

/**
 * Refuses a payout address that cannot (or must not) receive released escrow: the zero address,
 * the service's own escrow, operator and fee wallets, the USDC contract, and, where the chain is
 * checked, a contract unless `isContract` (the request's `payout_is_contract: true`) says so.
 */
export async function checkPayoutAddress(address: string, rules: PayoutRules, isContract = false): Promise<void> {
  const lower = address.toLowerCase();
  if (lower === zeroAddress) {
    throw new AppError('validation_error', 'payout_address must not be the zero address: what is paid to it is burnt', { param: PARAM });
  }
  const what = rules.forbidden.get(lower);
  if (what) {
    throw new AppError('validation_error', `payout_address must not be ${what}: pay agents to a wallet of their own`, { param: PARAM });
  }
  if (!rules.hasCode || isContract) return;
  let code: boolean;
  try {
    code = await rules.hasCode(getAddress(address));
  } catch (err) {
    throw new AppError('service_unavailable', 'Could not check payout_address on chain; retry shortly', { cause: err });
  }
  if (code) {
    throw new AppError(
      'validation_error',
      'payout_address is a contract: USDC sent to a contract that cannot move it is lost. ' +
        'If this contract can receive and move USDC (a smart wallet, a multisig), send "payout_is_contract": true',
      { param: PARAM },
    );
  }
}
