/** Ids (src/ids.ts): prefixed, 20 random base-36 characters, drawn from a pooled CSPRNG block. */
import { describe, expect, it } from 'vitest';
import { idPattern, newId } from '../src/ids.js';

describe('newId', () => {
  it('makes distinct well-formed ids across many refills of its random block', () => {
    const ids = Array.from({ length: 5_000 }, (_, i) => newId(i % 2 ? 'req' : 'pay'));
    expect(new Set(ids).size).toBe(ids.length);
    for (const [i, id] of ids.entries()) expect(id).toMatch(idPattern(i % 2 ? 'req' : 'pay'));
    // Every character of the alphabet shows up, at every position (no block reused, no fixed bytes).
    for (let pos = 0; pos < 20; pos++) expect(new Set(ids.map((id) => id.slice(4)[pos])).size).toBe(36);
  });
});
