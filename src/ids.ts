import { randomFillSync } from 'node:crypto';

/** Prefixed, URL-safe, random ids: `agent_…`, `task_…`, `dispute_…`, `rating_…`. */
export const idPrefixes = ['agent', 'task', 'dispute', 'rating', 'req', 'pay', 'mov', 'xfer', 'sweep', 'sess', 'batch', 'feebatch'] as const;
export type IdPrefix = (typeof idPrefixes)[number];

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';

/** Random bytes drawn in blocks (one CSPRNG call per 204 ids rather than per id: a request id each request). */
const pool = Buffer.alloc(4096);
let used = pool.length;

export function newId(prefix: IdPrefix): string {
  if (used + 20 > pool.length) {
    randomFillSync(pool);
    used = 0;
  }
  let body = '';
  for (let i = used; i < used + 20; i++) body += ALPHABET[pool[i]! % 36];
  used += 20;
  return `${prefix}_${body}`;
}

export function idPattern(prefix: IdPrefix): RegExp {
  return new RegExp(`^${prefix}_[0-9a-z]{20}$`);
}
