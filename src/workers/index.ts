import type { FastifyInstance } from 'fastify';
import { allowPrivateUrls } from '../config.js';
import { CallbackSender } from '../callbacks/sender.js';
import { createDispatcher } from '../dispatcher/index.js';
import { runMaintenance, startMaintenance } from '../maintenance.js';
import { PaymentRecovery } from '../payments/recovery.js';
import { MicroFeeSettler } from '../payments/micro-fee-settler.js';
import { ChannelSettler, type ChannelSettlerOptions } from '../payments/channels/settler.js';
import { chainTarget, resolveWallets } from '../chain/wallets.js';
import { Loop } from './loop.js';

export interface WorkerOptions {
  /** The origin agents call back when the configuration cannot tell (PORT=0: known after listen). */
  publicBaseUrl?: string;
  dispatchMs?: number;
  settlementMs?: number;
  callbacksMs?: number;
  maintenanceMs?: number;
  recoveryMs?: number;
  microFeesMs?: number;
  channelsMs?: number;
}

/**
 * The background work of the worker role, on the app's database and configuration: the
 * dispatcher, the settlement worker, the payment recovery sweep and the micro-fee batch settler (when money can move), the
 * callback sender and maintenance.
 * Returns the function that stops them all (the dispatcher hands unfinished runs back).
 */
export function startWorkers(app: FastifyInstance, intervals: WorkerOptions = {}): () => Promise<void> {
  const { config } = app;
  const stopMaintenance = startMaintenance(
    () => runMaintenance(app.db, app.clock, app.services),
    intervals.maintenanceMs ?? config.MAINTENANCE_INTERVAL_MS,
    app.log,
  );
  const settlement = config.X402_ENABLED && app.escrow ? app.escrow.createWorkers(app.db, app.clock, app.log) : [];
  for (const worker of settlement) worker.start(intervals.settlementMs ?? config.SETTLEMENT_INTERVAL_MS);
  const recovery =
    config.X402_ENABLED && app.escrow
      ? new PaymentRecovery({ lifecycle: app.services.paymentLifecycle, chain: app.escrow.usdc, facilitator: app.facilitator, log: app.log })
      : undefined;
  const recoveryLoop = recovery ? new Loop(() => recovery.runOnce(), (err) => app.log.error({ err }, 'payment recovery failed')) : undefined;
  recoveryLoop?.start(intervals.recoveryMs ?? config.PAYMENT_RECOVERY_INTERVAL_MS);
  const micro = config.X402_ENABLED && app.escrow ? app.microFees : undefined;
  const microSettler = micro
    ? new MicroFeeSettler({
        db: app.db,
        lifecycle: app.services.paymentLifecycle,
        operator: micro.operator,
        usdc: chainTarget(config).usdc,
        feeAddress: resolveWallets(config).feeAddress,
        chain: app.escrow!.usdc,
        batchSize: config.MICRO_FEE_BATCH_SIZE,
        leaseMs: config.PAYMENT_LEASE_MS,
        log: app.log,
        onSettled: (payers) => payers.forEach((p) => micro.balances.forget(chainTarget(config).usdc, p)),
      })
    : undefined;
  const microLoop = microSettler ? new Loop(() => microSettler.drain(), (err) => app.log.error({ err }, 'micro-fee settlement failed')) : undefined;
  microLoop?.start(intervals.microFeesMs ?? config.MICRO_FEE_SETTLE_INTERVAL_MS);
  const channelSettler = config.X402_ENABLED ? createChannelSettler(app) : undefined;
  const channelLoop = channelSettler ? new Loop(() => channelSettler.runOnce(), (err) => app.log.error({ err }, 'channel settlement failed')) : undefined;
  channelLoop?.start(intervals.channelsMs ?? config.CHANNEL_SETTLE_INTERVAL_MS);
  const dispatcher = createDispatcher(app, intervals.publicBaseUrl ? { publicBaseUrl: intervals.publicBaseUrl } : {});
  dispatcher.start(intervals.dispatchMs ?? config.DISPATCH_INTERVAL_MS);
  const callbacks = new CallbackSender({
    db: app.db,
    clock: app.clock,
    signingSecret: config.CALLBACK_SIGNING_SECRET,
    ssrf: { allowPrivate: allowPrivateUrls(config) },
    log: app.log,
  });
  callbacks.start(intervals.callbacksMs ?? 1000);
  return async () => {
    await dispatcher.stop(config.SHUTDOWN_GRACE_MS / 2);
    await callbacks.stop();
    await recoveryLoop?.stop();
    await microLoop?.stop();
    await channelLoop?.stop();
    await Promise.all(settlement.map((worker) => worker.stop()));
    await stopMaintenance();
  };
}

/**
 * The channel settler of the app's batch-settlement channels (payments/channels/settler.ts), on its
 * configured policy unless `policy` says otherwise; undefined when channels are off.
 */
export function createChannelSettler(
  app: FastifyInstance,
  policy: Partial<Pick<ChannelSettlerOptions, 'claimThreshold' | 'claimIntervalMs' | 'idleRefundMs'>> = {},
): ChannelSettler | undefined {
  const { config, channels } = app;
  if (!channels || !app.facilitator) return undefined;
  return new ChannelSettler({
    db: app.db,
    clock: app.clock,
    channels,
    lifecycle: app.services.paymentLifecycle,
    facilitator: app.facilitator,
    network: chainTarget(config).network,
    token: chainTarget(config).usdc,
    contract: channels.contract,
    claimThreshold: config.CHANNEL_CLAIM_THRESHOLD,
    claimIntervalMs: config.CHANNEL_CLAIM_INTERVAL_SECONDS * 1000,
    idleRefundMs: config.CHANNEL_IDLE_REFUND_SECONDS * 1000,
    log: app.log,
    ...policy,
  });
}
