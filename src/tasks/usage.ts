import type { ResultContentT, UsageT } from './schemas.js';

/** What an agent reported with its result: tokens, and for a hosted agent its model calls and their cost. */
export function usageOf(result: ResultContentT | null): UsageT {
  const meta = (result?.metadata ?? {}) as Record<string, unknown>;
  const int = (v: unknown) => (typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : null);
  return {
    tokens_used: int(meta.tokens_used),
    model_calls: int(meta.iterations),
    llm_cost_usd: typeof meta.cost_usd === 'number' && Number.isFinite(meta.cost_usd) && meta.cost_usd >= 0 ? meta.cost_usd : null,
  };
}

/** Usage added up (a batch's items, a task and its children); a figure stays null while none reported it. */
export function addUsage(usages: UsageT[]): UsageT {
  const sum = (pick: (u: UsageT) => number | null) =>
    usages.reduce<number | null>((total, u) => (pick(u) === null ? total : (total ?? 0) + pick(u)!), null);
  const cost = sum((u) => u.llm_cost_usd);
  return { tokens_used: sum((u) => u.tokens_used), model_calls: sum((u) => u.model_calls), llm_cost_usd: cost === null ? null : Math.round(cost * 1e6) / 1e6 };
}
