import { errorCodes, type ErrorCode } from '../errors.js';

/**
 * The error examples of the OpenAPI document: for every operation and every error status it
 * documents, the codes that operation can answer with that status (first = the most likely).
 * The document shows one named example per code (openapi.ts); test/openapi.test.ts checks that
 * every documented error status of every operation has examples here, each a code of that status.
 */

type CodesByStatus = Partial<Record<number, readonly ErrorCode[]>>;

/** What any operation may answer, unless the operation says otherwise below. */
const common: CodesByStatus = {
  400: ['validation_error'],
  402: ['payment_required', 'payment_invalid', 'insufficient_funds', 'payment_in_arrears'],
  401: ['authentication_required', 'invalid_signature', 'signature_expired', 'session_expired'],
  403: ['forbidden'],
  413: ['payload_too_large'],
  429: ['rate_limited'],
  500: ['internal_error'],
  503: ['service_unavailable'],
};

/** A POST with an Idempotency-Key: a retry while the first runs, the same key with another body. */
const idempotent: CodesByStatus = { 409: ['idempotency_in_progress'], 422: ['idempotency_key_reused'] };

/** Per operationId: the codes that differ from `common`. */
export const operationErrorCodes: Record<string, CodesByStatus> = {
  searchAgents: {},
  getAgent: { 404: ['agent_not_found'] },
  registerAgent: { ...idempotent, 401: ['authentication_required', 'invalid_signature', 'signature_replayed'] },
  getOwnedAgent: { 403: ['forbidden'], 404: ['agent_not_found'] },
  updateAgent: { 403: ['forbidden'], 404: ['agent_not_found'] },
  rateAgent: { 404: ['task_not_found', 'agent_not_found'], 409: ['already_rated', 'invalid_state', 'idempotency_in_progress'] },
  createTask: {
    404: ['agent_not_found'],
    409: ['agent_unavailable', 'idempotency_in_progress'],
    422: ['budget_too_low', 'spending_limit_exceeded', 'idempotency_key_reused'],
  },
  fundTask: {
    402: ['payment_required', 'insufficient_funds', 'payment_invalid', 'payment_replayed', 'payment_in_arrears'],
    404: ['task_not_found'],
    409: ['invalid_state', 'state_conflict', 'idempotency_in_progress'],
    410: ['task_expired'],
    422: ['amount_mismatch', 'spending_limit_exceeded', 'idempotency_key_reused'],
  },
  reportProgress: { 404: ['task_not_found'], 409: ['invalid_state', 'state_conflict'] },
  deliverResult: { 404: ['task_not_found'], 409: ['state_conflict', 'idempotency_in_progress'] },
  claimPayment: { 404: ['task_not_found'], 409: ['result_hash_mismatch', 'not_ready', 'idempotency_in_progress'] },
  getTaskStatus: { 404: ['task_not_found'] },
  streamTaskEvents: { 404: ['task_not_found'] },
  getTaskResult: { 404: ['task_not_found'], 409: ['not_ready'] },
  cancelTask: { 404: ['task_not_found'], 409: ['work_in_progress', 'task_completed', 'invalid_state', 'state_conflict'] },
  disputeTask: { 404: ['task_not_found'], 409: ['already_disputed', 'invalid_state', 'state_conflict'] },
  createBatch: {
    404: ['agent_not_found'],
    409: ['agent_unavailable', 'no_matching_agent', 'idempotency_in_progress'],
    422: ['spend_limit_exceeded', 'budget_too_low', 'spending_limit_exceeded', 'idempotency_key_reused'],
  },
  getBatch: { 404: ['batch_not_found'] },
  streamBatchEvents: { 404: ['batch_not_found'] },
  cancelBatch: { 404: ['batch_not_found'], 409: ['invalid_state', 'work_in_progress', 'idempotency_in_progress'] },
  listReceipts: {},
  payArrears: { 409: ['invalid_state'], 422: ['amount_mismatch'] },
  getLimits: {},
  putLimits: { 401: ['authentication_required', 'invalid_signature', 'signature_replayed'] },
  startSession: { 401: ['signature_replayed', 'authentication_required', 'invalid_signature', 'signature_expired'] },
  endSession: { 401: ['authentication_required', 'invalid_signature'] },
  health: {},
  ready: {},
  devFaucet: {},
  reconcile: { 403: ['forbidden'], 503: ['service_unavailable'] },
  listAttention: { 403: ['forbidden'] },
  resolveDispute: { 403: ['forbidden'], 404: ['not_found'], 409: ['invalid_state'], 422: ['amount_mismatch'] },
};

/** The codes documented for one operation's status (empty: none known, which the test refuses). */
export function errorCodesFor(operationId: string | undefined, status: number): readonly ErrorCode[] {
  const own = operationId ? operationErrorCodes[operationId]?.[status] : undefined;
  return own ?? common[status] ?? [];
}

/** What a client reads for each code: a message like the service's, and the field at fault when there is one. */
const samples: Partial<Record<ErrorCode, { message: string; param?: string; details?: Record<string, unknown> }>> = {
  agent_unavailable: { message: 'Agent agent_0k3v9x2m1q8w7e6r5t4y is offline and takes no new tasks', param: 'agent_id' },
  budget_too_low: { message: 'The budget is below the agent’s base rate of 500000 atomic USDC', param: 'budget.amount' },
  rate_limited: { message: 'Too many requests: at most 300 per 1 minute; retry later' },
  insufficient_funds: { message: 'Payment refused: insufficient_funds' },
  amount_mismatch: { message: 'Funding must be at least the budget of 1000000 atomic USDC', param: 'amount' },
  task_expired: { message: 'Task task_7h2k9d0s1a3f5g6j8l4z was not funded before 2026-11-22T12:00:00.000Z' },
  task_completed: { message: 'Task task_7h2k9d0s1a3f5g6j8l4z is completed and cannot be cancelled' },
  work_in_progress: {
    message:
      'Work on task task_7h2k9d0s1a3f5g6j8l4z has started: cancelling refunds 600000 and pays the agent a cancellation fee of ' +
      '400000 (atomic USDC). Send accept_partial_refund: true to cancel on these terms.',
    param: 'accept_partial_refund',
    details: { refund_amount: '600000', cancellation_fee: '400000' },
  },
  payment_required: {
    message: 'This endpoint is paid with x402: retry with a PAYMENT-SIGNATURE for one of the accepted payment requirements',
    details: {
      x402: {
        x402Version: 2,
        error: 'Payment required',
        accepts: [{ scheme: 'exact', network: 'eip155:8453', amount: '1000', asset: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913', payTo: '0x90F79bf6EB2c4f870365E785982E1f101E93b906', maxTimeoutSeconds: 120 }],
      },
    },
  },
  payment_invalid: { message: 'Payment refused: invalid_exact_evm_payload_signature' },
  payment_replayed: { message: 'This payment authorization has already been used; sign a new one' },
  payment_in_arrears: {
    message:
      '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65 owes 0.002 USDC in fees whose payment authorizations failed at settlement; ' +
      'pay them with POST /v1/payers/0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65/arrears, then retry',
    details: { payer: '0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65', owed: '2000', pay_at: '/v1/payers/0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65/arrears' },
  },
  validation_error: { message: 'body.pricing.base_rate: must be a non-negative integer string in atomic units', param: 'pricing.base_rate' },
  payload_too_large: { message: 'Request body is larger than 1048576 bytes' },
  authentication_required: {
    message: 'This endpoint needs a wallet: send "Authorization: SIWE <base64url(message)>.<signature>" or a session token, "Authorization: Bearer <token>"',
    param: 'Authorization',
  },
  invalid_signature: { message: 'The signature does not match the sign-in message address', param: 'Authorization' },
  signature_expired: { message: 'The sign-in message has expired', param: 'Authorization' },
  signature_replayed: { message: 'This sign-in message was already used', param: 'Authorization' },
  session_expired: { message: 'The session token expired at 2026-11-21T12:15:00.000Z; sign in again (POST /v1/auth/session)', param: 'Authorization' },
  session_revoked: { message: 'This session token was revoked; sign in again (POST /v1/auth/session)', param: 'Authorization' },
  forbidden: { message: 'Task task_7h2k9d0s1a3f5g6j8l4z belongs to another wallet' },
  not_found: { message: 'Dispute dispute_2j4k6l8z0x1c3v5b7n9m does not exist' },
  agent_not_found: { message: 'Agent agent_0k3v9x2m1q8w7e6r5t4y does not exist' },
  task_not_found: { message: 'Task task_7h2k9d0s1a3f5g6j8l4z does not exist' },
  batch_not_found: { message: 'Batch batch_5t2k8d0s1a3f5g6j8l4q does not exist' },
  spend_limit_exceeded: { message: 'The batch costs 3010000 atomic USDC (escrows + fee), above its max_spend of 3000000', param: 'max_spend' },
  spending_limit_exceeded: {
    message: 'Your spending limit max_per_task is 2000000 atomic USDC per task; this asks 5000000 for one task. A wallet changes its limits with PUT /v1/limits.',
    details: { cap: 'max_per_task', limit: '2000000', requested: '5000000', remaining: '2000000' },
  },
  no_matching_agent: { message: 'No online agent matches "copywriting" within a budget of 100000 atomic USDC', param: 'items.1.agent_query' },
  invalid_state: { message: 'Task task_7h2k9d0s1a3f5g6j8l4z is cancelled and cannot be changed' },
  state_conflict: { message: 'Task task_7h2k9d0s1a3f5g6j8l4z changed while this request ran; read it again' },
  not_ready: { message: 'Task task_7h2k9d0s1a3f5g6j8l4z is in_progress; the result exists once it is completed' },
  already_rated: { message: 'Task task_7h2k9d0s1a3f5g6j8l4z has already been rated' },
  already_disputed: { message: 'Task task_7h2k9d0s1a3f5g6j8l4z is already under dispute' },
  result_hash_mismatch: { message: 'result_hash is not the SHA-256 of the delivered result', param: 'result_hash' },
  idempotency_key_reused: { message: 'This Idempotency-Key was used with a different request; use a new key for a new request', param: 'Idempotency-Key' },
  idempotency_in_progress: { message: 'The first request with this Idempotency-Key is still running; retry shortly' },
  service_unavailable: { message: 'The database is unavailable; retry shortly' },
  internal_error: { message: 'Internal error' },
};

/** The error body the service sends for `code` (request_id made up). */
export function errorExample(code: ErrorCode): { error: Record<string, unknown> } {
  const spec = errorCodes[code];
  const sample = samples[code] ?? { message: code.replace(/_/g, ' ') };
  return {
    error: {
      type: spec.type,
      code,
      message: sample.message,
      ...(sample.param ? { param: sample.param } : {}),
      request_id: 'req_3k2m9x0c1v8b7n6q5w4e',
      retryable: spec.retryable,
      ...(sample.details ? { details: sample.details } : {}),
    },
  };
}
