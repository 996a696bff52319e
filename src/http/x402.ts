import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import {
  x402HTTPResourceServer,
  type HTTPAdapter,
  type HTTPRequestContext,
  type HTTPResponseInstructions,
  type x402ResourceServer,
} from '@x402/core/server';
import type { PaymentPayload, PaymentRequirements } from '@x402/core/types';
import { getAddress, type Address, type Hex } from 'viem';
import type { AuthorizationProbe } from '../payments/recovery.js';
import type { ChainTarget } from '../chain/wallets.js';
import { AppError, type ErrorCode } from '../errors.js';
import { createHash } from 'node:crypto';
import type { PaymentRow } from '../db/schema.js';
import { withTransaction } from '../db/client.js';
import type { PaymentLifecycle } from '../payments/lifecycle.js';
import { settlementFailed, type PaidCall, type SettleResult } from '../payments/paid-write.js';
import { judgeSettlement, settlementFault, type SettlementProbe } from '../payments/settlement-fault.js';
import { describeError } from '../net/redact.js';
import { replayStored, requestHash, storedResponse } from './idempotency.js';
import type { PriceBook, PriceName } from '../payments/prices.js';
import { errorBody } from './error-handler.js';
import { failpoint } from '../failpoints.js';
import type { MicroFees } from '../payments/micro-fees.js';
import { PaymentFenceError, paymentReleased } from '../payments/lifecycle.js';
import type { DbChannelStorage } from '../payments/channels/storage.js';
import { BATCH_SETTLEMENT_SCHEME, channelPaymentOf, staleClientReason, voucherNonce, type ChannelPayment } from '../payments/channels/vouchers.js';
import { decodePaymentSignatureHeader, encodePaymentRequiredHeader } from '@x402/core/http';

/**
 * x402 for Fastify, over `x402HTTPResourceServer` of @x402/core. A route opts in with
 * `config: { price: '<name>' }`. After validation the request must carry a PAYMENT-SIGNATURE
 * that the facilitator verifies (else 402 with the PAYMENT-REQUIRED challenge); the paying
 * wallet becomes `request.caller`; the payment is recorded `verified` (payments/lifecycle.ts),
 * so that its authorization serves one request.
 *
 * - A route that changes state (`config.paidWrite`) hands `paidCall(request, reply)` to
 *   `payThen` (payments/paid-write.ts): check, settle, then effect + booking in one transaction.
 * - A read is answered by its handler; below 400 the payment is then settled and booked before
 *   the answer leaves (PAYMENT-RESPONSE header). A settlement that fails answers 402; a booking
 *   that fails answers 503 and leaves the payment to the recovery sweep, which refunds it.
 * - A request that fails before settlement is never charged.
 * - A retry with the same Idempotency-Key and the same PAYMENT-SIGNATURE gets the stored answer.
 */
export interface X402Options {
  resourceServer: x402ResourceServer;
  target: ChainTarget;
  feeAddress: Address;
  prices: PriceBook;
  maxTimeoutSeconds: number;
  lifecycle: PaymentLifecycle;
  /** Reads authorizations on chain (absent without a chain: a failed settlement is then ours). */
  chain?: Pick<AuthorizationProbe, 'authorizationState'> | undefined;
  /** Micro-fees served before settlement (payments/micro-fees.ts); absent: every payment settles first. */
  microFees?: MicroFees | undefined;
  /**
   * Batch-settlement channels (payments/channels/): offered beside `exact` on every fixed-price
   * route, with the route's `extra.minDeposit` hint. Absent: `exact` only.
   */
  channels?: { storage: DbChannelStorage; minDeposit(price: bigint): bigint } | undefined;
  /** Dynamic terms of a route (funding: the escrow amount plus the fee, paid to the escrow wallet). */
  dynamic?: Partial<Record<PriceName, (request: FastifyRequest) => DynamicTerms | Promise<DynamicTerms>>>;
}

/** A route's price and payee decided per request. */
export interface DynamicTerms {
  amount: bigint;
  payTo: Address;
}

export interface VerifiedPayment {
  server: x402HTTPResourceServer;
  context: HTTPRequestContext;
  payload: PaymentPayload;
  requirements: PaymentRequirements;
  declaredExtensions: Record<string, unknown> | undefined;
  /** Asks the chain and the facilitator about this payment when its settlement failed. */
  probe: SettlementProbe;
  row: PaymentRow;
  /** A payment over a batch-settlement channel: what it is. */
  channel: ChannelPayment | undefined;
  /** Tells the payment's scheme the request failed before settlement (a channel frees its reservation). */
  cancel(): Promise<void>;
  /** The handler took the payment over (paidCall): onSend does not settle it. */
  handled: boolean;
  microFees: MicroFees | undefined;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    price?: PriceName;
    /** A request that resumes what it already paid for (an event stream): its payer, or null to pay as usual. */
    resume?: (request: FastifyRequest) => Address | null;
  }
  interface FastifyRequest {
    payment: VerifiedPayment | null;
  }
}

const PAYMENT_HEADER = 'payment-signature';

/** The x402 schemes the priced routes accept (their 402 challenges' `accepts`; GET /v1/network lists them). */
export const X402_SCHEMES = ['exact', BATCH_SETTLEMENT_SCHEME] as const;
export const X402_VERSION = 2;

function adapterFor(request: FastifyRequest): HTTPAdapter {
  const header = (name: string) => {
    const v = request.headers[name.toLowerCase()];
    return Array.isArray(v) ? v[0] : v;
  };
  return {
    getHeader: header,
    getMethod: () => request.method,
    getPath: () => request.url.split('?')[0] ?? '/',
    getUrl: () => `${request.protocol}://${request.host}${request.url}`,
    getAcceptHeader: () => header('accept') ?? '',
    getUserAgent: () => header('user-agent') ?? '',
    getQueryParams: () => (request.query ?? {}) as Record<string, string>,
    getBody: () => request.body,
  };
}

/** Why a payment was refused, from the facilitator's reason, as the API's codes. */
export function paymentErrorCode(reason: string | undefined): ErrorCode {
  const r = (reason ?? '').toLowerCase();
  if (!r || r === 'payment required') return 'payment_required';
  const fault = settlementFault(r);
  return fault.by === 'payer' ? fault.code : 'payment_invalid';
}

function decodeChallenge(headers: Record<string, string>): { error?: string; [k: string]: unknown } | undefined {
  const raw = Object.entries(headers).find(([k]) => k.toLowerCase() === 'payment-required')?.[1];
  if (!raw) return undefined;
  try {
    return JSON.parse(Buffer.from(raw, 'base64').toString('utf8'));
  } catch {
    return undefined;
  }
}

function replaceWithError(request: FastifyRequest, reply: FastifyReply, err: unknown): string {
  const appErr = err instanceof AppError ? err : new AppError('service_unavailable', 'The payment could not be processed; nothing was charged');
  reply.code(appErr.status).type('application/json; charset=utf-8');
  reply.removeHeader('payment-response');
  if (appErr.retryAfterSeconds) reply.header('retry-after', String(appErr.retryAfterSeconds));
  return JSON.stringify(errorBody(appErr, request.id));
}

function sendChallenge(request: FastifyRequest, reply: FastifyReply, response: HTTPResponseInstructions): FastifyReply {
  if (response.status < 400) {
    // The scheme answered the request itself (a channel's cooperative refund): its answer, as is.
    for (const [k, v] of Object.entries(response.headers)) reply.header(k, v);
    return reply.code(response.status).send(response.body ?? {});
  }
  const challenge = decodeChallenge(response.headers);
  const code = paymentErrorCode(challenge?.error);
  const message =
    code === 'payment_required'
      ? 'This endpoint is paid with x402: retry with a PAYMENT-SIGNATURE for one of the accepted payment requirements'
      : `Payment refused: ${challenge?.error ?? 'invalid payment'}`;
  const err = new AppError(code, message, { details: challenge ? { x402: challenge } : {} });
  for (const [k, v] of Object.entries(response.headers)) if (k.toLowerCase() !== 'content-type') reply.header(k, v);
  return reply.code(402).type('application/json; charset=utf-8').send(errorBody(err, request.id));
}

async function settleVerified(payment: VerifiedPayment, reply: FastifyReply): Promise<SettleResult> {
  const result = await payment.server
    .processSettlement(payment.payload, payment.requirements, payment.declaredExtensions, { request: payment.context })
    .catch((err: unknown) => ({ success: false as const, errorReason: err instanceof Error ? err.message : String(err), headers: {} }));
  if (result.success) {
    for (const [k, v] of Object.entries(result.headers)) reply.header(k, v);
    return { ok: true, txHash: result.transaction };
  }
  const reason = result.errorReason ?? 'settlement failed';
  const fault = await judgeSettlement(reason, payment.probe);
  if (fault.by === 'service') {
    reply.request.log.error(
      { payment: payment.row.id, authorization: payment.row.authorizationNonce, reason: describeError(reason) },
      'x402: settlement failed on our side; the payment goes to the recovery sweep',
    );
  } else {
    for (const [k, v] of Object.entries(result.headers)) reply.header(k, v);
  }
  return { ok: false, reason, fault };
}

/**
 * The request's payment for `payThen`, or null when x402 is off. The handler now owns the
 * payment: onSend will not settle it.
 */
export function paidCall(request: FastifyRequest, reply: FastifyReply): PaidCall | null {
  const payment = request.payment;
  if (!payment) return null;
  payment.handled = true;
  const micro = payment.microFees;
  return {
    payment: payment.row,
    owner: request.id,
    settle: () => settleVerified(payment, reply),
    defer: micro?.deferrable(payment.row) ? (tx) => micro.defer(tx, payment.row, request.id).then((d) => markDeferred(reply, d)) : undefined,
  };
}

/** A deferred payment's answer says so: it carries no settlement (PAYMENT-RESPONSE) yet. */
function markDeferred(reply: FastifyReply, deferred: boolean): boolean {
  if (deferred) reply.header('x-payment-settlement', 'deferred');
  return deferred;
}

function headerHash(header: string): string {
  return createHash('sha256').update(header).digest('hex');
}

function taskIdOf(request: FastifyRequest): string | undefined {
  const fromParams = (request.params as { id?: unknown } | undefined)?.id;
  if (typeof fromParams === 'string' && fromParams.startsWith('task_')) return fromParams;
  const fromBody = (request.body as { task_id?: unknown } | undefined)?.task_id;
  return typeof fromBody === 'string' && fromBody.startsWith('task_') ? fromBody : undefined;
}

function unixToDate(value: unknown): Date | null {
  const n = Number(value);
  return Number.isFinite(n) && n > 0 ? new Date(n * 1000) : null;
}

export const x402Plugin = fp(
  async (app: FastifyInstance, opts: X402Options) => {
    const servers = new Map<string, x402HTTPResourceServer>();
    // x402 hands dynamic price/payTo callbacks a copy of the context; its adapter leads back to the request.
    const requestsByAdapter = new WeakMap<HTTPAdapter, FastifyRequest>();
    const requestOf = (ctx: HTTPRequestContext): FastifyRequest => {
      const request = requestsByAdapter.get(ctx.adapter);
      if (!request) throw new Error('x402: no request for this payment context');
      return request;
    };
    const routeKey = (method: string, url: string) => `${method} ${url}`;
    app.decorateRequest('payment', null);

    app.addHook('onRoute', (route) => {
      const name = route.config?.price;
      if (!name) return;
      const methods = Array.isArray(route.method) ? route.method : [route.method];
      const dynamic = opts.dynamic?.[name];
      const price = (amount: bigint) => ({ asset: opts.target.usdc, amount: amount.toString(), extra: { ...opts.target.usdcDomain } });
      // x402 asks for the price and the payee separately: one answer per request.
      const termsOf = new WeakMap<FastifyRequest, Promise<DynamicTerms>>();
      const terms = (ctx: HTTPRequestContext): Promise<DynamicTerms> => {
        const request = requestOf(ctx);
        let answer = termsOf.get(request);
        if (!answer) termsOf.set(request, (answer = Promise.resolve(dynamic!(request))));
        return answer;
      };
      const fixed = name === 'pay_arrears' ? undefined : opts.prices[name];
      if (!dynamic && fixed === undefined) throw new Error(`x402: route ${route.url} has no price for ${name}`);
      const exact = {
        scheme: 'exact',
        network: opts.target.network,
        maxTimeoutSeconds: opts.maxTimeoutSeconds,
        payTo: dynamic ? async (ctx: HTTPRequestContext) => (await terms(ctx)).payTo : opts.feeAddress,
        price: dynamic ? async (ctx: HTTPRequestContext) => price((await terms(ctx)).amount) : price(fixed!),
      };
      // A channel pays fixed call prices into the fee wallet; funding (a dynamic price, into escrow) stays exact.
      const channel =
        opts.channels && !dynamic
          ? {
              scheme: BATCH_SETTLEMENT_SCHEME,
              network: opts.target.network,
              maxTimeoutSeconds: opts.maxTimeoutSeconds,
              payTo: opts.feeAddress,
              price: { ...price(fixed!), extra: { ...opts.target.usdcDomain, minDeposit: opts.channels.minDeposit(fixed!).toString() } },
            }
          : undefined;
      const server = new x402HTTPResourceServer(opts.resourceServer, {
        accepts: channel ? [exact, channel] : exact,
        description: route.schema?.summary ?? name,
        mimeType: 'application/json',
      });
      for (const m of methods) servers.set(routeKey(m, route.url), server);
    });

    app.addHook('onReady', async () => {
      for (const server of new Set(servers.values())) await server.initialize();
    });

    // After validation and the caller plugin: a malformed request is refused before any payment.
    app.addHook('preHandler', async (request, reply) => {
      const server = servers.get(routeKey(request.method, request.routeOptions.url ?? ''));
      if (!server) return;
      const resumedBy = request.routeOptions.config.resume?.(request);
      if (resumedBy) {
        request.caller = { address: resumedBy, via: 'resume' };
        return;
      }
      const adapter = adapterFor(request);
      requestsByAdapter.set(adapter, request);
      const context: HTTPRequestContext = {
        adapter,
        path: request.url.split('?')[0] ?? '/',
        method: request.method,
        paymentHeader: request.headers[PAYMENT_HEADER] as string | undefined,
      };
      const header = context.paymentHeader;
      if (header && request.method === 'POST' && request.headers['idempotency-key']) {
        const replay = await replayPaidRetry(request, reply, headerHash(header));
        if (replay) return replay;
      }
      const result = await server.processHTTPRequest(context);
      if (result.type === 'no-payment-required') return;
      if (result.type === 'payment-error') return sendChallenge(request, reply, await resyncStaleChannel(result.response, header));
      const channel = channelPaymentOf(result.paymentRequirements.scheme, result.paymentPayload.payload);
      failpoint('payment:after-verify', request.routeOptions.config.price); // a channel is reserved, nothing recorded
      const cancel = async () => {
        await result.cancellationDispatcher?.cancel({ reason: 'handler_failed' }).catch(() => undefined);
      };
      const authorization = channel
        ? { from: channel.payer, nonce: voucherNonce(channel.channelId, channel.maxClaimable), validBefore: undefined }
        : (result.paymentPayload.payload as { authorization?: { from?: string; nonce?: string; validBefore?: string } }).authorization;
      if (!authorization?.from || !authorization.nonce) {
        await cancel();
        throw new AppError('payment_invalid', 'The payment carries no EIP-3009 authorization');
      }
      const payer = getAddress(authorization.from);
      const { nonce, validBefore } = authorization;
      const payTo = getAddress(result.paymentRequirements.payTo);
      const recorded = () =>
        opts.lifecycle.record({
          payer,
          payTo,
          amount: BigInt(result.paymentRequirements.amount),
          asset: result.paymentRequirements.asset,
          network: result.paymentRequirements.network,
          authorizationNonce: nonce,
          endpoint: `${request.method} ${request.routeOptions.url}`,
          kind: payTo === getAddress(opts.feeAddress) ? 'call_fee' : 'escrow_funding',
          purpose: request.routeOptions.config.price!,
          taskId: taskIdOf(request),
          headerHash: headerHash(header!),
          payload: { payload: result.paymentPayload, requirements: result.paymentRequirements },
          validBefore: unixToDate(validBefore),
          channelId: channel?.channelId,
          owner: request.id,
        });
      let row: PaymentRow;
      try {
        await opts.microFees?.refuseArrears(payer, request.routeOptions.config.price!);
        if (channel) await refuseWhileUnresolved(reply, channel.channelId);
        row = await recorded();
      } catch (err) {
        await cancel();
        throw err;
      }
      request.caller = { address: payer, via: 'x402' };
      reply.header('x-payment-id', row.id); // the receipt's payment_id (GET /v1/receipts)
      request.payment = {
        server,
        context,
        payload: result.paymentPayload,
        requirements: result.paymentRequirements,
        declaredExtensions: result.declaredExtensions,
        probe: channel
          ? {
              // A channel payment "moved" when its voucher was charged; what else failed is left to the sweep.
              authorizationUsed: () => opts.channels!.storage.chargedThrough(channel.channelId, channel.maxClaimable),
              reverify: async () => null,
            }
          : {
              authorizationUsed: () => (opts.chain ? opts.chain.authorizationState(payer, nonce as Hex) : Promise.reject(new Error('no chain reader'))),
              reverify: async () => {
                const now = await opts.resourceServer.verifyPayment(result.paymentPayload, result.paymentRequirements);
                return now.isValid ? null : (now.invalidReason ?? 'invalid');
              },
            },
        row,
        channel,
        cancel,
        handled: false,
        microFees: opts.microFees,
      };
    });

    /**
     * A refused channel payment whose client holds a stale view of a channel the settler refunded
     * (payments/channels/vouchers.ts `staleClientReason`): the challenge's reason is replaced by one
     * the stock client recovers from. Anything else is answered as the scheme answered it.
     */
    async function resyncStaleChannel(response: HTTPResponseInstructions, header: string | undefined): Promise<HTTPResponseInstructions> {
      const key = Object.keys(response.headers).find((k) => k.toLowerCase() === 'payment-required');
      if (!opts.channels || !header || !key) return response;
      const challenge = decodeChallenge(response.headers);
      let paid: ChannelPayment | undefined;
      try {
        const payload = decodePaymentSignatureHeader(header);
        paid = channelPaymentOf(payload.accepted?.scheme, payload.payload);
      } catch {
        return response;
      }
      if (!paid || !challenge?.error) return response;
      const reason = staleClientReason(challenge.error, (await opts.channels.storage.get(paid.channelId)) !== undefined);
      if (!reason) return response;
      const rewritten = encodePaymentRequiredHeader({ ...(challenge as unknown as Parameters<typeof encodePaymentRequiredHeader>[0]), error: reason });
      return { ...response, headers: { ...response.headers, [key]: rewritten } };
    }

    /**
     * One unresolved payment per channel: an earlier call on it that did not answer (its process
     * died, or it is still running) is resolved first, by its request or by the recovery sweep, which
     * takes its charge back if it was made. Until then the channel takes no other payment (409,
     * retryable, `Retry-After` until that payment's lease ends); nothing is charged.
     */
    async function refuseWhileUnresolved(reply: FastifyReply, channelId: string): Promise<void> {
      const earlier = await opts.lifecycle.unresolvedOnChannel(channelId);
      if (!earlier) return;
      const seconds = Math.max(1, Math.ceil(((earlier.leaseExpiresAt?.getTime() ?? Date.now()) - Date.now()) / 1000) + 5);
      reply.header('retry-after', String(seconds));
      throw new AppError(
        'state_conflict',
        `An earlier call paid on this payment channel has not completed (${earlier.id}); it is being resolved, and its charge taken back if it was made. Nothing was charged; retry in ${seconds} s.`,
        { details: { channel_id: channelId, payment_id: earlier.id, retry_after_seconds: seconds } },
      );
    }

    /**
     * A retry with the same Idempotency-Key and the same PAYMENT-SIGNATURE: the authorization was
     * spent by the first attempt, so answer what the first attempt answered (or that it runs).
     */
    async function replayPaidRetry(request: FastifyRequest, reply: FastifyReply, hash: string): Promise<FastifyReply | undefined> {
      const prior = await opts.lifecycle.byHeaderHash(hash);
      if (!prior) return undefined;
      const key = String(request.headers['idempotency-key']);
      const stored = await storedResponse(app.db, prior.payerAddress, key);
      if (stored && stored.requestHash !== requestHash(request)) {
        throw new AppError('idempotency_key_reused', 'This Idempotency-Key was used with a different request; use a new key for a new request', {
          param: 'Idempotency-Key',
        });
      }
      if (stored?.state === 'completed' && stored.responseStatus !== null) {
        request.caller = { address: getAddress(prior.payerAddress), via: 'x402' };
        return replayStored(reply, stored);
      }
      if (stored || prior.status === 'verified' || prior.status === 'settling') {
        throw new AppError('idempotency_in_progress', 'The first request with this payment is still running; retry shortly');
      }
      return undefined; // no stored answer: the facilitator refuses the spent authorization as replayed
    }

    // Reads: settle and book after the handler succeeded; a failed request is never charged.
    app.addHook('onSend', async (request, reply, payload) => {
      const payment = request.payment;
      if (!payment) return payload;
      const replayed = reply.getHeader('idempotent-replayed') === 'true';
      if (reply.statusCode >= 400 || replayed) {
        // Nothing was settled. If the database cannot forget the payment now, the recovery sweep does.
        await payment.cancel();
        await opts.lifecycle.forget(payment.row.id, request.id).catch((err: unknown) => request.log.warn({ err, payment: payment.row.id }, 'payment not forgotten'));
        return payload;
      }
      if (payment.handled) return payload;
      payment.handled = true;
      const id = payment.row.id;
      const micro = opts.microFees;
      if (micro?.deferrable(payment.row)) {
        try {
          if (markDeferred(reply, await withTransaction(app.db, (tx) => micro.defer(tx, payment.row, request.id)))) return payload;
        } catch (err) {
          // Nothing was booked: the payment stays verified and the recovery sweep forgets it; nothing charged.
          return replaceWithError(
            request,
            reply,
            err instanceof PaymentFenceError ? paymentReleased(err) : err,
          );
        }
      }
      try {
        await opts.lifecycle.beginSettling(id, request.id);
      } catch (err) {
        return replaceWithError(request, reply, err);
      }
      const settled = await settleVerified(payment, reply);
      if (!settled.ok) return replaceWithError(request, reply, await settlementFailed(opts.lifecycle, id, request.id, settled));
      failpoint('payment:after-settle', payment.row.purpose);
      try {
        await withTransaction(app.db, (tx) => opts.lifecycle.book(tx, id, request.id, { txHash: settled.txHash }));
      } catch (err) {
        // The money moved but could not be recorded: do not serve; the recovery sweep refunds it.
        request.log.error({ err, payment: id, tx: settled.txHash }, 'payment settled on chain but not booked; left to the recovery sweep');
        return replaceWithError(
          request,
          reply,
          new AppError('service_unavailable', 'The payment could not be recorded; it will be refunded in full. Retry shortly.'),
        );
      }
      return payload;
    });
  },
  { name: 'x402', dependencies: ['wallet-caller'] },
);
