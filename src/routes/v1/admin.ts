import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError } from '../../errors.js';
import { resolveDispute } from '../../escrow/disputes.js';
import { transfersNeedingAttention } from '../../escrow/outbox.js';
import { getAddress } from 'viem';
import type { EscrowRuntime } from '../../escrow/runtime.js';
import { AtomicAmount, Timestamp, WalletAddress, errorResponses } from '../../http/schemas.js';
import { reconcile } from '../../ledger/reconcile.js';
import { channelsProbe } from '../../payments/channels/index.js';
import { chainTarget } from '../../chain/wallets.js';

const adminKey: { [scheme: string]: string[] }[] = [{ adminKey: [] }];

/** Leads every admin route's description in the OpenAPI document. */
const OPERATOR_ONLY =
  '**Operator only.** Exists only when the operator sets ADMIN_API_KEY (else 404) and takes that key as `x-admin-key`; not for clients.';

const Reconciliation = z
  .object({
    ok: z.boolean(),
    ledger: z.object({ ok: z.boolean(), total: AtomicAmount.or(z.string()), unbalanced_movements: z.array(z.string()) }),
    wallets: z.array(
      z.object({
        wallet: z.enum(['escrow', 'fee']),
        address: WalletAddress,
        on_chain: z.string(),
        ledger: z.string(),
        difference: z.string(),
        in_flight: z.string(),
        incoming: z.string().meta({ description: 'Micro-fees into this wallet settled by a sent batch, not yet booked' }),
      }),
    ),
    channels: z
      .object({
        channels: z.number().int(),
        deposits: z.string().meta({ description: 'USDC the channel contract holds in the stored channels paying the fee wallet' }),
        ledger: z.string().meta({ description: 'receivable:channel_fees: calls paid by vouchers, not yet paid into the fee wallet' }),
        on_chain: z.string().meta({ description: 'What the contract owes for them: charged and unclaimed, claimed and unsettled, settled and not yet booked' }),
        difference: z.string(),
        unbooked: z.string().meta({ description: 'Paid into the fee wallet by the contract, not yet booked by the channel settler' }),
      })
      .optional()
      .meta({ description: 'Batch-settlement channels (present when channels are on)' }),
  })
  .meta({
    id: 'Reconciliation',
    examples: [
      {
        ok: true,
        ledger: { ok: true, total: '0', unbalanced_movements: [] },
        wallets: [{ wallet: 'escrow', address: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8', on_chain: '1005000', ledger: '1005000', difference: '0', in_flight: '0', incoming: '0' }],
      },
    ],
  });

const ResolveBody = z
  .object({ payer_amount: AtomicAmount, agent_amount: AtomicAmount })
  .strict()
  .meta({ id: 'ResolveDispute', examples: [{ payer_amount: '600000', agent_amount: '400000' }] });

const Resolution = z
  .object({
    dispute_id: z.string(),
    task_id: z.string(),
    status: z.literal('resolved'),
    payer_amount: AtomicAmount,
    agent_amount: AtomicAmount,
    escrow_status: z.enum(['refunded', 'released', 'partially_refunded']),
    resolved_at: Timestamp,
  })
  .meta({
    id: 'DisputeResolution',
    examples: [
      {
        dispute_id: 'dispute_2j4k6l8z0x1c3v5b7n9m',
        task_id: 'task_7h2k9d0s1a3f5g6j8l4z',
        status: 'resolved',
        payer_amount: '600000',
        agent_amount: '400000',
        escrow_status: 'partially_refunded',
        resolved_at: '2026-11-23T10:00:00.000Z',
      },
    ],
  });

const Attention = z
  .object({
    stuck_tasks: z.array(z.object({ task_id: z.string(), status: z.string(), escrow_status: z.string(), reason: z.string().nullable(), updated_at: Timestamp })),
    transfers: z.array(
      z.object({
        transfer_id: z.string(),
        cause: z.string(),
        kind: z.string(),
        status: z.string(),
        from: WalletAddress,
        to: WalletAddress,
        amount: AtomicAmount,
        reason: z.string().nullable(),
        updated_at: Timestamp,
      }),
    ),
    unresolved_payments: z.array(
      z.object({ payment_id: z.string(), status: z.string(), purpose: z.string(), payer: WalletAddress, amount: AtomicAmount, created_at: Timestamp }),
    ),
  })
  .meta({
    id: 'Attention',
    description: 'Work that cannot proceed on its own and waits for an operator, each with its reason.',
    examples: [{ stuck_tasks: [], transfers: [], unresolved_payments: [] }],
  });

function keyDigest(key: string): Buffer {
  return createHash('sha256').update(key).digest();
}

/** Operator endpoints, behind ADMIN_API_KEY (`x-admin-key`); absent key = not registered (404). */
export async function adminRoutes(fastify: FastifyInstance, opts: { apiKey: string; escrow: EscrowRuntime | undefined }): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const expected = keyDigest(opts.apiKey);
  const requireAdmin = async (request: FastifyRequest) => {
    const given = request.headers['x-admin-key'];
    if (typeof given !== 'string' || !timingSafeEqual(keyDigest(given), expected)) {
      throw new AppError('forbidden', 'A valid x-admin-key header is required');
    }
  };

  app.get('/v1/admin/reconciliation', {
    preHandler: requireAdmin,
    schema: {
      operationId: 'reconcile',
      tags: ['admin'],
      summary: 'Check the ledger and reconcile it with the chain',
      description: `${OPERATOR_ONLY} Every movement sums to zero; the escrow and fee wallets hold on chain what their ledger accounts say.`,
      security: adminKey,
      response: { 200: Reconciliation, ...errorResponses(403, 503) },
    },
    handler: async () => {
      if (!opts.escrow) throw new AppError('service_unavailable', 'No chain is configured');
      const channels = app.channels ? channelsProbe(app.channels, app.channels.contract, chainTarget(app.config).usdc) : undefined;
      const r = await reconcile(app.db, { escrow: opts.escrow.custody, feeWallet: opts.escrow.feeWallet, channels });
      return {
        ok: r.ok,
        ledger: { ok: r.ledger.ok, total: r.ledger.total.toString(), unbalanced_movements: r.ledger.unbalancedMovements },
        wallets: r.wallets.map((w) => ({
          wallet: w.wallet,
          address: w.address,
          on_chain: w.onChain.toString(),
          ledger: w.ledger.toString(),
          difference: w.difference.toString(),
          in_flight: w.inFlight.toString(),
          incoming: w.incoming.toString(),
        })),
        ...(r.channels
          ? {
              channels: {
                channels: r.channels.channels,
                deposits: r.channels.deposits.toString(),
                ledger: r.channels.ledger.toString(),
                on_chain: r.channels.onChain.toString(),
                difference: r.channels.difference.toString(),
                unbooked: r.channels.unbooked.toString(),
              },
            }
          : {}),
      };
    },
  });

  app.get('/v1/admin/attention', {
    preHandler: requireAdmin,
    schema: {
      operationId: 'listAttention',
      tags: ['admin'],
      summary: 'What needs an operator',
      description:
        `${OPERATOR_ONLY} ` +
        'Tasks whose outcome could not be recorded (parked, never dispatched again), payouts the settlement worker gave up ' +
        'on or that stay unsent past two leases (e.g. a refund from a wallet whose key is not configured), and payments the ' +
        'recovery sweep has not resolved after two leases.',
      security: adminKey,
      response: { 200: Attention, ...errorResponses(403) },
    },
    handler: async () => {
      const [stuck, transfers, unresolved] = await Promise.all([
        app.services.taskLifecycle.stuck(),
        transfersNeedingAttention(app.db, app.clock.now(), 2 * app.config.SETTLEMENT_LEASE_MS),
        app.services.paymentLifecycle.unresolved(app.db, 2 * app.services.paymentLifecycle.leaseMs),
      ]);
      return {
        stuck_tasks: stuck.map(({ task: t, reason }) => ({
          task_id: t.id,
          status: t.status,
          escrow_status: t.escrowStatus,
          reason,
          updated_at: t.updatedAt.toISOString(),
        })),
        transfers: transfers.map((x) => ({
          transfer_id: x.id,
          cause: x.cause,
          kind: x.kind,
          status: x.status,
          from: getAddress(x.fromAddress),
          to: getAddress(x.toAddress),
          amount: x.amount.toString(),
          reason: x.lastError,
          updated_at: x.updatedAt.toISOString(),
        })),
        unresolved_payments: unresolved.map((p) => ({
          payment_id: p.id,
          status: p.status,
          purpose: p.purpose,
          payer: getAddress(p.payerAddress),
          amount: p.amount.toString(),
          created_at: p.createdAt.toISOString(),
        })),
      };
    },
  });

  app.post('/v1/admin/disputes/:id/resolve', {
    preHandler: requireAdmin,
    schema: {
      operationId: 'resolveDispute',
      tags: ['admin'],
      summary: 'Resolve a dispute with a split of the frozen escrow',
      description: `${OPERATOR_ONLY} The payer share is refunded, the agent share released (minus the platform fee); the shares must add up to the escrow.`,
      security: adminKey,
      params: z.object({ id: z.string().regex(/^dispute_[0-9a-z]{20}$/) }),
      body: ResolveBody,
      response: { 200: Resolution, ...errorResponses(403, 404, 409, 422) },
    },
    handler: async (req) =>
      resolveDispute(app.db, app.clock, {
        disputeId: req.params.id,
        payerAmount: BigInt(req.body.payer_amount),
        agentAmount: BigInt(req.body.agent_amount),
        platformFeeBps: app.config.PLATFORM_FEE_BPS,
      }),
  });
}
