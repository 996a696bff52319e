import { getAddress } from 'viem';
import { describe, expect, it } from 'vitest';
import { BASE_SEPOLIA_USDC, BASE_USDC } from '../src/chain/constants.js';
import { chainTarget, resolveWallets } from '../src/chain/wallets.js';
import { ConfigError, loadConfig } from '../src/config.js';

describe('configuration', () => {
  it('runs on embedded defaults with nothing set', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({ PORT: 3000, DATA_DIR: './data', ROLE: 'all', X402_ENABLED: true, PLATFORM_FEE_BPS: 250 });
    expect(config.DATABASE_URL).toBeUndefined();
    expect(config.CHAIN_RPC_URL).toBeUndefined();
    expect(config.PRICE_TASK_STATUS).toBe(1000n);
    // dev wallets: anvil 1 holds escrow, 3 takes fees, 2 operates the facilitator
    const wallets = resolveWallets(config);
    expect(wallets.escrowAddress).toBe('0x70997970C51812dc3A010C7d01b50e0d17dc79C8');
    expect(wallets.feeAddress).toBe('0x90F79bf6EB2c4f870365E785982E1f101E93b906');
    expect(wallets.operatorKey).toMatch(/^0x[0-9a-f]{64}$/);
  });

  it('names every bad value in one readable message', () => {
    let error: unknown;
    try {
      loadConfig({ PORT: 'eighty', DATABASE_URL: 'mysql://x', LOG_LEVEL: 'loud', PRICE_TASK_STATUS: '-1', ESCROW_PRIVATE_KEY: '0x12' });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as Error).message;
    for (const name of ['PORT', 'DATABASE_URL', 'LOG_LEVEL', 'PRICE_TASK_STATUS', 'ESCROW_PRIVATE_KEY']) expect(message).toContain(name);
    expect(message).not.toContain('0x12');
  });

  it('needs the operator wallets for a real chain, and picks that chain’s USDC', () => {
    expect(() => loadConfig({ CHAIN_RPC_URL: 'https://rpc.example' })).toThrow(/ESCROW_PRIVATE_KEY/);
    const key = `0x${'1'.repeat(64)}`;
    const config = loadConfig({
      CHAIN_RPC_URL: 'https://rpc.example',
      CHAIN_NETWORK: 'base-sepolia',
      ESCROW_PRIVATE_KEY: key,
      OPERATOR_PRIVATE_KEY: `0x${'2'.repeat(64)}`,
      FEE_ADDRESS: '0x000000000000000000000000000000000000fEE0',
      CALLBACK_SIGNING_SECRET: 'a-production-callback-secret-0123456789',
    });
    expect(chainTarget(config)).toEqual({ chainId: 84532, network: 'eip155:84532', usdc: BASE_SEPOLIA_USDC, usdcDomain: { name: 'USDC', version: '2' } });
    expect(chainTarget(loadConfig({})).usdc).toBe(BASE_USDC);
    expect(resolveWallets(config).feeAddress).toBe(getAddress('0x000000000000000000000000000000000000fee0'));
  });

  it('refuses inverted timeout bounds', () => {
    expect(() => loadConfig({ TASK_TIMEOUT_MIN_SECONDS: '100', TASK_TIMEOUT_MAX_SECONDS: '50' })).toThrow(ConfigError);
  });
});
