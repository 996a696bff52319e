import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { x402Facilitator } from '@x402/core/facilitator';
import { x402HTTPResourceServer, x402ResourceServer, type FacilitatorClient, type HTTPAdapter, type HTTPRequestContext } from '@x402/core/server';
import type { SupportedResponse } from '@x402/core/types';
import { toFacilitatorEvmSigner } from '@x402/evm';
import { BatchSettlementEvmScheme as BatchSettlementFacilitatorScheme } from '@x402/evm/batch-settlement/facilitator';
import { BatchSettlementEvmScheme as BatchSettlementServerScheme, type ChannelStorage } from '@x402/evm/batch-settlement/server';
import { privateKeyToAccount } from 'viem/accounts';
import { BASE_NETWORK, type DevAccount } from '../../src/chain/constants.js';
import { chainClients, WITHDRAW_DELAY } from './batch-settlement-helpers.js';

/**
 * The stock x402 batch-settlement stack of @x402/evm around a channel storage, for tests on the dev
 * chain: an in-process facilitator (the stock facilitator scheme, sending from one wallet and
 * signing claims and refunds as the receiver authorizer), and a tiny node:http resource server that
 * sells one route, GET /poll, through x402HTTPResourceServer with the stock server scheme, as a
 * framework middleware would run it. (The same pieces as batch-settlement-e2e.test.ts, whose
 * in-memory storage this lets a test swap for another.)
 */

/** The in-process facilitator: the stock batch-settlement scheme with `operator`'s wallet. */
export function inProcessFacilitator(rpcUrl: string, operator: DevAccount, receiverAuthorizer: DevAccount): FacilitatorClient {
  const wallet = chainClients(rpcUrl).walletFor(operator);
  const signer = toFacilitatorEvmSigner({
    address: wallet.account.address,
    readContract: (args) => wallet.readContract(args as Parameters<typeof wallet.readContract>[0]),
    verifyTypedData: (args) => wallet.verifyTypedData(args as Parameters<typeof wallet.verifyTypedData>[0]),
    writeContract: (args) => wallet.writeContract(args as Parameters<typeof wallet.writeContract>[0]),
    sendTransaction: (args) => wallet.sendTransaction(args),
    waitForTransactionReceipt: (args) => wallet.waitForTransactionReceipt({ ...args, pollingInterval: 20 }),
    getCode: (args) => wallet.getCode(args),
  });
  const facilitator = new x402Facilitator();
  facilitator.register(BASE_NETWORK, new BatchSettlementFacilitatorScheme(signer, privateKeyToAccount(receiverAuthorizer.privateKey)));
  return {
    verify: (payload, requirements) => facilitator.verify(payload, requirements),
    settle: (payload, requirements) => facilitator.settle(payload, requirements),
    getSupported: async () => facilitator.getSupported() as unknown as SupportedResponse,
  };
}

/** x402's framework-neutral request view over a node:http request. */
export function adapterFor(req: IncomingMessage, url: URL): HTTPAdapter {
  const header = (name: string) => {
    const value = req.headers[name.toLowerCase()];
    return Array.isArray(value) ? value[0] : value;
  };
  return {
    getHeader: header,
    getMethod: () => req.method ?? 'GET',
    getPath: () => url.pathname,
    getUrl: () => url.toString(),
    getAcceptHeader: () => header('accept') ?? '',
    getUserAgent: () => header('user-agent') ?? '',
    getQueryParams: () => Object.fromEntries(url.searchParams),
    getQueryParam: (name) => url.searchParams.get(name) ?? undefined,
  };
}

export function reply(res: ServerResponse, status: number, headers: Record<string, string>, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(typeof body === 'string' ? body : JSON.stringify(body ?? {}));
}

export interface PaidRouteServer {
  /** The stock server scheme selling the route (its storage is the one passed in). */
  scheme: BatchSettlementServerScheme;
  facilitator: FacilitatorClient;
  /** http://127.0.0.1:<port>/poll */
  url: string;
  /** Requests served (paid and handled). */
  served(): number;
  close(): Promise<void>;
}

export interface PaidRouteOptions {
  rpcUrl: string;
  storage: ChannelStorage;
  receiver: DevAccount;
  operator: DevAccount;
  receiverAuthorizer: DevAccount;
  /** The route's price in USD, e.g. '$0.001'. */
  price: string;
  /** The route's `extra.minDeposit` hint in USD. */
  minDeposit: string;
}

/** One "API process": a resource server selling GET /poll with the stock batch-settlement server scheme on `storage`. */
export async function startPaidRoute(opts: PaidRouteOptions): Promise<PaidRouteServer> {
  const facilitator = inProcessFacilitator(opts.rpcUrl, opts.operator, opts.receiverAuthorizer);
  const scheme = new BatchSettlementServerScheme(opts.receiver.address, { storage: opts.storage, withdrawDelay: WITHDRAW_DELAY });
  const httpServer = new x402HTTPResourceServer(new x402ResourceServer(facilitator).register(BASE_NETWORK, scheme), {
    'GET /poll': {
      accepts: { scheme: 'batch-settlement', network: BASE_NETWORK, payTo: opts.receiver.address, price: opts.price, extra: { minDeposit: opts.minDeposit } },
      description: 'one status poll',
    },
  });
  await httpServer.initialize();
  let served = 0;
  const server: Server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      const paymentHeader = req.headers['payment-signature'];
      const context: HTTPRequestContext = {
        adapter: adapterFor(req, url),
        path: url.pathname,
        method: req.method ?? 'GET',
        ...(typeof paymentHeader === 'string' ? { paymentHeader } : {}),
      };
      const result = await httpServer.processHTTPRequest(context);
      if (result.type === 'payment-error') return reply(res, result.response.status, result.response.headers, result.response.body);
      const body = { status: 'in_progress', poll: served + 1 };
      if (result.type === 'no-payment-required') return reply(res, 200, {}, body);
      const settled = await httpServer.processSettlement(
        result.paymentPayload,
        result.paymentRequirements,
        result.declaredExtensions,
        { request: context, responseBody: Buffer.from(JSON.stringify(body)) },
        undefined,
        result.beforeHandlerSettlement,
      );
      if (!settled.success) return reply(res, settled.response.status, settled.response.headers, settled.response.body);
      served++;
      reply(res, 200, settled.headers, body);
    })().catch((error: unknown) => reply(res, 500, {}, { error: String(error) }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    scheme,
    facilitator,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/poll`,
    served: () => served,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
