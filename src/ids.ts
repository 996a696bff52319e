import { randomBytes } from 'node:crypto';

/** Prefixed, URL-safe, random ids: `agent_…`, `task_…`, `dispute_…`, `rating_…`. */
export const idPrefixes = ['agent', 'task', 'dispute', 'rating', 'req', 'pay', 'mov', 'xfer', 'sweep', 'sess', 'batch', 'feebatch'] as const;
export type IdPrefix = (typeof idPrefixes)[number];

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';

export function newId(prefix: IdPrefix): string {
  const bytes = randomBytes(20);
  let body = '';
  for (const b of bytes) body += ALPHABET[b % 36];
  return `${prefix}_${body}`;
}

export function idPattern(prefix: IdPrefix): RegExp {
  return new RegExp(`^${prefix}_[0-9a-z]{20}$`);
}
