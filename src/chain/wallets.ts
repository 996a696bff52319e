import { getAddress, type Address, type Hex } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import type { Config } from '../config.js';
import {
  ANVIL_ACCOUNTS,
  BASE_CHAIN_ID,
  BASE_NETWORK,
  BASE_SEPOLIA_CHAIN_ID,
  BASE_SEPOLIA_NETWORK,
  BASE_SEPOLIA_USDC,
  BASE_USDC,
  DEV_ROLES,
} from './constants.js';

/** The operator's wallets and the USDC deployment the service uses; dev defaults on the embedded chain. */
export interface Wallets {
  escrowKey: Hex;
  escrowAddress: Address;
  operatorKey: Hex | undefined;
  feeAddress: Address;
}

export interface ChainTarget {
  chainId: number;
  /** CAIP-2, as x402 puts it on the wire. */
  network: `eip155:${number}`;
  usdc: Address;
  /** EIP-712 domain of the USDC contract (Base mainnet: "USD Coin"; Base Sepolia: "USDC"). */
  usdcDomain: { name: string; version: string };
}

const devKey = (i: number): Hex => ANVIL_ACCOUNTS[i]!.privateKey;

export function resolveWallets(config: Config): Wallets {
  const dev = !config.CHAIN_RPC_URL;
  const escrowKey = config.ESCROW_PRIVATE_KEY ? (config.ESCROW_PRIVATE_KEY as Hex) : devKey(DEV_ROLES.escrow);
  const operatorKey = config.OPERATOR_PRIVATE_KEY ? (config.OPERATOR_PRIVATE_KEY as Hex) : dev ? devKey(DEV_ROLES.operator) : undefined;
  const feeAddress = config.FEE_ADDRESS ?? ANVIL_ACCOUNTS[DEV_ROLES.feeTreasury]!.address;
  return {
    escrowKey,
    escrowAddress: privateKeyToAccount(escrowKey).address,
    operatorKey,
    feeAddress: getAddress(feeAddress),
  };
}

export function chainTarget(config: Config): ChainTarget {
  if (config.CHAIN_NETWORK === 'base-sepolia') {
    return { chainId: BASE_SEPOLIA_CHAIN_ID, network: BASE_SEPOLIA_NETWORK, usdc: BASE_SEPOLIA_USDC, usdcDomain: { name: 'USDC', version: '2' } };
  }
  return { chainId: BASE_CHAIN_ID, network: BASE_NETWORK, usdc: BASE_USDC, usdcDomain: { name: 'USD Coin', version: '2' } };
}
