import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { costOf } from '../../src/dispatcher/runtimes/hosted-llm.js';
import { defaultLlmPrices, llmPrices } from '../../src/dispatcher/runtimes/llm-prices.js';

describe('LLM price table', () => {
  it('prices unlisted models with the conservative "*" entry, so the cost cap binds', () => {
    const prices = llmPrices(undefined);
    expect(prices['*']).toEqual(defaultLlmPrices['*']);
    // 1M prompt + 1M completion tokens of an unknown model cost the "*" price
    expect(costOf({ prompt: 1_000_000, completion: 1_000_000 }, prices['some-new-model'] ?? prices['*'])).toBe(25);
  });

  it('takes overrides from LLM_PRICES and refuses a malformed one', () => {
    const prices = llmPrices('{"my-model":{"input_per_million_usd":1,"output_per_million_usd":2},"*":{"input_per_million_usd":9,"output_per_million_usd":9}}');
    expect(prices['my-model']).toEqual({ input_per_million_usd: 1, output_per_million_usd: 2 });
    expect(prices['*']!.input_per_million_usd).toBe(9);
    expect(prices['gpt-4o-mini']).toEqual(defaultLlmPrices['gpt-4o-mini']);
    expect(() => loadConfig({ LLM_PRICES: '{"x":{"input_per_million_usd":-1}}' })).toThrow(ConfigError);
    expect(() => loadConfig({ LLM_PRICES: 'not json' })).toThrow(/LLM_PRICES/);
  });
});
