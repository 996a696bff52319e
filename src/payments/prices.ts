import type { Config } from '../config.js';

/** Every priced operation and its configured price (atomic USDC). `fund` adds the escrow amount. */
export const priceNames = [
  'search_agents',
  'get_agent',
  'rate_agent',
  'create_task',
  'fund_task',
  'task_status',
  'task_result',
  'cancel_task',
  'dispute_task',
  'claim_task',
  'task_events',
  'create_batch',
  'batch_status',
  'cancel_batch',
  'batch_events',
] as const;
/** An operation with a configured price (GET /v1/network lists them). */
export type FixedPriceName = (typeof priceNames)[number];
/** Every priced operation: the fixed ones, and paying one's arrears (priced at what is owed). */
export type PriceName = FixedPriceName | 'pay_arrears';

export type PriceBook = Record<FixedPriceName, bigint>;

export function priceBook(config: Config): PriceBook {
  return {
    search_agents: config.PRICE_SEARCH_AGENTS,
    get_agent: config.PRICE_GET_AGENT,
    rate_agent: config.PRICE_RATE_AGENT,
    create_task: config.PRICE_CREATE_TASK,
    fund_task: config.PRICE_FUND_FEE,
    task_status: config.PRICE_TASK_STATUS,
    task_result: config.PRICE_TASK_RESULT,
    cancel_task: config.PRICE_CANCEL_TASK,
    dispute_task: config.PRICE_DISPUTE_TASK,
    claim_task: config.PRICE_CLAIM_TASK,
    task_events: config.PRICE_TASK_EVENTS,
    create_batch: config.PRICE_BATCH_FEE,
    batch_status: config.PRICE_TASK_STATUS,
    cancel_batch: config.PRICE_CANCEL_TASK,
    batch_events: config.PRICE_TASK_EVENTS,
  };
}

/** What a funding costs: the escrow amount the request asks to lock plus the funding fee. */
export function fundingPrice(prices: PriceBook, escrowAmount: bigint): bigint {
  return escrowAmount + prices.fund_task;
}

/** "0.001 USDC" for documentation. */
export function formatUsdc(atomic: bigint): string {
  const whole = atomic / 1_000_000n;
  const frac = (atomic % 1_000_000n).toString().padStart(6, '0').replace(/0+$/, '');
  return `${whole}${frac ? `.${frac}` : ''} USDC`;
}
