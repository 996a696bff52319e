/**
 * Ledger accounts are plain strings. Each names a pot of money and says which wallet holds it:
 *
 * | account                   | meaning                                              | held in        |
 * |---------------------------|------------------------------------------------------|----------------|
 * | `external`                | the world outside the service (payers, agents)       | no wallet      |
 * | `escrow:<taskId>`         | money held for one task                              | escrow wallet  |
 * | `treasury:call_fees`      | per-call x402 fees                                   | fee wallet     |
 * | `treasury:fund_fees`      | fees taken when an escrow is funded                  | escrow wallet  |
 * | `treasury:platform_fees`  | the platform's cut of a release                      | escrow wallet  |
 * | `payout_pending`          | decided payouts not yet confirmed on chain           | escrow wallet  |
 * | `payout_pending:fee`      | refunds of call fees decided, not yet confirmed      | fee wallet     |
 * | `receivable:call_fees`    | micro-fees served and owed: their authorizations are settled later in a batch | no wallet yet |
 * | `receivable:channel_fees` | calls paid by batch-settlement vouchers: charged on their channels, not yet settled to the fee wallet | the channel contract |
 *
 * Sign convention: a positive amount adds to an account, a negative one takes from it. Money
 * that enters the service makes `external` negative, so the sum of every account is always 0.
 */

export const EXTERNAL = 'external';
export const PAYOUT_PENDING = 'payout_pending';
export const TREASURY_CALL_FEES = 'treasury:call_fees';
export const TREASURY_FUND_FEES = 'treasury:fund_fees';
export const TREASURY_PLATFORM_FEES = 'treasury:platform_fees';
export const ESCROW_PREFIX = 'escrow:';
/** Refunds of call fees, sent from the fee wallet that received them. */
export const PAYOUT_PENDING_FEE = 'payout_pending:fee';
/** Micro-fees whose calls were served and whose authorizations await a batch settlement (payments/micro-fees.ts). */
export const RECEIVABLE_CALL_FEES = 'receivable:call_fees';
/** Calls paid over batch-settlement channels: charged, awaiting the channel settler's claim and settle (payments/channels/). */
export const RECEIVABLE_CHANNEL_FEES = 'receivable:channel_fees';

/** The on-chain wallets the ledger's accounts live in. */
export const wallets = ['escrow', 'fee'] as const;
export type Wallet = (typeof wallets)[number];

/** Fixed (non per-task) accounts and their wallets; `null` = outside every wallet. */
const FIXED_ACCOUNTS: Readonly<Record<string, Wallet | null>> = {
  [EXTERNAL]: null,
  [PAYOUT_PENDING]: 'escrow',
  [TREASURY_CALL_FEES]: 'fee',
  [TREASURY_FUND_FEES]: 'escrow',
  [TREASURY_PLATFORM_FEES]: 'escrow',
  [PAYOUT_PENDING_FEE]: 'fee',
  [RECEIVABLE_CALL_FEES]: null,
  [RECEIVABLE_CHANNEL_FEES]: null,
};

/** Task ids are prefixed random strings: letters, digits, `_` and `-` only. */
const TASK_ID_PATTERN = /^[A-Za-z0-9_-]{1,100}$/;

/** The account holding a task's escrow. */
export function escrowAccount(taskId: string): string {
  if (!TASK_ID_PATTERN.test(taskId)) throw new Error(`ledger: invalid task id ${JSON.stringify(taskId)}`);
  return `${ESCROW_PREFIX}${taskId}`;
}

export function isEscrowAccount(account: string): boolean {
  return account.startsWith(ESCROW_PREFIX) && TASK_ID_PATTERN.test(account.slice(ESCROW_PREFIX.length));
}

export function isKnownAccount(account: string): boolean {
  return Object.hasOwn(FIXED_ACCOUNTS, account) || isEscrowAccount(account);
}

/** The wallet that holds `account` (`null` for `external`); throws on an unknown name. */
export function walletOf(account: string): Wallet | null {
  if (isEscrowAccount(account)) return 'escrow';
  if (Object.hasOwn(FIXED_ACCOUNTS, account)) return FIXED_ACCOUNTS[account]!;
  throw new Error(`ledger: unknown account ${JSON.stringify(account)}`);
}

/** Fixed accounts held in `wallet` (the escrow wallet also holds every `escrow:*`). */
export function fixedAccountsOf(wallet: Wallet): string[] {
  return Object.entries(FIXED_ACCOUNTS)
    .filter(([, w]) => w === wallet)
    .map(([account]) => account);
}
