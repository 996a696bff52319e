/**
 * The one error type of the service. Every failure that reaches a client is an AppError
 * (or is turned into one by the error handler) and is rendered as
 * `{error: {type, code, message, param?, request_id, retryable}}`.
 */
export const errorTypes = [
  'invalid_request_error',
  'authentication_error',
  'permission_error',
  'payment_error',
  'not_found_error',
  'conflict_error',
  'rate_limit_error',
  'api_error',
] as const;
export type ErrorType = (typeof errorTypes)[number];

interface CodeSpec {
  status: number;
  type: ErrorType;
  retryable: boolean;
  /** Sent as `Retry-After` (seconds) unless the response already carries one. */
  retryAfterSeconds?: number;
}

/** Stable codes: the API contract's codes first, then the service's own. */
export const errorCodes = {
  // contract codes
  agent_unavailable: { status: 409, type: 'conflict_error', retryable: false },
  budget_too_low: { status: 422, type: 'invalid_request_error', retryable: false },
  rate_limited: { status: 429, type: 'rate_limit_error', retryable: true },
  insufficient_funds: { status: 402, type: 'payment_error', retryable: false },
  amount_mismatch: { status: 422, type: 'invalid_request_error', retryable: false },
  task_expired: { status: 410, type: 'conflict_error', retryable: false },
  task_completed: { status: 409, type: 'conflict_error', retryable: false },
  work_in_progress: { status: 409, type: 'conflict_error', retryable: false },
  // payments (x402)
  payment_required: { status: 402, type: 'payment_error', retryable: true },
  payment_invalid: { status: 402, type: 'payment_error', retryable: false },
  payment_replayed: { status: 402, type: 'payment_error', retryable: false },
  payment_failed: { status: 402, type: 'payment_error', retryable: true },
  /** A micro-fee this payer was served on credit failed at settlement: refused until it pays (POST /v1/payers/{address}/arrears). */
  payment_in_arrears: { status: 402, type: 'payment_error', retryable: false },
  // request shape
  validation_error: { status: 400, type: 'invalid_request_error', retryable: false },
  unsupported_currency: { status: 422, type: 'invalid_request_error', retryable: false },
  payload_too_large: { status: 413, type: 'invalid_request_error', retryable: false },
  unsupported_media_type: { status: 415, type: 'invalid_request_error', retryable: false },
  // identity
  authentication_required: { status: 401, type: 'authentication_error', retryable: false },
  invalid_signature: { status: 401, type: 'authentication_error', retryable: false },
  signature_expired: { status: 401, type: 'authentication_error', retryable: false },
  signature_replayed: { status: 401, type: 'authentication_error', retryable: false },
  // session tokens (auth/session.ts): sign in again
  session_expired: { status: 401, type: 'authentication_error', retryable: false },
  session_revoked: { status: 401, type: 'authentication_error', retryable: false },
  forbidden: { status: 403, type: 'permission_error', retryable: false },
  // resources and state
  not_found: { status: 404, type: 'not_found_error', retryable: false },
  agent_not_found: { status: 404, type: 'not_found_error', retryable: false },
  task_not_found: { status: 404, type: 'not_found_error', retryable: false },
  batch_not_found: { status: 404, type: 'not_found_error', retryable: false },
  /** A batch whose escrows and fee exceed its own max_spend (refused before any payment). */
  spend_limit_exceeded: { status: 422, type: 'invalid_request_error', retryable: false },
  /** Over a cap the paying wallet set on itself (limits/: max_per_task, max_per_batch, max_per_day); refused before payment. */
  spending_limit_exceeded: { status: 422, type: 'invalid_request_error', retryable: false },
  /** No online agent matches an item's agent_query within its budget. */
  no_matching_agent: { status: 409, type: 'conflict_error', retryable: false },
  agent_exists: { status: 409, type: 'conflict_error', retryable: false },
  invalid_state: { status: 409, type: 'conflict_error', retryable: false },
  state_conflict: { status: 409, type: 'conflict_error', retryable: true },
  not_ready: { status: 409, type: 'conflict_error', retryable: true },
  already_rated: { status: 409, type: 'conflict_error', retryable: false },
  already_disputed: { status: 409, type: 'conflict_error', retryable: false },
  result_hash_mismatch: { status: 409, type: 'conflict_error', retryable: false },
  // idempotency
  idempotency_key_reused: { status: 422, type: 'invalid_request_error', retryable: false },
  idempotency_in_progress: { status: 409, type: 'conflict_error', retryable: true },
  // server
  // load shedding (under-pressure) and an unreachable database (refused, dropped, terminated, PGlite closed)
  service_unavailable: { status: 503, type: 'api_error', retryable: true, retryAfterSeconds: 5 },
  internal_error: { status: 500, type: 'api_error', retryable: true },
} as const satisfies Record<string, CodeSpec>;

export type ErrorCode = keyof typeof errorCodes;

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly type: ErrorType;
  readonly retryable: boolean;
  /** Seconds a client should wait before retrying (the `Retry-After` header), when the code has one. */
  readonly retryAfterSeconds: number | undefined;
  readonly param: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { param?: string; details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    const spec: CodeSpec = errorCodes[code];
    this.name = 'AppError';
    this.code = code;
    this.status = spec.status;
    this.type = spec.type;
    this.retryable = spec.retryable;
    this.retryAfterSeconds = spec.retryAfterSeconds;
    this.param = opts.param;
    this.details = opts.details;
  }
}

export function isAppError(err: unknown): err is AppError {
  return err instanceof AppError;
}
