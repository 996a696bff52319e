import { sql } from 'drizzle-orm';
import {
  bigint,
  bigserial,
  check,
  customType,
  type AnyPgColumn,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  smallint,
  text,
  timestamp,
  uniqueIndex,
} from 'drizzle-orm/pg-core';

/** Postgres full-text vector; written only by the database (generated column). */
const tsvector = customType<{ data: string }>({ dataType: () => 'tsvector' });

const money = (name: string) => bigint(name, { mode: 'bigint' });
const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });

export const agents = pgTable(
  'agents',
  {
    id: text('id').primaryKey(),
    ownerAddress: text('owner_address').notNull(),
    payoutAddress: text('payout_address').notNull(),
    name: text('name').notNull(),
    description: text('description').notNull().default(''),
    capabilities: text('capabilities').array().notNull().default(sql`'{}'::text[]`),
    /** name + description + capabilities, kept by the agents service; feeds search_vector. */
    searchText: text('search_text').notNull().default(''),
    searchVector: tsvector('search_vector')
      .notNull()
      .generatedAlwaysAs(sql`to_tsvector('english', search_text)`),
    baseRate: money('base_rate').notNull(),
    pricingUnit: text('pricing_unit').notNull().default('per-task'),
    availability: text('availability').notNull().default('online'),
    runtime: jsonb('runtime').$type<Record<string, unknown>>().notNull().default({}),
    ratingSum: bigint('rating_sum', { mode: 'number' }).notNull().default(0),
    ratingCount: integer('rating_count').notNull().default(0),
    tasksCompleted: integer('tasks_completed').notNull().default(0),
    responseTimeTotalSeconds: bigint('response_time_total_seconds', { mode: 'number' }).notNull().default(0),
    createdAt: ts('created_at').notNull(),
    updatedAt: ts('updated_at').notNull(),
  },
  (t) => [
    index('agents_search_vector_idx').using('gin', t.searchVector),
    index('agents_capabilities_idx').using('gin', t.capabilities),
    index('agents_owner_idx').on(t.ownerAddress),
    index('agents_online_rate_idx').on(t.baseRate).where(sql`availability = 'online'`),
    check('agents_base_rate_nonneg', sql`${t.baseRate} >= 0`),
    check('agents_availability_chk', sql`${t.availability} in ('online','offline')`),
  ],
);

/**
 * A batch: many tasks created and funded by one payment (owned by `batches/`). Its status is
 * derived from its tasks on read; the row holds what the client chose and what was paid.
 */
export const batches = pgTable(
  'batches',
  {
    id: text('id').primaryKey(),
    payerAddress: text('payer_address').notNull(),
    /** fail_fast: a failed item stops every item not yet started; continue: the rest run on. */
    policy: text('policy').notNull(),
    maxConcurrency: integer('max_concurrency').notNull(),
    maxSpend: money('max_spend'),
    itemCount: integer('item_count').notNull(),
    escrowTotal: money('escrow_total').notNull(),
    fee: money('fee').notNull(),
    paymentId: text('payment_id'),
    fundTxHash: text('fund_tx_hash'),
    cancelledAt: ts('cancelled_at'),
    /** Where the batch's one terminal event is POSTed (signed) once every item has ended; null: none. */
    callbackUrl: text('callback_url'),
    /**
     * Children hired by a hosted agent with delegate_task: the task whose escrow pays them (their
     * escrows are carved from it, no payment). Null for a batch a client paid for.
     */
    parentTaskId: text('parent_task_id').references((): AnyPgColumn => tasks.id),
    /** Which delegate_task call of the parent's runs hired them (its ordinal and the items' hash): a rerun making the same call gets them back. */
    delegationKey: text('delegation_key'),
    createdAt: ts('created_at').notNull(),
  },
  (t) => [
    index('batches_payer_idx').on(t.payerAddress, t.createdAt),
    uniqueIndex('batches_delegation_uq').on(t.parentTaskId, t.delegationKey).where(sql`parent_task_id is not null`),
    check('batches_policy_chk', sql`${t.policy} in ('fail_fast','continue')`),
    check('batches_concurrency_pos', sql`${t.maxConcurrency} > 0`),
  ],
);

export type BatchRow = typeof batches.$inferSelect;

export const tasks = pgTable(
  'tasks',
  {
    id: text('id').primaryKey(),
    agentId: text('agent_id')
      .notNull()
      .references(() => agents.id),
    payerAddress: text('payer_address').notNull(),
    description: text('description').notNull(),
    requirements: jsonb('requirements').$type<unknown>(),
    budgetAmount: money('budget_amount').notNull(),
    currency: text('currency').notNull(),
    chain: text('chain').notNull(),
    callbackUrl: text('callback_url'),
    timeoutSeconds: integer('timeout_seconds').notNull(),
    status: text('status').notNull(),
    escrowStatus: text('escrow_status').notNull(),
    escrowAddress: text('escrow_address').notNull(),
    fundedAmount: money('funded_amount'),
    fundTxHash: text('fund_tx_hash'),
    expiresAt: ts('expires_at').notNull(),
    fundedAt: ts('funded_at'),
    startedAt: ts('started_at'),
    deadlineAt: ts('deadline_at'),
    finishedAt: ts('finished_at'),
    progressPercent: smallint('progress_percent').notNull().default(0),
    intermediateResult: jsonb('intermediate_result').$type<unknown>(),
    estimatedCompletion: ts('estimated_completion'),
    result: jsonb('result').$type<unknown>(),
    resultHash: text('result_hash'),
    failureReason: text('failure_reason'),
    cancelReason: text('cancel_reason'),
    cancellationFee: money('cancellation_fee'),
    refundAmount: money('refund_amount'),
    refundStatus: text('refund_status'),
    refundTxHash: text('refund_tx_hash'),
    /** The batch this task is an item of (null: a task hired on its own). */
    batchId: text('batch_id').references(() => batches.id),
    /** Its position in the batch request (results come back in this order). */
    batchIndex: integer('batch_index'),
    /** Tasks of the same batch whose results this one needs first. */
    dependsOn: jsonb('depends_on').$type<string[]>(),
    /** What the client allowed a hosted agent on this task: `{toolsets?, max_iterations?}` (narrows the owner's settings). */
    runLimits: jsonb('run_limits').$type<{ toolsets?: string[]; max_iterations?: number }>(),
    /** A child hired by a hosted agent (delegate_task): the task whose escrow its own was carved from. */
    parentTaskId: text('parent_task_id').references((): AnyPgColumn => tasks.id),
    /** 0: hired by a client; 1: a child of a task at depth 0 (a child never delegates: depth limit 2). */
    delegationDepth: smallint('delegation_depth').notNull().default(0),
    createdAt: ts('created_at').notNull(),
    updatedAt: ts('updated_at').notNull(),
  },
  (t) => [
    index('tasks_batch_idx').on(t.batchId, t.batchIndex).where(sql`batch_id is not null`),
    index('tasks_parent_idx').on(t.parentTaskId).where(sql`parent_task_id is not null`),
    check('tasks_delegation_depth_chk', sql`${t.delegationDepth} >= 0 and (${t.delegationDepth} = 0) = (${t.parentTaskId} is null)`),
    index('tasks_running_deadline_idx').on(t.deadlineAt).where(sql`status = 'in_progress'`),
    index('tasks_payer_idx').on(t.payerAddress, t.createdAt),
    index('tasks_agent_idx').on(t.agentId, t.createdAt),
    index('tasks_unfunded_expiry_idx').on(t.expiresAt).where(sql`status = 'created'`),
    index('tasks_funded_idx').on(t.fundedAt).where(sql`status = 'funded'`),
    check('tasks_budget_pos', sql`${t.budgetAmount} > 0`),
    check('tasks_progress_range', sql`${t.progressPercent} between 0 and 100`),
    check(
      'tasks_status_chk',
      sql`${t.status} in ('created','funded','in_progress','completed','failed','cancelled','disputed','expired')`,
    ),
    check(
      'tasks_escrow_status_chk',
      sql`${t.escrowStatus} in ('none','held','released','refunded','partially_refunded','frozen')`,
    ),
  ],
);

/**
 * The dispatcher's queue: one job per funded task, owned by `dispatcher/jobs.ts` (the only writer).
 * Re-exported from schema.ts.
 */

export const dispatchStates = ['waiting', 'queued', 'running', 'awaiting_delivery', 'stuck', 'done'] as const;
export type DispatchState = (typeof dispatchStates)[number];

export const dispatchJobs = pgTable(
  'dispatch_jobs',
  {
    taskId: text('task_id')
      .primaryKey()
      .references(() => tasks.id, { onDelete: 'cascade' }),
    agentId: text('agent_id').notNull(),
    /**
     * waiting (a batch item whose predecessors are not done), queued (due at next_at), running
     * (leased), awaiting_delivery (async agent), stuck (for an operator), done.
     */
    state: text('state').$type<DispatchState>().notNull(),
    /** The task's batch: its max_concurrency bounds the batch's live runs across workers. */
    batchId: text('batch_id'),
    /** Tasks that must end before this one is queued (a batch's depends_on). */
    dependsOn: jsonb('depends_on').$type<string[]>(),
    /** Runs the agent was given; a run lost to a dying worker is not one of them. */
    attempts: integer('attempts').notNull().default(0),
    /** Runs lost because their worker stopped (crash or lease lost), bounded apart from attempts. */
    lostRuns: integer('lost_runs').notNull().default(0),
    nextAt: ts('next_at').notNull(),
    leaseOwner: text('lease_owner'),
    /** On the database's clock (queue/index.ts). */
    leaseExpiresAt: ts('lease_expires_at'),
    lastError: text('last_error'),
    /** When the agent accepted or answered the brief. */
    notifiedAt: ts('notified_at'),
    createdAt: ts('created_at').notNull(),
    updatedAt: ts('updated_at').notNull(),
  },
  (t) => [
    index('dispatch_jobs_due_idx').on(t.nextAt).where(sql`state = 'queued'`),
    index('dispatch_jobs_lease_idx').on(t.leaseExpiresAt).where(sql`state = 'running'`),
    index('dispatch_jobs_agent_running_idx').on(t.agentId).where(sql`state = 'running'`),
    index('dispatch_jobs_batch_idx').on(t.batchId, t.state).where(sql`batch_id is not null`),
    check('dispatch_jobs_state_chk', sql`${t.state} in ('waiting','queued','running','awaiting_delivery','stuck','done')`),
    check('dispatch_jobs_counts_nonneg', sql`${t.attempts} >= 0 and ${t.lostRuns} >= 0`),
  ],
);

export type DispatchJobRow = typeof dispatchJobs.$inferSelect;

/** Append-only trail of every task transition. */
export const taskEvents = pgTable(
  'task_events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    taskId: text('task_id')
      .notNull()
      .references(() => tasks.id),
    fromStatus: text('from_status'),
    toStatus: text('to_status').notNull(),
    escrowStatus: text('escrow_status').notNull(),
    actor: text('actor').notNull(),
    detail: jsonb('detail').$type<Record<string, unknown>>(),
    at: ts('at').notNull(),
  },
  (t) => [index('task_events_task_idx').on(t.taskId, t.id)],
);

export const disputes = pgTable(
  'disputes',
  {
    id: text('id').primaryKey(),
    taskId: text('task_id')
      .notNull()
      .references(() => tasks.id),
    openedBy: text('opened_by').notNull(),
    reason: text('reason').notNull(),
    evidence: jsonb('evidence').$type<string[]>().notNull().default([]),
    status: text('status').notNull(),
    previousStatus: text('previous_status').notNull(),
    submittedAt: ts('submitted_at').notNull(),
    expectedResolutionAt: ts('expected_resolution_at').notNull(),
    resolvedAt: ts('resolved_at'),
  },
  (t) => [uniqueIndex('disputes_task_uq').on(t.taskId)],
);

export const ratings = pgTable(
  'ratings',
  {
    id: text('id').primaryKey(),
    agentId: text('agent_id')
      .notNull()
      .references(() => agents.id),
    taskId: text('task_id')
      .notNull()
      .references(() => tasks.id),
    raterAddress: text('rater_address').notNull(),
    rating: smallint('rating').notNull(),
    comment: text('comment'),
    createdAt: ts('created_at').notNull(),
  },
  (t) => [
    uniqueIndex('ratings_task_uq').on(t.taskId),
    index('ratings_agent_recent_idx').on(t.agentId, t.createdAt),
    check('ratings_range', sql`${t.rating} between 1 and 5`),
  ],
);

/** Sign-in nonces already used (replay protection for wallet-signed requests). */
export const authNonces = pgTable(
  'auth_nonces',
  {
    address: text('address').notNull(),
    nonce: text('nonce').notNull(),
    expiresAt: ts('expires_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.address, t.nonce] }), index('auth_nonces_expiry_idx').on(t.expiresAt)],
);

/** Stored first responses of POSTs sent with an Idempotency-Key. */
export const idempotencyKeys = pgTable(
  'idempotency_keys',
  {
    scope: text('scope').notNull(),
    key: text('key').notNull(),
    method: text('method').notNull(),
    path: text('path').notNull(),
    requestHash: text('request_hash').notNull(),
    state: text('state').notNull(),
    responseStatus: integer('response_status'),
    responseBody: text('response_body'),
    responseContentType: text('response_content_type'),
    lockedUntil: ts('locked_until').notNull(),
    createdAt: ts('created_at').notNull(),
    expiresAt: ts('expires_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.scope, t.key] }), index('idempotency_expiry_idx').on(t.expiresAt)],
);

export type AgentRow = typeof agents.$inferSelect;
export type TaskRow = typeof tasks.$inferSelect;
export type DisputeRow = typeof disputes.$inferSelect;
export type RatingRow = typeof ratings.$inferSelect;

/**
 * Every x402 payment, from the moment its authorization is verified. Its lifecycle (owned by
 * `payments/lifecycle.ts`): verified → settling → booked | refunded | failed. A payment is
 * written before the chain is touched, so a crash at any point leaves a row the recovery sweep
 * finds and resolves (booked payments are receipts).
 */
export const payments = pgTable(
  'payments',
  {
    id: text('id').primaryKey(),
    payerAddress: text('payer_address').notNull(),
    payTo: text('pay_to').notNull(),
    amount: money('amount').notNull(),
    asset: text('asset').notNull(),
    network: text('network').notNull(),
    /**
     * EIP-3009 authorization nonce (bytes32 hex): one settlement per authorization. A voucher of a
     * batch-settlement channel: keccak256(channel id, cumulative amount), one charge per voucher.
     */
    authorizationNonce: text('authorization_nonce').notNull(),
    /** A payment made over a batch-settlement channel: its channel (payments/channels/). */
    channelId: text('channel_id'),
    /**
     * verified (claimed, nothing sent) → settling (sent or about to be) → booked | refunded | failed;
     * a micro-fee: verified → deferred (served, owed: settled later in a batch) → booked | defaulted
     * (its authorization failed at settlement: the payer is refused until it pays) → repaid.
     */
    status: text('status').notNull(),
    txHash: text('tx_hash'),
    /** `METHOD /route/pattern` that was paid for. */
    endpoint: text('endpoint').notNull(),
    kind: text('kind').notNull(),
    /** What the payment buys: the route's price name (create_task, fund_task, task_status, …). */
    purpose: text('purpose').notNull().default(''),
    taskId: text('task_id'),
    /** SHA-256 of the PAYMENT-SIGNATURE header: an idempotent retry carrying it again is recognised. */
    headerHash: text('header_hash'),
    /** The verified payment payload and its requirements: what the recovery sweep settles with. */
    payload: jsonb('payload').$type<{ payload: unknown; requirements: unknown }>(),
    /** The authorization's validBefore: after it, an unsent authorization can never move money. */
    validBefore: ts('valid_before'),
    /** Who holds the payment while it is verified or settling, and until when (database clock). */
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: ts('lease_expires_at'),
    failureReason: text('failure_reason'),
    createdAt: ts('created_at').notNull(),
    settledAt: ts('settled_at'),
    updatedAt: ts('updated_at'),
  },
  (t) => [
    /**
     * One live payment per authorization. A failed one never moved money and frees it; so does a
     * refunded channel voucher (its charge was taken back: the channel's client signs the same
     * cumulative amount again).
     */
    uniqueIndex('payments_authorization_uq')
      .on(t.network, t.asset, t.payerAddress, t.authorizationNonce)
      .where(sql`status <> 'failed' and (channel_id is null or status <> 'refunded')`),
    /** A channel's payments still unresolved: the channel settler leaves their channels unclaimed until they are. */
    index('payments_channel_unresolved_idx').on(t.channelId).where(sql`channel_id is not null and status in ('verified','settling')`),
    index('payments_payer_idx').on(t.payerAddress, t.createdAt),
    index('payments_task_idx').on(t.taskId),
    index('payments_header_idx').on(t.headerHash),
    index('payments_unresolved_idx').on(t.leaseExpiresAt).where(sql`status in ('verified','settling')`),
    /** A payer's unsettled micro-fees and arrears (its exposure, read on every deferred payment). */
    index('payments_payer_owed_idx').on(t.payerAddress, t.status).where(sql`status in ('deferred','defaulted')`),
    /** Deferred micro-fees in the order the batch settler takes them (the soonest to expire first). */
    index('payments_deferred_idx').on(t.validBefore).where(sql`status = 'deferred'`),
    /** One paid write per task at a time: a second funding (or cancel, dispute, rating) is refused before money moves. */
    uniqueIndex('payments_task_write_uq')
      .on(t.taskId)
      .where(sql`status in ('verified','settling') and purpose in ('fund_task','cancel_task','dispute_task','rate_agent')`),
    check('payments_kind_chk', sql`${t.kind} in ('call_fee','escrow_funding')`),
    check('payments_status_chk', sql`${t.status} in ('verified','settling','booked','refunded','failed','deferred','defaulted','repaid')`),
    check('payments_amount_pos', sql`${t.amount} > 0`),
  ],
);

/**
 * Double-entry ledger: every movement is a set of rows sharing `movement_id` whose amounts sum
 * to zero. Accounts are names (`external`, `escrow:<task>`, `treasury:…`, `payout_pending`).
 */
export const ledgerEntries = pgTable(
  'ledger_entries',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    movementId: text('movement_id').notNull(),
    kind: text('kind').notNull(),
    account: text('account').notNull(),
    amount: money('amount').notNull(),
    taskId: text('task_id'),
    paymentId: text('payment_id'),
    transferId: text('transfer_id'),
    createdAt: ts('created_at').notNull(),
  },
  (t) => [
    index('ledger_movement_idx').on(t.movementId),
    index('ledger_account_idx').on(t.account),
    index('ledger_task_idx').on(t.taskId),
  ],
);

/**
 * Outbox of chain transfers from the escrow wallet (releases and refunds). Written in the same
 * transaction as the state change that decides them; a settlement worker signs, sends and
 * confirms them. The signed transaction and its hash are stored before it is broadcast, so a
 * crash at any point resumes by re-broadcasting the same bytes: never a second payment.
 */
export const chainTransfers = pgTable(
  'chain_transfers',
  {
    id: text('id').primaryKey(),
    kind: text('kind').notNull(),
    /**
     * Why this transfer is owed, unique: `task:<id>:release`, `task:<id>:refund` (the task's
     * decisions) or `payment:<id>:refund` (a payment whose effect did not happen). A task may owe
     * several refunds, one per cause; planning the same cause twice writes nothing.
     */
    cause: text('cause').notNull(),
    taskId: text('task_id'),
    paymentId: text('payment_id'),
    fromAddress: text('from_address').notNull(),
    toAddress: text('to_address').notNull(),
    amount: money('amount').notNull(),
    status: text('status').notNull(),
    nonce: bigint('nonce', { mode: 'number' }),
    rawTx: text('raw_tx'),
    txHash: text('tx_hash'),
    blockNumber: bigint('block_number', { mode: 'number' }),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: ts('next_attempt_at').notNull(),
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: ts('lease_expires_at'),
    lastError: text('last_error'),
    createdAt: ts('created_at').notNull(),
    updatedAt: ts('updated_at').notNull(),
    confirmedAt: ts('confirmed_at'),
  },
  (t) => [
    uniqueIndex('chain_transfers_cause_uq').on(t.cause),
    index('chain_transfers_task_idx').on(t.taskId),
    index('chain_transfers_due_idx').on(t.nextAttemptAt).where(sql`status in ('pending','signed','sent')`),
    check('chain_transfers_status_chk', sql`${t.status} in ('pending','signed','sent','confirmed','failed')`),
    check('chain_transfers_amount_pos', sql`${t.amount} > 0`),
  ],
);

/** Next nonce per sending wallet, allocated in the transaction that stores the signed transfer. */
export const chainNonces = pgTable('chain_nonces', {
  address: text('address').primaryKey(),
  nextNonce: bigint('next_nonce', { mode: 'number' }).notNull(),
});

export type PaymentRow = typeof payments.$inferSelect;
export type LedgerEntryRow = typeof ledgerEntries.$inferSelect;
export type ChainTransferRow = typeof chainTransfers.$inferSelect;

export * from './callback-schema.js';
export * from './session-schema.js';
export * from './limits-schema.js';

// ── x402 batch-settlement channels ───────────────────────────────────────────

/**
 * The server side of the x402 `batch-settlement` scheme: one row per payment channel, the record
 * the stock `BatchSettlementEvmScheme` keeps through its `ChannelStorage` (payments/channels/storage.ts
 * is the only writer). `channel` is that record as JSON, exactly as the package's own storages
 * serialise it (amounts are decimal strings of atomic units, timestamps are ms numbers); `payer` and
 * `receiver` are copied from its channel config (lowercase) for listing. A row whose `channel` is
 * null is the lock placeholder an update inserts for a channel not stored yet: it is never
 * committed (the same transaction fills or deletes it).
 */
export const paymentChannels = pgTable(
  'payment_channels',
  {
    /** bytes32 channel id, lowercase `0x…` (64 hex digits). */
    channelId: text('channel_id').primaryKey(),
    channel: jsonb('channel').$type<import('@x402/evm/batch-settlement/server').Channel>(),
    payer: text('payer'),
    receiver: text('receiver'),
    updatedAt: ts('updated_at').notNull().default(sql`now()`),
  },
  (t) => [
    index('payment_channels_receiver_idx').on(t.receiver),
    index('payment_channels_payer_idx').on(t.payer),
    check('payment_channels_id_chk', sql`${t.channelId} ~ '^0x[0-9a-f]{64}$'`),
    check('payment_channels_placeholder_chk', sql`(${t.channel} is null) = (${t.payer} is null) and (${t.channel} is null) = (${t.receiver} is null)`),
  ],
);

export type PaymentChannelRow = typeof paymentChannels.$inferSelect;
