import type { ErrorCode } from '../errors.js';

/**
 * Whose fault a failed settlement is. The facilitator re-verifies an authorization before it
 * sends it, and names the payer's own faults (signature, amount, balance, validity window,
 * replay, wrong network or token). Anything else (a reverted or unsent transaction, a nonce or gas
 * problem, an unreachable node) happened on the service's side: the payer is not to blame and
 * must not be told its payment was invalid.
 */
const PAYER_FAULTS: ReadonlyArray<[RegExp, ErrorCode]> = [
  // A channel voucher refused at its charge (the channel is busy, its state moved, the voucher is
  // off): refused before anything was charged.
  [/batch_settlement_evm_(channel_busy|charge_exceeds_signed_cumulative|missing_channel|cumulative_|voucher_signature|channel_id|deposit_below)/, 'payment_invalid'],
  [/insufficient/, 'insufficient_funds'],
  [/nonce_already_used|nonce.*(used|already)/, 'payment_replayed'],
  [/value_mismatch|authorization_value|amount|no matching|value/, 'amount_mismatch'],
  [/signature|valid_before|valid_after|recipient_mismatch|network_mismatch|scheme|token_name|token_version|unsupported_payload|simulation_failed/, 'payment_invalid'],
];

export type SettlementFault = { by: 'payer'; code: ErrorCode } | { by: 'service'; code: 'service_unavailable' };

/**
 * Only a reason code of the facilitator's (`invalid_exact_evm_…`, `insufficient_funds`) can name a
 * payer's fault; free text is an exception from the node or the wallet ("insufficient funds for
 * gas" is the operator wallet's, not the payer's).
 */
export function settlementFault(reason: string | undefined): SettlementFault {
  const r = (reason ?? '').toLowerCase();
  if (/^[a-z0-9_]+$/.test(r)) {
    for (const [pattern, code] of PAYER_FAULTS) if (pattern.test(r)) return { by: 'payer', code };
  }
  return { by: 'service', code: 'service_unavailable' };
}

/** What `judgeSettlement` may ask about the failed payment. */
export interface SettlementProbe {
  /** Whether the payment's EIP-3009 authorization is used on chain (its money moved). */
  authorizationUsed(): Promise<boolean>;
  /** The facilitator's verification of the payment now: null when it passes, else its reason. */
  reverify(): Promise<string | null>;
}

/**
 * Whose fault a failed settlement is, asking the chain when the facilitator's reason does not say.
 * A reverted or unsent transaction may still be the payer's doing (its balance spent by a
 * concurrent payment): when the authorization did not move money and re-verifying it now names a
 * payer's fault, the payer is told (402). Money that moved, a probe that fails, or a payment that
 * still verifies: ours (503, the sweep resolves it).
 */
export async function judgeSettlement(reason: string, probe: SettlementProbe): Promise<SettlementFault> {
  const first = settlementFault(reason);
  if (first.by === 'payer') return first;
  try {
    if (await probe.authorizationUsed()) return first;
    const now = await probe.reverify();
    const fault = now === null ? null : settlementFault(now);
    if (fault?.by === 'payer' && fault.code !== 'payment_replayed') return fault;
  } catch {
    // the chain cannot be asked now: the sweep will
  }
  return first;
}

/** What the client is told when a settlement failed on our side. */
export const SERVICE_SETTLEMENT_MESSAGE =
  'The payment could not be settled because of a problem on our side. If any money moved it is refunded in full; retry with a new payment.';
