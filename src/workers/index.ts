import type { FastifyInstance } from 'fastify';
import { allowPrivateUrls } from '../config.js';
import { CallbackSender } from '../callbacks/sender.js';
import { createDispatcher } from '../dispatcher/index.js';
import { runMaintenance, startMaintenance } from '../maintenance.js';
import { PaymentRecovery } from '../payments/recovery.js';
import { Loop } from './loop.js';

export interface WorkerOptions {
  /** The origin agents call back when the configuration cannot tell (PORT=0: known after listen). */
  publicBaseUrl?: string;
  dispatchMs?: number;
  settlementMs?: number;
  callbacksMs?: number;
  maintenanceMs?: number;
  recoveryMs?: number;
}

/**
 * The background work of the worker role, on the app's database and configuration: the
 * dispatcher, the settlement worker and the payment recovery sweep (when money can move), the
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
    await Promise.all(settlement.map((worker) => worker.stop()));
    await stopMaintenance();
  };
}
