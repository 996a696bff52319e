/**
 * No payment is settled while the database cannot record it: with the database cut (a TCP proxy
 * in front of real Postgres), a paid call answers 503 before any settlement and the payer keeps
 * every atomic unit; once the database is back the same client pays and is served.
 */
import type { FastifyInstance } from 'fastify';
import { wrapFetchWithPayment } from '@x402/fetch';
import { generatePrivateKey, privateKeyToAccount } from 'viem/accounts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { mintUsdc, startDevChain, usdcBalance, type DevChain } from '../../src/chain/dev/devchain.js';
import { loadConfig } from '../../src/config.js';
import { openDatabase, type Database } from '../../src/db/client.js';
import { runMigrations } from '../../src/db/migrate.js';
import { x402ClientFor } from '../helpers/paid.js';
import { scratchDatabase, type ScratchDatabase } from '../helpers/service-process.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';

let chain: DevChain;
let scratch: ScratchDatabase;
let proxy: TcpProxy;
let database: Database;
let app: FastifyInstance;
let baseUrl: string;

beforeAll(async () => {
  [chain, scratch] = await Promise.all([startDevChain({ silent: true, fundIndices: [] }), scratchDatabase('paidoutage')]);
  const direct = await openDatabase({ url: scratch.url, dataDir: '', poolMax: 2 });
  await runMigrations(direct);
  await direct.close();
  const target = new URL(scratch.url);
  proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
  database = await openDatabase({ url: proxy.urlFor(scratch.url), dataDir: '', poolMax: 3 });
  const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent', RATE_LIMIT_MAX: '100000', MAX_EVENT_LOOP_DELAY_MS: '0', X402_ENABLED: 'true', MICRO_FEES_DEFERRED: 'false' });
  app = await buildApp({ config, database, logger: false, chainRpcUrl: chain.rpcUrl });
  baseUrl = await app.listen({ host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  await app?.close();
  await database?.close().catch(() => undefined);
  await proxy?.close();
  await scratch?.drop();
  await chain?.stop();
});

describe('a paid call while the database is unreachable', () => {
  it('answers 503 before any settlement; the payer keeps its money; paid and served once the database is back', async () => {
    const payer = privateKeyToAccount(generatePrivateKey());
    await mintUsdc(chain, payer.address, 10_000n);
    const pay = wrapFetchWithPayment(fetch, x402ClientFor(payer));

    await proxy.cut();
    const res = await pay(`${baseUrl}/v1/agents?query=writing`);
    expect(res.status).toBe(503);
    const body = (await res.json()) as { error: { code: string; retryable: boolean } };
    expect(body.error).toMatchObject({ code: 'service_unavailable', retryable: true });
    expect(res.headers.get('retry-after')).toBeTruthy();
    expect(await usdcBalance(chain.rpcUrl, payer.address)).toBe(10_000n);

    await proxy.restore();
    let served: Response | undefined;
    for (let i = 0; i < 20 && served?.status !== 200; i++) {
      served = await pay(`${baseUrl}/v1/agents?query=writing`);
      if (served.status !== 200) await new Promise((r) => setTimeout(r, 200));
    }
    expect(served!.status).toBe(200);
    expect(await usdcBalance(chain.rpcUrl, payer.address)).toBe(9_000n);
  }, 60_000);
});
