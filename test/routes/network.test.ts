import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ANVIL_ACCOUNTS, BASE_USDC, DEV_ROLES } from '../../src/chain/constants.js';
import { loadConfig } from '../../src/config.js';
import { buildDocumentApp } from '../../src/http/openapi-document.js';
import { priceNames } from '../../src/payments/prices.js';
import { NetworkInfo } from '../../src/routes/v1/network.js';
import { buildTestApp, type TestApp } from '../helpers/app.js';
import { REAL_CHAIN_ENV } from '../helpers/chain-settings.js';

/** GET /v1/network: which chain, token, wallets, schemes and prices; an RPC URL only when it may be published. */
let t: TestApp;
beforeAll(async () => {
  t = await buildTestApp();
});
afterAll(() => t.close());

async function network(app: TestApp['app']) {
  const res = await app.inject({ method: 'GET', url: '/v1/network' });
  expect(res.statusCode, res.body).toBe(200);
  const body = res.json();
  expect(NetworkInfo.safeParse(body).success, res.body).toBe(true);
  return body;
}

describe('GET /v1/network', () => {
  it('names the chain, the USDC contract, the wallets and every price, with no signature or payment', async () => {
    const body = await network(t.app);
    expect(body).toMatchObject({
      network: 'eip155:8453',
      chain: 'base',
      chain_id: 8453,
      dev_chain: true,
      usdc: { address: BASE_USDC, decimals: 6, eip712_name: 'USD Coin', eip712_version: '2' },
      escrow_address: ANVIL_ACCOUNTS[DEV_ROLES.escrow]!.address,
      fee_address: ANVIL_ACCOUNTS[DEV_ROLES.feeTreasury]!.address,
      x402: { enabled: false, version: 2, schemes: [] },
      platform_fee_bps: t.config.PLATFORM_FEE_BPS,
    });
    expect(Object.keys(body.prices).sort()).toEqual([...priceNames].sort());
    for (const name of priceNames) expect(body.prices[name]).toBe(t.app.prices[name].toString());
    // No embedded chain was started for this app and none is published.
    expect(body.rpc_url).toBeNull();
  });

  it('publishes the embedded dev chain’s RPC URL and the x402 schemes when x402 is on', async () => {
    const { app, close } = await buildDocumentApp(); // x402 on, dev chain at a made-up URL
    try {
      const res = await app.inject({ method: 'GET', url: '/v1/network' });
      expect(res.statusCode, res.body).toBe(200);
      expect(res.json()).toMatchObject({ dev_chain: true, rpc_url: 'http://127.0.0.1:1', x402: { enabled: true, version: 2, schemes: ['exact', 'batch-settlement'] } });
      expect(res.json().channels).toMatchObject({ enabled: true, deposit_calls: 1000, deposit_max: '1000000', withdraw_delay_seconds: 86400 });
    } finally {
      await close();
    }
  });

  it('never publishes the service’s own provider URL on a real chain; only PUBLIC_CHAIN_RPC_URL', async () => {
    const secretRpc = 'https://base-mainnet.provider.example/v2/SECRET-PROVIDER-KEY';
    const hidden = await buildTestApp({ ...REAL_CHAIN_ENV, CHAIN_RPC_URL: secretRpc });
    try {
      const res = await hidden.app.inject({ method: 'GET', url: '/v1/network' });
      expect(res.statusCode, res.body).toBe(200);
      expect(res.body).not.toContain('SECRET-PROVIDER-KEY');
      expect(res.json()).toMatchObject({ dev_chain: false, rpc_url: null, fee_address: REAL_CHAIN_ENV.FEE_ADDRESS });
    } finally {
      await hidden.close();
    }
    const shown = await buildTestApp({ ...REAL_CHAIN_ENV, CHAIN_RPC_URL: secretRpc, PUBLIC_CHAIN_RPC_URL: 'https://mainnet.base.org' });
    try {
      const body = await network(shown.app);
      expect(body.rpc_url).toBe('https://mainnet.base.org');
    } finally {
      await shown.close();
    }
  });

  it('refuses a PUBLIC_CHAIN_RPC_URL that carries credentials', () => {
    expect(() => loadConfig({ NODE_ENV: 'test', PUBLIC_CHAIN_RPC_URL: 'https://user:pass@rpc.example' })).toThrow(/PUBLIC_CHAIN_RPC_URL/);
    expect(loadConfig({ NODE_ENV: 'test', PUBLIC_CHAIN_RPC_URL: 'https://mainnet.base.org' }).PUBLIC_CHAIN_RPC_URL).toBe('https://mainnet.base.org');
  });
});
