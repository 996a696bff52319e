import { z } from 'zod';

/** A model's price, USD per million tokens (defined here, not in ./hosted-llm.ts, so that config.ts can import this file alone). */
export interface ModelPrice {
  input_per_million_usd: number;
  output_per_million_usd: number;
}

/**
 * USD per million tokens for hosted agents' models. The "*" entry prices any model not listed,
 * conservatively, so that the cost cap always binds. LLM_PRICES (JSON of the same shape) adds
 * or overrides entries.
 */
export const defaultLlmPrices: Record<string, ModelPrice> = {
  '*': { input_per_million_usd: 5, output_per_million_usd: 20 },
  'gpt-4o-mini': { input_per_million_usd: 0.15, output_per_million_usd: 0.6 },
  'gpt-4o': { input_per_million_usd: 2.5, output_per_million_usd: 10 },
  'gpt-4.1-mini': { input_per_million_usd: 0.4, output_per_million_usd: 1.6 },
  'gpt-4.1': { input_per_million_usd: 2, output_per_million_usd: 8 },
};

const PriceTable = z.record(
  z.string().min(1),
  z.object({ input_per_million_usd: z.number().nonnegative(), output_per_million_usd: z.number().nonnegative() }),
);

/** The price table in force: the defaults with LLM_PRICES (a JSON string) on top. */
export function llmPrices(json: string | undefined): Record<string, ModelPrice> {
  if (!json) return defaultLlmPrices;
  return { ...defaultLlmPrices, ...PriceTable.parse(JSON.parse(json)) };
}
