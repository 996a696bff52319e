import { getAddress } from 'viem';
import { privateKeyToAccount } from 'viem/accounts';
import { describe, expect, it } from 'vitest';
import { ANVIL_ACCOUNTS, BASE_SEPOLIA_USDC, BASE_USDC, DEV_ROLES } from '../src/chain/constants.js';
import { chainTarget, resolveWallets } from '../src/chain/wallets.js';
import { ConfigError, DEV_CALLBACK_SIGNING_SECRET, loadConfig } from '../src/config.js';
import { REAL_CHAIN_ENV } from './helpers/chain-settings.js';

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
      SESSION_SECRET: 'a-production-session-secret-0123456789',
    });
    expect(chainTarget(config)).toEqual({ chainId: 84532, network: 'eip155:84532', usdc: BASE_SEPOLIA_USDC, usdcDomain: { name: 'USDC', version: '2' } });
    expect(chainTarget(loadConfig({})).usdc).toBe(BASE_USDC);
    expect(resolveWallets(config).feeAddress).toBe(getAddress('0x000000000000000000000000000000000000fee0'));
  });

  it('refuses inverted timeout bounds', () => {
    expect(() => loadConfig({ TASK_TIMEOUT_MIN_SECONDS: '100', TASK_TIMEOUT_MAX_SECONDS: '50' })).toThrow(ConfigError);
  });

  describe('wallets and secrets on a real chain (CHAIN_RPC_URL): no silent fallback to dev keys', () => {
    const realChain = {
      CHAIN_RPC_URL: 'https://rpc.example',
      ESCROW_PRIVATE_KEY: `0x${'1'.repeat(64)}`,
      OPERATOR_PRIVATE_KEY: `0x${'2'.repeat(64)}`,
      FEE_ADDRESS: '0x000000000000000000000000000000000000fEE0',
      CALLBACK_SIGNING_SECRET: 'a-production-callback-secret-0123456789',
      SESSION_SECRET: 'a-production-session-secret-0123456789',
    } as const;
    const without = (name: keyof typeof realChain, extra: Record<string, string> = {}) => {
      const env: Record<string, string> = { ...realChain, ...extra };
      delete env[name];
      return env;
    };
    const configError = (env: Record<string, string>): string => {
      try {
        loadConfig(env);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as Error).message;
      }
      throw new Error('loadConfig accepted the environment');
    };

    it.each(['ESCROW_PRIVATE_KEY', 'FEE_ADDRESS', 'OPERATOR_PRIVATE_KEY', 'CALLBACK_SIGNING_SECRET', 'SESSION_SECRET'] as const)(
      'refuses to start without %s, naming it and only it',
      (name) => {
        const message = configError(without(name));
        expect(message).toMatch(new RegExp(`^  ${name}: required with CHAIN_RPC_URL`, 'm'));
        const others = Object.keys(realChain).filter((n) => n !== name && n !== 'CHAIN_RPC_URL');
        for (const other of others) expect(message).not.toMatch(new RegExp(`^  ${other}:`, 'm'));
        // An empty value (compose's `${NAME:-}`) counts as missing.
        expect(configError({ ...realChain, [name]: '' })).toMatch(new RegExp(`^  ${name}: required`, 'm'));
      },
    );

    it('names every missing variable at once, beside other bad values, also with x402 off', () => {
      const url = realChain.CHAIN_RPC_URL;
      const envs: Record<string, string>[] = [{ CHAIN_RPC_URL: url }, { CHAIN_RPC_URL: url, X402_ENABLED: 'false' }, { CHAIN_RPC_URL: url, PORT: 'eighty' }];
      for (const env of envs) {
        const message = configError(env);
        if (env.PORT) expect(message).toMatch(/^  PORT:/m);
        for (const name of ['ESCROW_PRIVATE_KEY', 'FEE_ADDRESS', 'OPERATOR_PRIVATE_KEY', 'CALLBACK_SIGNING_SECRET', 'SESSION_SECRET']) {
          expect(message).toMatch(new RegExp(`^  ${name}: required with CHAIN_RPC_URL`, 'm'));
        }
      }
    });

    it('needs no operator key with a hosted FACILITATOR_URL, and invents none', () => {
      const config = loadConfig(without('OPERATOR_PRIVATE_KEY', { FACILITATOR_URL: 'https://facilitator.example' }));
      expect(config.OPERATOR_PRIVATE_KEY).toBeUndefined();
      expect(resolveWallets(config).operatorKey).toBeUndefined();
    });

    it('refuses a session secret that is the callback secret (callback receivers know that one), or shorter than 32 characters', () => {
      expect(configError({ ...realChain, SESSION_SECRET: realChain.CALLBACK_SIGNING_SECRET })).toMatch(/^  SESSION_SECRET: must differ from CALLBACK_SIGNING_SECRET/m);
      const short = configError({ ...realChain, SESSION_SECRET: 'short-secret' });
      expect(short).toMatch(/^  SESSION_SECRET:/m);
      expect(short).not.toContain('short-secret');
      expect(loadConfig(realChain).SESSION_SECRET).toBe(realChain.SESSION_SECRET);
    });

    it('refuses the dev callback secret', () => {
      expect(configError({ ...realChain, CALLBACK_SIGNING_SECRET: DEV_CALLBACK_SIGNING_SECRET })).toMatch(/^  CALLBACK_SIGNING_SECRET: set your own secret/m);
    });

    it('uses exactly the configured wallets', () => {
      const config = loadConfig(realChain);
      const wallets = resolveWallets(config);
      expect(wallets.escrowKey).toBe(realChain.ESCROW_PRIVATE_KEY);
      expect(wallets.escrowAddress).toBe(privateKeyToAccount(realChain.ESCROW_PRIVATE_KEY).address);
      expect(wallets.operatorKey).toBe(realChain.OPERATOR_PRIVATE_KEY);
      expect(wallets.feeAddress).toBe(getAddress(realChain.FEE_ADDRESS));
      expect(config.CALLBACK_SIGNING_SECRET).toBe(realChain.CALLBACK_SIGNING_SECRET);
      const devKeys = new Set(ANVIL_ACCOUNTS.map((a) => a.privateKey));
      expect(devKeys.has(wallets.escrowKey)).toBe(false);
      expect(devKeys.has(wallets.operatorKey!)).toBe(false);
    });
  });

  describe('sessions', () => {
    it('default to 900 s tokens, bounded 60 s to a day, and need no secret in dev mode (each process makes its own)', () => {
      const config = loadConfig({});
      expect(config.SESSION_TTL_SECONDS).toBe(900);
      expect(config.SESSION_SECRET).toBeUndefined();
      expect(loadConfig({ SESSION_TTL_SECONDS: '86400' }).SESSION_TTL_SECONDS).toBe(86_400);
      for (const bad of ['59', '86401', 'soon']) expect(() => loadConfig({ SESSION_TTL_SECONDS: bad })).toThrow(/SESSION_TTL_SECONDS/);
    });
  });

  describe('the embedded chain (no CHAIN_RPC_URL)', () => {
    it("defaults to anvil's dev accounts and a dev callback secret, as documented", () => {
      const config = loadConfig({});
      expect(config.ESCROW_PRIVATE_KEY).toBe(ANVIL_ACCOUNTS[DEV_ROLES.escrow]!.privateKey);
      expect(config.OPERATOR_PRIVATE_KEY).toBe(ANVIL_ACCOUNTS[DEV_ROLES.operator]!.privateKey);
      expect(config.FEE_ADDRESS).toBe(ANVIL_ACCOUNTS[DEV_ROLES.feeTreasury]!.address);
      expect(config.CALLBACK_SIGNING_SECRET).toBe(DEV_CALLBACK_SIGNING_SECRET);
      expect(resolveWallets(config)).toEqual({
        escrowKey: ANVIL_ACCOUNTS[1]!.privateKey,
        escrowAddress: ANVIL_ACCOUNTS[1]!.address,
        operatorKey: ANVIL_ACCOUNTS[2]!.privateKey,
        feeAddress: ANVIL_ACCOUNTS[3]!.address,
        feeKey: ANVIL_ACCOUNTS[3]!.privateKey,
      });
    });

    it('takes the values that are set over the dev defaults', () => {
      const config = loadConfig({
        ESCROW_PRIVATE_KEY: `0x${'3'.repeat(64)}`,
        OPERATOR_PRIVATE_KEY: `0x${'4'.repeat(64)}`,
        FEE_ADDRESS: '0x000000000000000000000000000000000000fEE1',
        CALLBACK_SIGNING_SECRET: 'my-own-callback-signing-secret-0123456789',
      });
      expect(resolveWallets(config)).toMatchObject({
        escrowKey: `0x${'3'.repeat(64)}`,
        operatorKey: `0x${'4'.repeat(64)}`,
        feeAddress: getAddress('0x000000000000000000000000000000000000fee1'),
        feeKey: undefined, // another fee address: the dev fee key is not its key
      });
      expect(config.CALLBACK_SIGNING_SECRET).toBe('my-own-callback-signing-secret-0123456789');
    });

    it('refuses a FEE_PRIVATE_KEY that is not the key of FEE_ADDRESS', () => {
      expect(() => loadConfig({ FEE_ADDRESS: ANVIL_ACCOUNTS[3]!.address, FEE_PRIVATE_KEY: ANVIL_ACCOUNTS[4]!.privateKey })).toThrow(
        /FEE_PRIVATE_KEY: is the key of 0x[0-9a-f]{40}, not of FEE_ADDRESS/,
      );
      expect(resolveWallets(loadConfig({ FEE_ADDRESS: ANVIL_ACCOUNTS[3]!.address, FEE_PRIVATE_KEY: ANVIL_ACCOUNTS[3]!.privateKey })).feeKey).toBe(
        ANVIL_ACCOUNTS[3]!.privateKey,
      );
    });
  });

  it('refuses roles run apart without a shared database and chain, and a worker without its public URL, naming each', () => {
    expect(() => loadConfig({ ROLE: 'api' })).toThrow(/DATABASE_URL: required with ROLE=api[\s\S]*CHAIN_RPC_URL: required with ROLE=api/);
    const shared = { DATABASE_URL: 'postgres://u@db:5432/escrow', ...REAL_CHAIN_ENV };
    expect(loadConfig({ ...shared, ROLE: 'api' }).ROLE).toBe('api');
    expect(() => loadConfig({ ...shared, ROLE: 'worker' })).toThrow(/PUBLIC_BASE_URL: required with ROLE=worker/);
    expect(loadConfig({ ...shared, ROLE: 'worker', PUBLIC_BASE_URL: 'https://api.example.com' }).ROLE).toBe('worker');
    expect(() => loadConfig({ DISPATCH_LEASE_MS: '4000', DISPATCH_HEARTBEAT_MS: '3000' })).toThrow(/DISPATCH_HEARTBEAT_MS: must be at most half/);
    expect(() => loadConfig({ EVENT_STREAM_HEARTBEAT_MS: '30000', REQUEST_TIMEOUT_MS: '30000' })).toThrow(/EVENT_STREAM_HEARTBEAT_MS: must be below REQUEST_TIMEOUT_MS/);
  });
});
