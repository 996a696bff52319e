import type { Address, Hex } from 'viem';

/** Chain id of Base mainnet; the local dev chain uses it too. */
export const BASE_CHAIN_ID = 8453;
/** CAIP-2 id of Base mainnet, as x402 writes networks. */
export const BASE_NETWORK = 'eip155:8453';
export const BASE_SEPOLIA_CHAIN_ID = 84532;
export const BASE_SEPOLIA_NETWORK = 'eip155:84532';

/** Circle USDC on Base mainnet (EIP-712 domain {name: "USD Coin", version: "2"}). */
export const BASE_USDC: Address = '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913';
/** Circle USDC on Base Sepolia (EIP-712 domain {name: "USDC", version: "2"}). */
export const BASE_SEPOLIA_USDC: Address = '0x036CbD53842c5426634e7929541eC2318f3dCF7e';
/** Canonical Multicall3 address (same on every chain). */
export const MULTICALL3: Address = '0xcA11bde05977b3631167028862bE2a173976CA11';

/**
 * Where the x402 `batch-settlement` scheme of @x402/evm expects its channel contract and its ERC-3009
 * deposit collector (the package hard-codes both, the same on every chain). On the embedded dev
 * chain this project's own contracts (contracts/BatchSettlement.sol, Erc3009DepositCollector.sol)
 * are placed there.
 */
export const BATCH_SETTLEMENT_ADDRESS: Address = '0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003';
export const ERC3009_DEPOSIT_COLLECTOR_ADDRESS: Address = '0x4020806089470a89826cB9fB1f4059150b550004';

export const USDC_DECIMALS = 6;
/** EIP-712 domain name/version of USDC on Base mainnet (and of the dev-chain token). */
export const USDC_EIP712_NAME = 'USD Coin';
export const USDC_EIP712_VERSION = '2';

/** The public test mnemonic anvil, Hardhat and Foundry derive their dev accounts from. */
export const ANVIL_MNEMONIC = 'test test test test test test test test test test test junk';

export interface DevAccount {
  readonly address: Address;
  readonly privateKey: Hex;
}

/**
 * The 10 default anvil accounts (m/44'/60'/0'/0/i of ANVIL_MNEMONIC). Publicly known keys:
 * only ever fund them on a local chain.
 */
export const ANVIL_ACCOUNTS: readonly DevAccount[] = Object.freeze([
  {
    address: '0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266',
    privateKey: '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80',
  },
  {
    address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8',
    privateKey: '0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d',
  },
  {
    address: '0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC',
    privateKey: '0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a',
  },
  {
    address: '0x90F79bf6EB2c4f870365E785982E1f101E93b906',
    privateKey: '0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6',
  },
  {
    address: '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65',
    privateKey: '0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a',
  },
  {
    address: '0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc',
    privateKey: '0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba',
  },
  {
    address: '0x976EA74026E726554dB657fA54763abd0C3a0aa9',
    privateKey: '0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e',
  },
  {
    address: '0x14dC79964da2C08b23698B3D3cc7Ca32193d9955',
    privateKey: '0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356',
  },
  {
    address: '0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f',
    privateKey: '0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97',
  },
  {
    address: '0xa0Ee7A142d267C1f36714E4a8F75612F20a79720',
    privateKey: '0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6',
  },
]);

/** Addresses of ANVIL_ACCOUNTS, in order. */
export const ANVIL_ADDRESSES: readonly Address[] = Object.freeze(ANVIL_ACCOUNTS.map((a) => a.address));

/**
 * Who is who on the embedded dev chain (indices into ANVIL_ACCOUNTS):
 * 0 mints test USDC; 1 is the escrow wallet; 2 the operator (facilitator, pays gas);
 * 3 receives per-call fees; 4-9 are demo wallets holding test USDC for clients.
 * The escrow and fee wallets start with no USDC so the ledger reconciles exactly.
 */
export const DEV_ROLES = {
  minter: 0,
  escrow: 1,
  operator: 2,
  feeTreasury: 3,
  demo: [4, 5, 6, 7, 8, 9],
} as const;

/** EIP-712 fields of an EIP-3009 transfer/receive authorization (as USDC signs them). */
export const AUTHORIZATION_FIELDS = [
  { name: 'from', type: 'address' },
  { name: 'to', type: 'address' },
  { name: 'value', type: 'uint256' },
  { name: 'validAfter', type: 'uint256' },
  { name: 'validBefore', type: 'uint256' },
  { name: 'nonce', type: 'bytes32' },
] as const;

/** How often anything polls the embedded chain for a receipt: anvil mines each transaction at once. */
export const DEV_POLL_INTERVAL_MS = 20;
