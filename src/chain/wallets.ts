import { getAddress, type Address, type Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import type { Config } from '../config.js';
import {
  BASE_CHAIN_ID,
  BASE_NETWORK,
  BASE_SEPOLIA_CHAIN_ID,
  BASE_SEPOLIA_NETWORK,
  BASE_SEPOLIA_USDC,
  BASE_USDC,
} from './constants.js';

/**
 * The operator's wallets, exactly as the configuration resolved them: src/config.ts requires
 * them with CHAIN_RPC_URL and fills in anvil's dev accounts only for the embedded chain. Nothing
 * here falls back to a key of its own.
 */
export interface Wallets {
  escrowKey: Hex;
  escrowAddress: Address;
  /** The in-process facilitator's key; undefined on a real chain with a hosted FACILITATOR_URL. */
  operatorKey: Hex | undefined;
  feeAddress: Address;
  /** The fee wallet's key, when the service may send from it (refunds of call fees). */
  feeKey: Hex | undefined;
}

export interface ChainTarget {
  chainId: number;
  /** CAIP-2, as x402 puts it on the wire. */
  network: `eip155:${number}`;
  usdc: Address;
  /** EIP-712 domain of the USDC contract (Base mainnet: "USD Coin"; Base Sepolia: "USDC"). */
  usdcDomain: { name: string; version: string };
}

export function resolveWallets(config: Config): Wallets {
  return {
    escrowKey: config.ESCROW_PRIVATE_KEY,
    escrowAddress: privateKeyToAccount(config.ESCROW_PRIVATE_KEY).address,
    operatorKey: config.OPERATOR_PRIVATE_KEY,
    feeAddress: getAddress(config.FEE_ADDRESS),
    feeKey: config.FEE_PRIVATE_KEY as Hex | undefined,
  };
}

export function chainTarget(config: Config): ChainTarget {
  if (config.CHAIN_NETWORK === 'base-sepolia') {
    return { chainId: BASE_SEPOLIA_CHAIN_ID, network: BASE_SEPOLIA_NETWORK, usdc: BASE_SEPOLIA_USDC, usdcDomain: { name: 'USDC', version: '2' } };
  }
  return { chainId: BASE_CHAIN_ID, network: BASE_NETWORK, usdc: BASE_USDC, usdcDomain: { name: 'USD Coin', version: '2' } };
}
